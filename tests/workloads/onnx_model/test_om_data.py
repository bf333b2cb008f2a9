"""onnx-model feeds: synthesis is seeded, disjoint and keeps every dtype; a user's npz is split into samples and
checked against the graph; the data folder round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.iospec import IOSpec, TensorSpec
from edgeopt.recipes import BaseModelInfo
from edgeopt.workloads.onnx_model import NpzFeeds
from edgeopt.workloads.onnx_model.data import (
    as_samples,
    graph_spec,
    load_data,
    sample_hashes,
    split_calibration,
    synthesize,
)
from edgeopt.workloads.onnx_model.workload import WORKLOAD
from tests.workloads.onnx_model.om_helpers import SEQ, VOCAB, nudenet_model

RANGES = {"features": (-1.0, 1.0), "token_ids": (0.0, VOCAB - 1.0), "mask": (0.0, 1.0)}
DIMS = {"batch": 1, "seq": SEQ}


def test_the_graph_spec(mixed_onnx: Path) -> None:
    spec = graph_spec(mixed_onnx)
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [
        ("features", "float32", ("batch", 8)), ("token_ids", "int64", ("batch", "seq")),
        ("mask", "bool", ("batch", "seq"))]
    assert spec.output_names == ("logits", "count")
    detector = graph_spec(nudenet_model())
    assert detector.inputs == (TensorSpec("images", "float32", ("batch", 3, "height", "width")),)


def test_synthesis_is_seeded_disjoint_and_keeps_dtypes(mixed_onnx: Path) -> None:
    spec = graph_spec(mixed_onnx)
    ev, cal = synthesize(spec, DIMS, RANGES, 16, 8, seed=5)
    again_ev, again_cal = synthesize(spec, DIMS, RANGES, 16, 8, seed=5)
    other_ev, _ = synthesize(spec, DIMS, RANGES, 16, 8, seed=6)
    for name in spec.input_names:
        assert np.array_equal(ev[name], again_ev[name]) and np.array_equal(cal[name], again_cal[name])
    assert not np.array_equal(ev["features"], other_ev["features"])
    assert {k: (v.dtype.name, v.shape) for k, v in ev.items()} == {
        "features": ("float32", (16, 1, 8)), "token_ids": ("int64", (16, 1, SEQ)), "mask": ("bool", (16, 1, SEQ))}
    ids = np.concatenate([ev["token_ids"].ravel(), cal["token_ids"].ravel()])
    assert ids.min() >= 0 and ids.max() <= VOCAB - 1 and len(np.unique(ids)) > 10  # integers, across the range
    assert ev["mask"].any() and not ev["mask"].all()
    assert ev["features"].min() >= -1.0 and ev["features"].max() <= 1.0
    names = list(spec.input_names)
    assert not set(sample_hashes(ev, names)) & set(sample_hashes(cal, names))
    # A boolean input without a range is all true.
    ev, _ = synthesize(spec, DIMS, {k: v for k, v in RANGES.items() if k != "mask"}, 4, 2, seed=0)
    assert ev["mask"].dtype == np.bool_ and ev["mask"].all()


def test_narrow_ranges_still_give_disjoint_sets_or_say_why() -> None:
    spec = IOSpec(inputs=(TensorSpec("flag", "int64", (1,)),), outputs=(TensorSpec("y", "int64", (1,)),))
    ev, cal = synthesize(spec, {}, {"flag": (0.0, 9.0)}, 3, 3, seed=0)
    assert not set(ev["flag"].ravel().tolist()) & set(cal["flag"].ravel().tolist())
    with pytest.raises(UserError, match="too few distinct feeds"):
        synthesize(spec, {}, {"flag": (0.0, 1.0)}, 4, 2, seed=0)


@pytest.mark.parametrize(("dims", "ranges", "needle"), [
    ({"batch": 1}, RANGES, "symbolic dimension 'seq' without a size"),
    ({**DIMS, "sequence": 4}, RANGES, "sequence is not a symbolic dimension"),
    (DIMS, {k: v for k, v in RANGES.items() if k != "features"}, "no value range for input features"),
    (DIMS, {**RANGES, "token_ids": (0.5, 3.0)}, "must be whole numbers"),
    (DIMS, {**RANGES, "pixels": (0.0, 1.0)}, "pixels is not an input"),
])
def test_synthesis_refuses_what_it_cannot_make(mixed_onnx: Path, dims: dict, ranges: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        synthesize(graph_spec(mixed_onnx), dims, ranges, 4, 2, seed=0)


def test_npz_samples_split_on_the_first_axis_or_a_leading_sample_axis(mixed_onnx: Path) -> None:
    spec = graph_spec(mixed_onnx)
    rng = np.random.default_rng(0)
    same_rank = {"features": rng.normal(size=(10, 8)).astype(np.float32),
                 "token_ids": rng.integers(0, VOCAB, (10, SEQ)), "mask": np.ones((10, SEQ), dtype=bool)}
    samples = as_samples(same_rank, spec, "data.path")
    assert samples["token_ids"].shape == (10, 1, SEQ) and samples["token_ids"].dtype == np.int64
    assert np.array_equal(samples["token_ids"][:, 0], same_rank["token_ids"])
    leading = as_samples({k: v[:, None] for k, v in same_rank.items()}, spec, "data.path")
    assert all(np.array_equal(leading[k], samples[k]) for k in samples)
    ev, cal = split_calibration(samples, 0.3, seed=1, names=list(spec.input_names), where="data.path")
    assert (len(ev["features"]), len(cal["features"])) == (7, 3)
    assert not set(sample_hashes(ev, list(spec.input_names))) & set(sample_hashes(cal, list(spec.input_names)))


@pytest.mark.parametrize(("change", "needle"), [
    (lambda a: {k: v for k, v in a.items() if k != "mask"}, "no array for input(s) mask"),
    (lambda a: {**a, "token_ids": a["token_ids"].astype(np.float32)}, "token_ids is float32, the model takes int64"),
    (lambda a: {**a, "mask": a["mask"].astype(np.int64)}, "mask is int64, the model takes bool"),
    (lambda a: {**a, "features": a["features"][:, :5]}, "size 5 on axis 1, expected 8"),
    (lambda a: {**a, "features": a["features"][0, 0]}, "features has shape []"),
    (lambda a: {**a, "extra": a["features"]}, "extra are not inputs"),
    (lambda a: {**a, "features": a["features"][:4]}, "different numbers of samples"),
])
def test_npz_problems_are_named(mixed_onnx: Path, change: object, needle: str) -> None:
    rng = np.random.default_rng(0)
    arrays = {"features": rng.normal(size=(6, 8)).astype(np.float32), "token_ids": rng.integers(0, VOCAB, (6, SEQ)),
              "mask": np.ones((6, SEQ), dtype=bool)}
    with pytest.raises(UserError) as err:
        as_samples(change(arrays), graph_spec(mixed_onnx), "data.path")  # type: ignore[operator]
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_npz_data_folder_round_trips(tmp_path: Path, om_base: BaseModelInfo) -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(9, 8)).astype(np.float32)
    ids = rng.integers(0, VOCAB, (9, SEQ))
    mask = rng.integers(0, 2, (9, SEQ)).astype(bool)
    np.savez(tmp_path / "feeds.npz", features=features, token_ids=ids, mask=mask)
    np.savez(tmp_path / "cal.npz", features=features[:3] + 1, token_ids=ids[:3], mask=mask[:3])
    summary = WORKLOAD.build_data(NpzFeeds(path=tmp_path / "feeds.npz", calibration_path=tmp_path / "cal.npz"),
                                  tmp_path / "data", om_base)
    assert (summary.n_sentences, summary.n_calibration) == (9, 3)
    data = load_data(tmp_path / "data")
    assert data.names == ["features", "token_ids", "mask"]
    assert np.array_equal(data.eval["token_ids"][:, 0], ids) and data.eval["token_ids"].dtype == np.int64
    assert np.array_equal(data.eval["mask"][:, 0], mask) and data.eval["mask"].dtype == np.bool_
    assert data.manifest.io_spec == graph_spec(om_base.path).to_dict()
    rows = WORKLOAD.dataset_rows(tmp_path / "data")
    assert len(rows) == 9 and rows[0]["shape:token_ids"] == f"1x{SEQ}"
