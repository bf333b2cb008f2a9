"""Bad onnx-model input through the real CLI: one line on stderr, exit code 2, nothing written. An npz without an
input, with a wrong dtype or shape; synthetic feeds without a size for a symbolic dimension or a range; a file
that is not ONNX; argmax agreement asked of a detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from tests.workloads.onnx_model.om_helpers import SEQ, VOCAB, mixed_model, mixed_synthetic, nudenet_model, pipeline

runner = CliRunner()


def _run(tmp: Path, model: Path, data: dict[str, Any], **changes: Any) -> str:
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(pipeline(tmp, model, data, **changes), sort_keys=False))
    result = runner.invoke(app, ["run", "--params", str(params)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert not (tmp / "outputs").exists() and not (tmp / "mlflow.db").exists()
    return lines[0]


def _feeds(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"features": rng.normal(size=(n, 8)).astype(np.float32), "token_ids": rng.integers(0, VOCAB, (n, SEQ)),
            "mask": np.ones((n, SEQ), dtype=bool)}


@pytest.mark.parametrize(("change", "needle"), [
    (lambda a: {k: v for k, v in a.items() if k != "token_ids"}, "data.path: no array for input(s) token_ids"),
    (lambda a: {**a, "token_ids": a["token_ids"].astype(np.float64)}, "token_ids is float64, the model takes int64"),
    (lambda a: {**a, "features": a["features"][:, :3]}, "size 3 on axis 1, expected 8"),
])
def test_bad_npz_feeds(tmp_path: Path, change: Any, needle: str) -> None:
    model = mixed_model(tmp_path / "model" / "mixed.onnx")
    np.savez(tmp_path / "feeds.npz", **change(_feeds()))
    message = _run(tmp_path, model, {"kind": "npz", "path": str(tmp_path / "feeds.npz")})
    assert needle in message


def test_an_unreadable_npz(tmp_path: Path) -> None:
    model = mixed_model(tmp_path / "model" / "mixed.onnx")
    (tmp_path / "feeds.npz").write_text("not a zip archive")
    assert "cannot read" in _run(tmp_path, model, {"kind": "npz", "path": str(tmp_path / "feeds.npz")})


def test_synthetic_feeds_without_sizes_or_ranges(tmp_path: Path) -> None:
    message = _run(tmp_path, nudenet_model(), {"kind": "synthetic", "dims": {"batch": 1, "height": 320},
                                               "ranges": {"images": [0, 1]}})
    assert "data.dims" in message and "'width' without a size" in message
    model = mixed_model(tmp_path / "model" / "mixed.onnx")
    message = _run(tmp_path, model, mixed_synthetic(ranges={"features": [-1, 1]}))
    assert "no value range for input token_ids" in message


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"\x00\x01 this is not a protobuf graph")
    message = _run(tmp_path, fake, mixed_synthetic())
    assert "model.onnx" in message and ("ONNX" in message or "onnx" in message)


def test_argmax_agreement_needs_class_scores(tmp_path: Path) -> None:
    data = {"kind": "synthetic", "dims": {"batch": 1, "height": 64, "width": 64}, "ranges": {"images": [0, 1]}}
    message = _run(tmp_path, nudenet_model(), data,
                   selection={"baseline": "onnx-fp32", "quality_metrics": ["min_argmax_agreement"]})
    assert "min_argmax_agreement needs an output that looks like class scores" in message
