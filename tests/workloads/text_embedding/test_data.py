"""Evaluation data: built from real pydoc topics and real user JSONL files, no mocks of the text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeopt.errors import UserError
from edgeopt.workloads.text_embedding import JsonlData, PydocTopicsData, data


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, data.EvalDataSummary]:
    out = tmp_path_factory.mktemp("pydoc") / "eval"
    return out, data.build_eval_data(PydocTopicsData(), out)


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_pydoc_summary_matches_files(built: tuple[Path, data.EvalDataSummary]) -> None:
    out, summary = built
    assert sorted(p.name for p in out.iterdir()) == sorted(summary.files)
    pairs, sentences, calibration = (
        data.load_retrieval(out),
        data.load_sentences(out),
        data.load_calibration(out),
    )
    assert (summary.n_pairs, summary.n_sentences, summary.n_calibration) == (
        len(pairs),
        len(sentences),
        len(calibration),
    )
    assert 200 <= summary.n_pairs <= 300  # max_pairs defaults to 300; pydoc gives ~250
    assert summary.n_sentences == 256
    assert summary.n_calibration == data.N_CALIBRATION
    assert data.digest(out) == summary.sha256
    assert len({p.id for p in pairs}) == len(pairs)
    assert _siblings(out) == []  # no temp folder left behind


def test_pydoc_pairs_are_real_retrieval_pairs(built: tuple[Path, data.EvalDataSummary]) -> None:
    out, _ = built
    pairs = data.load_retrieval(out)
    for p in pairs:
        assert p.query and p.document
        assert p.query not in p.document, p.id
        assert len(p.document.split()) >= data.MIN_DOCUMENT_WORDS
        assert len(p.document) <= data.MAX_DOCUMENT_CHARS
    assert len({p.query for p in pairs}) == len(pairs)
    assert len({p.document for p in pairs}) == len(pairs)


def test_samples_are_disjoint_and_varied(built: tuple[Path, data.EvalDataSummary]) -> None:
    out, _ = built
    pairs = data.load_retrieval(out)
    sentences = data.load_sentences(out)
    calibration = data.load_calibration(out)
    queries = {p.query for p in pairs}
    assert len(set(sentences)) == len(sentences)
    assert not queries & set(sentences)
    assert not set(calibration) & set(sentences)
    assert not set(calibration) & queries
    documents = "\n".join(p.document for p in pairs)
    assert not [c for c in calibration if c in documents]  # calibration never sees evaluation text
    lengths = sorted(len(s) for s in sentences)
    assert lengths[0] < 50 and lengths[-1] > 150  # varied lengths, not one bucket


def test_pydoc_is_deterministic_and_seeded(built: tuple[Path, data.EvalDataSummary], tmp_path: Path) -> None:
    _, summary = built
    again = data.build_eval_data(PydocTopicsData(), tmp_path / "again")
    assert again.sha256 == summary.sha256
    other = data.build_eval_data(PydocTopicsData(seed=1), tmp_path / "other")
    assert other.sha256 != summary.sha256


def test_limits_are_respected_and_rebuild_replaces(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    first = data.build_eval_data(PydocTopicsData(max_pairs=300), out)
    small = data.build_eval_data(PydocTopicsData(max_pairs=20, fidelity_sentences=16), out)
    assert (small.n_pairs, small.n_sentences) == (20, 16)
    assert len(data.load_retrieval(out)) == 20
    assert small.sha256 != first.sha256 and data.digest(out) == small.sha256
    assert _siblings(out) == []


# -- user JSONL ----------------------------------------------------------------------------


def _user_rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"q{i}",
            "query": f"How do I configure widget number {i}?",
            "document": (
                f"Widget {i} is configured through its settings panel. "
                f"Open the panel and choose option {i} from the list of presets. "
                f"The change takes effect after widget {i} restarts, which takes {i + 2} seconds."
            ),
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[object] | None = None, text: str | None = None) -> Path:
    if text is None:
        text = "".join(json.dumps(r) + "\n" for r in rows or [])
    path.write_text(text, encoding="utf-8")
    return path


def test_user_jsonl_builds(tmp_path: Path) -> None:
    rows = _user_rows(14)
    del rows[3]["id"]  # ids are optional
    src = _write(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "eval"
    summary = data.build_eval_data(JsonlData(kind="jsonl", path=src, max_pairs=12), out)
    pairs = data.load_retrieval(out)
    assert summary.n_pairs == len(pairs) == 12
    assert len({p.id for p in pairs}) == 12
    sentences, calibration = data.load_sentences(out), data.load_calibration(out)
    assert len(sentences) >= 8 and len(calibration) >= 8
    assert not set(sentences) & set(calibration)
    assert not {p.query for p in pairs} & (set(sentences) | set(calibration))
    again = data.build_eval_data(JsonlData(kind="jsonl", path=src, max_pairs=12), tmp_path / "again")
    assert again.sha256 == summary.sha256


BAD_FILES = {
    "malformed": (None, '{"query": "a", "document": "b"}\n{"query": "a", "document": "b"\n', ":2: malformed JSON"),
    "missing_query": ([{"document": "only a document"}], None, ':1: missing field "query"'),
    "empty_document": (
        [{"query": "q", "document": "d"}, {"query": "q2", "document": "   "}],
        None,
        ':2: field "document" is empty',
    ),
    "not_a_string": ([{"query": ["q"], "document": "d"}], None, ':1: field "query" must be a string'),
    "not_an_object": (None, "[1, 2]\n", ":1: expected a JSON object"),
    "empty_file": (None, "", "the file is empty"),
    "duplicate_id": (
        [{"id": "a", "query": "q", "document": "d"}, {"id": "a", "query": "q", "document": "d"}],
        None,
        ":2: duplicate id 'a' (first on line 1)",
    ),
    "too_few": (_user_rows(5), None, "only 5 pairs; at least 10 are needed"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_user_jsonl_errors_name_file_and_line(case: str, tmp_path: Path) -> None:
    rows, text, expected = BAD_FILES[case]
    src = _write(tmp_path / "pairs.jsonl", rows, text)
    out = tmp_path / "eval"
    with pytest.raises(UserError) as err:
        data.build_eval_data(JsonlData(kind="jsonl", path=src), out)
    message = str(err.value)
    assert "\n" not in message
    assert str(src) in message and expected in message, message
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.jsonl: data file not found"):
        data.build_eval_data(JsonlData(kind="jsonl", path=tmp_path / "nope.jsonl"), tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_failed_build_leaves_previous_output_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    good = data.build_eval_data(PydocTopicsData(max_pairs=20, fidelity_sentences=16), out)
    bad = _write(tmp_path / "bad.jsonl", text='{"query": "q", "document": "d"}\nnot json\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2:"):
        data.build_eval_data(JsonlData(kind="jsonl", path=bad), out)
    assert data.digest(out) == good.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "eval"]


def test_crash_while_writing_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "eval"
    real_write = data.write_jsonl

    def write_then_crash(path: Path, rows: object) -> None:
        real_write(path, rows)  # type: ignore[arg-type]
        if path.name == data.SENTENCES_FILE:
            raise OSError("disk full")

    monkeypatch.setattr(data, "write_jsonl", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        data.build_eval_data(PydocTopicsData(max_pairs=20, fidelity_sentences=16), out)
    assert list(tmp_path.iterdir()) == []


def test_readers_on_missing_folder(tmp_path: Path) -> None:
    for reader in (data.load_retrieval, data.load_sentences, data.load_calibration, data.digest):
        with pytest.raises(UserError, match=r"not found|missing"):
            reader(tmp_path / "absent")
