"""A GGUF from a Hugging Face causal LM folder, made by llama.cpp's own converter (`convert_hf_to_gguf.py`).

No wheel ships the converter: scripts/bootstrap.sh extracts it, with its `conversion/` package and its own
`gguf-py`, from the llama-cpp-python sdist the runtime was built from, into `<venv>/share/llama.cpp/`. It runs
in a subprocess of this interpreter with that folder on PYTHONPATH, so its newer `gguf` package shadows the
installed one only there, and a crash or an out-of-memory kill in it cannot take the pipeline down.

The output is written under a temporary name and renamed on success: a converter that dies mid-write leaves
a partial GGUF behind.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeopt import progress
from edgeopt.io.atomic import atomic_file
from edgeopt.lineage import sha256_file

log = logging.getLogger(__name__)

SCRIPT = "convert_hf_to_gguf.py"
BOOTSTRAP = "bash scripts/bootstrap.sh"
OUTTYPES = ("f32", "bf16", "f16")  # the converter's lossless-to-16-bit float outputs (it also has q8_0, tq*)
TIMEOUT_S = 3600.0
STAGE = "hf->gguf"  # its progress bar
_LOG_PREFIX = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.-]+:\s*")
_NOISE = re.compile(r"^(?:Traceback |File \"|\s*[~^]+\s*$|Writing:|\s*\d+%\|)")


class ConversionError(Exception):
    """The converter cannot make a GGUF of this folder; the message is one line.

    transient: the cause may not repeat (a timeout, a kill by a signal), so the failure is not cached.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def converter_dir() -> Path:
    """Where scripts/bootstrap.sh puts llama.cpp's converter: inside the running environment."""
    return Path(sys.prefix) / "share" / "llama.cpp"


def converter_provenance() -> dict[str, Any]:
    """Which converter runs: its llama-cpp-python release, its gguf-py version and the script's hash.

    Raises ConversionError naming the bootstrap script when it is not installed.
    """
    root = converter_dir()
    script = root / SCRIPT
    missing = [p for p in (script, root / "conversion", root / "gguf-py" / "gguf") if not p.exists()]
    if missing:
        raise ConversionError(f"llama.cpp's HF->GGUF converter is not installed ({missing[0]} is missing); "
                              f"run `{BOOTSTRAP}`")
    try:
        llama_version: str | None = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        llama_version = None
    pyproject = root / "gguf-py" / "pyproject.toml"
    match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
    return {
        "converter": f"llama.cpp {SCRIPT}",
        # bootstrap.sh extracts it from the sdist of the locked llama-cpp-python, the one the runtime is built from.
        "llama_cpp_python": llama_version,
        "gguf_py": match.group(1) if match else None,
        "script_sha256": sha256_file(script),
    }


def _safetensors_dtypes(path: Path) -> dict[str, int]:
    """dtype -> number of matrices (tensors of 2 or more dimensions), from a safetensors header alone."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(size))
    counts: dict[str, int] = {}
    for name, entry in header.items():
        if name != "__metadata__" and len(entry.get("shape", ())) >= 2:
            counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + 1
    return counts


def checkpoint_outtype(hf_dir: Path) -> str:
    """The outtype that keeps the checkpoint's numbers exactly: f32 for FP32 weights, bf16 or f16 for 16-bit ones.

    The GGUF is the quantizer's input, so it should round nothing; a mixed checkpoint gets its widest type.
    """
    counts: dict[str, int] = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        for dtype, n in _safetensors_dtypes(f).items():
            counts[dtype] = counts.get(dtype, 0) + n
    floats = set(counts) & {"F64", "F32", "BF16", "F16"}
    # Neither 16-bit type holds the other's values: BF16 and F16 together need F32 too.
    if floats & {"F64", "F32"} or {"BF16", "F16"} <= floats:
        return "f32"
    if "BF16" in floats:
        return "bf16"
    return "f16"  # F16 weights, or none in a float type (e.g. FP8): llama.cpp's usual 16-bit form


def meaningful_line(output: str) -> str:
    """The converter's last line that says something: its error, or a traceback's exception line."""
    lines = [_LOG_PREFIX.sub("", part).strip() for line in output.splitlines() for part in line.split("\r")]
    lines = [ln for ln in lines if ln and not _NOISE.match(ln)]
    return lines[-1][:300] if lines else "no output"


def convert_hf_to_gguf(hf_dir: Path, dst: Path, outtype: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Run llama.cpp's converter on hf_dir, writing dst as outtype; return the lineage of the conversion.

    Raises ConversionError (one line: the converter's own last meaningful line) when it fails; dst then does
    not exist.
    """
    from edgeopt.workloads.causal_lm.gguf_reference import tensor_type_histogram

    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    provenance = converter_provenance()
    root = converter_dir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(root / "gguf-py"), str(root),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    # Minutes for a multi-billion-parameter model: say so before, and what it wrote after (log and CLI bar).
    log.info("converting %s to GGUF (%s) with %s (llama-cpp-python %s)", hf_dir, outtype, SCRIPT,
             provenance["llama_cpp_python"])
    progress.report(STAGE, 0, 1, f"{hf_dir.name} -> {outtype}")
    start = time.perf_counter()
    with atomic_file(dst) as tmp:
        cmd = [sys.executable, str(root / SCRIPT), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
        try:
            meta = _run(cmd, env, tmp, timeout_s)
        except ConversionError as err:
            log.warning("GGUF conversion of %s failed: %s", hf_dir, err)
            progress.report(STAGE, 1, 1, "failed")
            raise
    seconds = time.perf_counter() - start
    size = dst.stat().st_size
    log.info("converted %s to %s: %.1f MB in %.1f s", hf_dir.name, dst.name, size / 1e6, seconds)
    progress.report(STAGE, 1, 1, f"{dst.name} {size / 1e6:.0f} MB in {seconds:.0f} s")
    return {
        **provenance,
        "outtype": outtype,
        "architecture": meta.get("general.architecture"),
        "file_type": _file_type_name(meta.get("general.file_type")),
        "tensor_types": tensor_type_histogram(dst),
        "size_bytes": size,
        "seconds": round(seconds, 2),
    }


def _run(cmd: list[str], env: dict[str, str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Run the converter writing `out`; its architecture and file type, or ConversionError with the reason."""
    from edgeopt.workloads.causal_lm.gguf_reference import gguf_metadata

    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{SCRIPT} did not finish within {timeout_s:.0f} s", transient=True) from None
    if proc.returncode < 0:  # its last line is some tensor's progress, not a reason
        raise ConversionError(f"{SCRIPT} was killed by signal {-proc.returncode} (out of memory?)", transient=True)
    if proc.returncode != 0 or not out.is_file():
        why = meaningful_line(proc.stderr + "\n" + proc.stdout)
        raise ConversionError(f"{SCRIPT} failed (exit {proc.returncode}): {why}")
    try:
        return gguf_metadata(out, ("general.architecture", "general.file_type"))
    except Exception as err:  # its output must be a GGUF the installed reader (and llama.cpp) can open
        raise ConversionError(f"{SCRIPT} wrote an unreadable GGUF: {err}") from None


def _file_type_name(value: Any) -> str | None:
    import gguf

    if value is None:
        return None
    try:
        return gguf.LlamaFileType(int(value)).name
    except ValueError:
        return str(value)
