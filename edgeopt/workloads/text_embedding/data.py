"""Evaluation data: retrieval pairs, a fidelity sentence sample and a disjoint calibration sample.

`build_eval_data` writes three JSON Lines files into one folder, atomically:

- `retrieval.jsonl`:   {"id", "query", "document"} pairs for recall@k / MRR;
- `sentences.jsonl`:   {"text"}: sentences of varied length for embedding fidelity (cosine vs baseline);
- `calibration.jsonl`: {"text"}: sentences for static-quantization calibration, disjoint from the
  evaluation text so a quantizer never calibrates on what it is then scored on.

Two sources:

- `pydoc-topics`: CPython's own `pydoc_data.topics` (offline, versioned with the interpreter). Each topic
  is cut into units (its headed sections, and the signature entries inside a section such as
  `str.capitalize()`). A unit's first prose sentence is the query and the rest of the unit is the
  document, so the query never appears verbatim in its document. Calibration sentences come from
  units held out before any evaluation text is chosen, so they are not part of any document.
- `jsonl`: the user's pairs; fidelity and calibration sentences are split out of their documents
  (disjoint from each other and from the queries; the user's file is all the text there is).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_dir
from edgeopt.io.jsonl import read_jsonl, write_jsonl
from edgeopt.results import EvalDataSummary
from edgeopt.workloads.text_embedding import JsonlData, PydocTopicsData

RETRIEVAL_FILE = "retrieval.jsonl"
SENTENCES_FILE = "sentences.jsonl"
CALIBRATION_FILE = "calibration.jsonl"
FILES = (RETRIEVAL_FILE, SENTENCES_FILE, CALIBRATION_FILE)  # the digest's (stable) order

MIN_PAIRS = 10
N_CALIBRATION = 128
MIN_SENTENCES = 8  # per sample; validation checks the same floor

MAX_DOCUMENT_CHARS = 2000  # embedding models truncate far earlier (128-512 tokens)
MIN_DOCUMENT_WORDS = 15
MIN_QUERY_WORDS = 4
MAX_QUERY_CHARS = 300
SENTENCE_WORDS = (4, 60)
SENTENCE_CHARS = (20, 400)
LENGTH_BINS = 4


class Pair(NamedTuple):
    id: str
    query: str
    document: str


# -- text helpers --------------------------------------------------------------------------

_WS = re.compile(r"\s+")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) before a capital or an opener.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)\]]?\s+(?=[\"“‘(*A-Z])")
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}\s*$")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences (whitespace-normalized); good enough for documentation text."""
    text = _norm(text)
    if not text:
        return []
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.start() + (len(m.group(0)) - len(m.group(0).lstrip('"”’)]')))
        out.append(text[start:end].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _is_sentence(s: str) -> bool:
    """A self-contained prose sentence: not code, grammar, a list fragment or a one-word line."""
    words = s.split()
    if not (SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1]):
        return False
    if not (SENTENCE_CHARS[0] <= len(s) <= SENTENCE_CHARS[1]):
        return False
    if not (s[0].isupper() or (s[0] in '"“*' and len(s) > 1 and s[1].isalpha())) or s[-1] not in ".!?":
        return False
    if "::=" in s or ">>>" in s or "..." in s[:-3]:
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters / len(s) >= 0.8


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if end >= limit // 2:
        return cut[: end + 1]
    return cut[: cut.rfind(" ")].rstrip() if " " in cut else cut


# -- pydoc topics --------------------------------------------------------------------------


class _Unit(NamedTuple):
    key: str  # topic / heading path, for the pair id
    text: str  # raw text (indentation kept, so prose can be told from code)


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """Cut a topic at its reST-style underlined headings: [(heading, body lines)]."""
    lines = text.splitlines()
    out: list[tuple[str, list[str]]] = []
    head, body = "", []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(nxt) and len(nxt.rstrip()) == len(line.rstrip()):
            if body or head:
                out.append((head, body))
            head, body = line.strip(), []
            i += 2
            continue
        if not _UNDERLINE.match(line):  # drop bare horizontal rules
            body.append(line)
        i += 1
    if body or head:
        out.append((head, body))
    return out


def _is_entry_header(lines: list[str], i: int) -> bool:
    """A one-line, unindented signature (`str.split(sep=None)`, `object.__len__(self)`, `r(eturn)`)
    followed by a blank line and an indented description."""
    line = lines[i]
    if not line or line[0].isspace() or line.rstrip().endswith((":", ".")) or len(line) > 120:
        return False
    if i > 0 and lines[i - 1].strip():
        return False
    return i + 2 < len(lines) and not lines[i + 1].strip() and lines[i + 2].startswith("   ")


def _units(topic: str, text: str) -> list[_Unit]:
    units: list[_Unit] = []
    for head, body in _sections(text):
        base = f"{topic}/{head}" if head else topic
        cur_key, cur = base, []
        for i, line in enumerate(body):
            if _is_entry_header(body, i):
                units.append(_Unit(cur_key, "\n".join(cur)))
                cur_key, cur = f"{base}/{line.strip()}", []
                continue
            cur.append(line)
        units.append(_Unit(cur_key, "\n".join(cur)))
    return [u for u in units if u.text.strip()]


def _chunks(unit: _Unit) -> list[_Unit]:
    """Cut a long unit at paragraph boundaries into pieces of about MAX_DOCUMENT_CHARS, each
    starting with a prose paragraph, so the tail of a long section still makes pairs."""
    text = textwrap.dedent(unit.text).strip("\n")
    if len(_norm(text)) <= MAX_DOCUMENT_CHARS * 1.5:
        return [unit]
    paras = re.split(r"\n\s*\n", text)
    out: list[list[str]] = [[]]
    size = 0
    for para in paras:
        starts_prose = bool(para) and not para[0].isspace() and para[0].isupper()
        if size >= MAX_DOCUMENT_CHARS and starts_prose:
            out.append([])
            size = 0
        out[-1].append(para)
        size += len(_norm(para))
    return [_Unit(unit.key if i == 0 else f"{unit.key}#{i + 1}", "\n\n".join(chunk)) for i, chunk in enumerate(out)]


def _prose_sentences(raw: str, colon: bool = False) -> list[str]:
    """Sentences from the paragraphs at the unit's base indentation (deeper ones are code/quotes)."""
    text = textwrap.dedent(raw).strip("\n")
    out = []
    for para in re.split(r"\n\s*\n", text):
        if not para.strip() or para[0].isspace():
            continue
        for s in split_sentences(para):
            if _is_sentence(s) or (colon and s.endswith(":") and _is_sentence(s[:-1] + ".")):
                out.append(s)
    return out


def _unit_pair(unit: _Unit) -> tuple[str, str] | None:
    """(query, document) from a unit, or None if it is too short to make a pair."""
    prose = _prose_sentences(unit.text, colon=True)  # "... for a group of statements:" is a fine query
    if not prose:
        return None
    query = prose[0]
    if len(query.split()) < MIN_QUERY_WORDS or len(query) > MAX_QUERY_CHARS:
        return None
    body = _norm(unit.text)
    document = _norm(body.replace(query, " ", 1))
    document = _truncate(document, MAX_DOCUMENT_CHARS)
    if len(document.split()) < MIN_DOCUMENT_WORDS or query in document:
        return None
    return query, document


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:80]


def _pydoc_units() -> list[_Unit]:
    from pydoc_data.topics import topics

    units, seen = [], set()
    for name in sorted(topics):
        for unit in (c for u in _units(name, topics[name]) for c in _chunks(u)):
            fingerprint = _norm(unit.text)
            if fingerprint in seen:  # topics overlap (`if` and `else`, `compound` and `for`, ...)
                continue
            seen.add(fingerprint)
            units.append(unit)
    return units


def _build_pydoc(source: PydocTopicsData) -> tuple[list[Pair], list[str], list[str]]:
    rng = random.Random(source.seed)
    units = _pydoc_units()
    rng.shuffle(units)

    # Hold out whole units for calibration before choosing any evaluation text.
    calib_pool: list[str] = []
    rest: list[_Unit] = []
    seen_calib: set[str] = set()
    for unit in units:
        if len(calib_pool) < N_CALIBRATION * 3 // 2:
            for s in _prose_sentences(unit.text):
                if s not in seen_calib:
                    seen_calib.add(s)
                    calib_pool.append(s)
        else:
            rest.append(unit)

    pairs: list[Pair] = []
    seen_queries: set[str] = set()
    seen_documents: set[str] = set()
    ids: set[str] = set()
    for unit in rest:
        if len(pairs) >= source.max_pairs:
            break
        made = _unit_pair(unit)
        if made is None or made[0] in seen_queries or made[1] in seen_documents:
            continue  # a repeated document (str.ljust / str.rjust) would make recall ambiguous
        query, document = made
        pid = base = f"pydoc-{_slug(unit.key)}"
        n = 2
        while pid in ids:
            pid, n = f"{base}-{n}", n + 1
        ids.add(pid)
        seen_queries.add(query)
        seen_documents.add(document)
        pairs.append(Pair(pid, query, document))

    # Fidelity sentences from the non-held-out units (not the queries).
    candidates = [s for unit in rest for s in _prose_sentences(unit.text) if s not in seen_queries]
    sentences = _varied_sample(_unique(candidates), source.fidelity_sentences, rng)

    # Calibration: never a query, a fidelity sentence or any text inside a retrieval document.
    eval_text = "\n".join(p.document for p in pairs)
    taken = seen_queries | set(sentences)
    calib_candidates = [s for s in calib_pool if s not in taken and s not in eval_text]
    calibration = _varied_sample(calib_candidates, N_CALIBRATION, rng)
    return pairs, sentences, calibration


# -- user JSONL ----------------------------------------------------------------------------


def _read_user_pairs(path: Path) -> list[Pair]:
    if not path.exists():
        raise UserError(f"{path}: data file not found")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"{path}: the file is empty; expected one JSON object per line")
    pairs: list[Pair] = []
    id_lines: dict[str, int] = {}
    for lineno, bline in enumerate(raw.splitlines(), start=1):
        try:
            line = bline.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}:{lineno}: not UTF-8 text") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise UserError(
                f'{path}:{lineno}: expected a JSON object with "query" and "document", got {type(obj).__name__}'
            )
        values = {}
        for field in ("query", "document"):
            if field not in obj or obj[field] is None:
                raise UserError(f'{path}:{lineno}: missing field "{field}"')
            if not isinstance(obj[field], str):
                raise UserError(f'{path}:{lineno}: field "{field}" must be a string')
            if not obj[field].strip():
                raise UserError(f'{path}:{lineno}: field "{field}" is empty')
            values[field] = obj[field].strip()
        pid = obj.get("id")
        if pid is None:
            pid = f"line-{lineno}"
        elif isinstance(pid, bool) or not isinstance(pid, str | int) or not str(pid).strip():
            raise UserError(f'{path}:{lineno}: field "id" must be a non-empty string or integer')
        pid = str(pid).strip()
        if pid in id_lines:
            raise UserError(f"{path}:{lineno}: duplicate id {pid!r} (first on line {id_lines[pid]})")
        id_lines[pid] = lineno
        pairs.append(Pair(pid, values["query"], values["document"]))
    if not pairs:
        raise UserError(f"{path}: no pairs (only blank lines)")
    if len(pairs) < MIN_PAIRS:
        raise UserError(f"{path}: only {len(pairs)} pairs; at least {MIN_PAIRS} are needed")
    return pairs


def _build_jsonl(source: JsonlData) -> tuple[list[Pair], list[str], list[str]]:
    path = Path(source.path)
    pairs = _read_user_pairs(path)
    rng = random.Random(source.seed)
    if len(pairs) > source.max_pairs:
        keep = sorted(rng.sample(range(len(pairs)), source.max_pairs))
        pairs = [pairs[i] for i in keep]
    queries = {_norm(p.query) for p in pairs}
    pool = [
        s
        for s in _unique(s for p in pairs for s in split_sentences(p.document))
        if s not in queries and SENTENCE_CHARS[0] <= len(s) <= SENTENCE_CHARS[1] * 2
    ]
    if len(pool) < 2 * MIN_SENTENCES:
        raise UserError(
            f"{path}: the documents yield only {len(pool)} usable sentences; at least "
            f"{2 * MIN_SENTENCES} are needed for the fidelity and calibration samples"
        )
    # Calibration gets a third of the pool at most, so fidelity keeps the larger share.
    n_cal = min(N_CALIBRATION, max(MIN_SENTENCES, len(pool) // 3))
    n_fid = min(source.fidelity_sentences, len(pool) - n_cal)
    sentences = _varied_sample(pool, n_fid, rng)
    chosen = set(sentences)
    calibration = _varied_sample([s for s in pool if s not in chosen], n_cal, rng)
    return pairs, sentences, calibration


# -- sampling ------------------------------------------------------------------------------


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _varied_sample(pool: list[str], n: int, rng: random.Random) -> list[str]:
    """Up to n items with lengths spread evenly over the pool's length quartiles."""
    if n <= 0 or not pool:
        return []
    ordered = sorted(pool, key=lambda s: (len(s), s))
    size = -(-len(ordered) // LENGTH_BINS)
    bins = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    for b in bins:
        rng.shuffle(b)
    out: list[str] = []
    while len(out) < n and any(bins):
        for b in bins:
            if b and len(out) < n:
                out.append(b.pop())
    rng.shuffle(out)
    return out


# -- writing and reading -------------------------------------------------------------------


def _digest_files(folder: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        data = (folder / name).read_bytes()
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def digest(out_dir: Path) -> str:
    """sha256 over the three files' names and contents, in a fixed order (as in the summary)."""
    out_dir = Path(out_dir)
    missing = [n for n in FILES if not (out_dir / n).is_file()]
    if missing:
        raise UserError(f"{out_dir}: evaluation data incomplete, missing {', '.join(missing)}")
    return _digest_files(out_dir)


def build_eval_data(source: PydocTopicsData | JsonlData, out_dir: Path) -> EvalDataSummary:
    """Build the retrieval evaluation data folder from `source`; raises UserError on bad user data."""
    out_dir = Path(out_dir)
    if isinstance(source, PydocTopicsData):
        pairs, sentences, calibration = _build_pydoc(source)
        origin = f"pydoc_data.topics (CPython {sys.version.split()[0]})"
    else:
        pairs, sentences, calibration = _build_jsonl(source)
        origin = str(source.path)
    if len(pairs) < MIN_PAIRS:
        raise UserError(f"{origin}: only {len(pairs)} retrieval pairs could be made")

    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / RETRIEVAL_FILE, (p._asdict() for p in pairs))
        write_jsonl(tmp / SENTENCES_FILE, ({"text": s} for s in sentences))
        write_jsonl(tmp / CALIBRATION_FILE, ({"text": s} for s in calibration))
        sha = _digest_files(tmp)
    return EvalDataSummary(
        kind=source.kind,
        source=origin,
        seed=source.seed,
        n_pairs=len(pairs),
        n_sentences=len(sentences),
        n_calibration=len(calibration),
        files=list(FILES),
        sha256=sha,
    )


def _field(row: dict, name: str, path: Path, i: int) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise UserError(f'{path}: row {i}: field "{name}" missing or not a string')
    return value


def load_retrieval(out_dir: Path) -> list[Pair]:
    path = Path(out_dir) / RETRIEVAL_FILE
    return [
        Pair(str(r.get("id", i)), _field(r, "query", path, i), _field(r, "document", path, i))
        for i, r in enumerate(read_jsonl(path), start=1)
    ]


def load_sentences(out_dir: Path) -> list[str]:
    path = Path(out_dir) / SENTENCES_FILE
    return [_field(r, "text", path, i) for i, r in enumerate(read_jsonl(path), start=1)]


def load_calibration(out_dir: Path) -> list[str]:
    path = Path(out_dir) / CALIBRATION_FILE
    return [_field(r, "text", path, i) for i, r in enumerate(read_jsonl(path), start=1)]
