"""The CLI: a user's mistake is one line on stderr and exit code 2, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _params(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    raw["pipelines"]["minilm"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_schema_dumps_json() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "Params"


def test_check_params_accepts_the_shipped_file() -> None:
    result = runner.invoke(app, ["check-params", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0 and "valid" in result.stdout


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"gates": {"min_sped": 3}}, "pipelines.minilm.gates.min_sped"),
        ({"benchmark": {"threads": "many"}}, "pipelines.minilm.benchmark.threads"),
    ],
)
def test_bad_params_are_one_line(tmp_path: Path, changes: dict, needle: str) -> None:
    _one_line_error(runner.invoke(app, ["run", "--params", str(_params(tmp_path, **changes))]), needle)
    assert not (tmp_path / "outputs").exists()


def test_missing_model_path_stops_before_any_work(tmp_path: Path) -> None:
    params = _params(tmp_path, model={"kind": "hf", "path": "no/such/folder"})
    _one_line_error(runner.invoke(app, ["run", "--params", str(params)]), "model.path: not found")
    assert not (tmp_path / "outputs").exists()


def test_unknown_pipeline_and_missing_results(tmp_path: Path) -> None:
    params = _params(tmp_path)
    _one_line_error(runner.invoke(app, ["run", "--params", str(params), "--pipeline", "bert"]),
                    "unknown pipeline 'bert'")
    _one_line_error(runner.invoke(app, ["results", "--params", str(params)]), "run the select stage first")


def test_unwritable_output_folder(tmp_path: Path) -> None:
    # A regular file where a folder should be: unwritable even for root (CI runs as root).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(blocker / "outputs")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    _one_line_error(runner.invoke(app, ["run", "--params", str(params)]), "output folder is not writable")


def test_candidates_list_shows_what_applies_to_each_model_and_builds_nothing(tmp_path: Path) -> None:
    params = _params(tmp_path)
    result = runner.invoke(app, ["candidates", "--list", "--params", str(params)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in ("minilm: text-embedding", "smollm2: causal-lm", "effnet: image-classification"):
        assert title in out
    # One line per recipe per pipeline: the encoder gets the BERT fusion, the classifier is told why not.
    assert out.count("ort-transformer-optimize") == len(yaml.safe_load(params.read_text())["pipelines"])
    assert "knows only text-embedding" in out and "makes generation models" in out
    assert not (tmp_path / "outputs").exists()
    result = runner.invoke(app, ["candidates", "--list", "--params", str(params), "--pipeline", "nope"])
    _one_line_error(result, "unknown pipeline 'nope'")
