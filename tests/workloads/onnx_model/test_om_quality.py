"""The onnx-model quality metrics on hand-computed values: cosine, relative L2, max error, SNR, argmax agreement,
and what a broken (non-finite) output scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt.workloads.onnx_model.quality import (
    BROKEN_ERROR,
    SNR_CAP_DB,
    argmax_agreement_per_row,
    compare_output,
    cosine_similarity,
    looks_like_class_scores,
    max_abs_error,
    relative_l2,
    snr_db,
    summarize,
)


def test_known_values() -> None:
    base = np.array([3.0, 4.0])
    cand = np.array([3.0, 5.0])  # error [0, 1]: ||e|| = 1, ||b|| = 5
    assert cosine_similarity(base, cand) == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert relative_l2(base, cand) == pytest.approx(0.2)
    assert max_abs_error(base, cand) == pytest.approx(1.0)
    assert snr_db(base, cand) == pytest.approx(10 * math.log10(25 / 1))
    assert cosine_similarity(base, -base) == pytest.approx(-1.0)
    assert cosine_similarity(base, 2 * base) == pytest.approx(1.0)  # scale-free, unlike rel_l2
    assert relative_l2(base, 2 * base) == pytest.approx(1.0)


def test_identical_and_zero_outputs() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert (cosine_similarity(x, x), relative_l2(x, x), max_abs_error(x, x), snr_db(x, x)) == (1.0, 0.0, 0.0,
                                                                                               SNR_CAP_DB)
    zeros = np.zeros(3)
    assert cosine_similarity(zeros, zeros) == 1.0 and cosine_similarity(zeros, np.ones(3)) == 0.0
    assert relative_l2(zeros, np.ones(3)) == BROKEN_ERROR and snr_db(zeros, np.ones(3)) == -SNR_CAP_DB
    # Integer and boolean outputs compare as numbers.
    assert max_abs_error(np.array([1, 2, 3], dtype=np.int64), np.array([1, 2, 5], dtype=np.int64)) == 2.0
    assert cosine_similarity(np.array([True, False]), np.array([True, False])) == 1.0


def test_non_finite_values() -> None:
    base = np.array([1.0, -np.inf, 2.0])
    assert relative_l2(base, base.copy()) == 0.0 and snr_db(base, base.copy()) == SNR_CAP_DB  # the same -inf
    broken = np.array([1.0, np.nan, 2.0])
    assert cosine_similarity(base, broken) == 0.0
    assert relative_l2(base, broken) == BROKEN_ERROR and max_abs_error(base, broken) == BROKEN_ERROR
    assert snr_db(base, broken) == -SNR_CAP_DB
    assert all(math.isfinite(v) for v in (relative_l2(base, broken), snr_db(base, broken)))


def test_argmax_agreement() -> None:
    base = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    cand = np.array([[0.2, 0.8, 0.0], [1.0, 2.0, 0.0], [0.0, np.nan, 5.0], [1.0, 1.0, 0.0]])
    # Rows: same, swapped, broken (non-finite), tied (first column on both sides).
    assert argmax_agreement_per_row(base, cand).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert looks_like_class_scores(2, "float32", 5) and not looks_like_class_scores(3, "float32", 5)
    assert not looks_like_class_scores(2, "int64", 5) and not looks_like_class_scores(2, "float32", 1)


def test_compare_and_summarize_over_samples() -> None:
    base = [np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])]
    cand = [np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])]  # sample 1: cosine 1/sqrt(2), argmax 0 vs 1
    m = compare_output(base, cand, class_scores=True)
    assert m["cosine"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert m["rel_l2"] == pytest.approx(math.sqrt(2) / math.sqrt(5))  # over all samples' values
    assert m["max_abs"] == pytest.approx(1.0)
    assert m["snr_db"] == pytest.approx(10 * math.log10(5 / 2))
    assert m["argmax_agreement"] == pytest.approx(0.5)
    other = compare_output([np.ones(3)], [np.ones(3) * 1.1], class_scores=False)
    summary = summarize({"a": m, "b": other})
    assert summary["min_cosine"] == pytest.approx(m["cosine"])  # the weakest output
    assert summary["max_rel_l2"] == pytest.approx(max(m["rel_l2"], other["rel_l2"]))
    assert summary["min_argmax_agreement"] == pytest.approx(0.5)
    assert "min_argmax_agreement" not in summarize({"b": other})
    with pytest.raises(ValueError, match="differs"):
        compare_output([np.ones(3)], [np.ones(4)], class_scores=False)
