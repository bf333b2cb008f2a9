"""Logit-quality metrics on synthetic logits with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt.workloads.image_classification.quality import (
    compare_logits,
    softmax_kld,
    softmax_kld_per_sample,
    top1_agreement,
    top1_agreement_per_sample,
    top5_overlap,
    top5_overlap_per_sample,
    topk_accuracy,
    topk_accuracy_per_sample,
)


@pytest.fixture
def base() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 3.0, size=(40, 1000)).astype(np.float32)


def test_identical_logits_agree_completely(base: np.ndarray) -> None:
    assert top1_agreement(base, base.copy()) == 1.0
    assert top5_overlap(base, base.copy()) == 1.0
    assert softmax_kld(base, base.copy()) == 0.0
    assert top1_agreement_per_sample(base, base).shape == (40,)


def test_moving_the_top_class_in_some_rows_lowers_agreement_by_that_fraction(base: np.ndarray) -> None:
    cand = base.copy()
    rows = [1, 5, 9, 20, 33]
    for r in rows:
        top = int(base[r].argmax())
        other = int(np.argsort(base[r])[0])  # the lowest class becomes the top one
        cand[r, top], cand[r, other] = cand[r, other], cand[r, top]
    per = top1_agreement_per_sample(base, cand)
    assert top1_agreement(base, cand) == pytest.approx(1 - len(rows) / 40)
    assert np.flatnonzero(per == 0).tolist() == rows
    # The old top class fell to the bottom: 4 of the 5 classes stay in the top five of those rows.
    assert top5_overlap(base, cand) == pytest.approx(1 - len(rows) / 40 * 0.2)
    assert (softmax_kld_per_sample(base, cand)[rows] > 0).all()
    assert (np.delete(softmax_kld_per_sample(base, cand), rows) == 0).all()


def test_top5_overlap_counts_shared_classes() -> None:
    a = np.arange(10, dtype=np.float64)[None, :]  # top five: 9, 8, 7, 6, 5
    b = a.copy()
    b[0, [9, 8]] = -1  # 9 and 8 leave, 4 and 3 join
    assert top5_overlap_per_sample(a, b).tolist() == [0.6]
    c = a[:, ::-1].copy()  # the reversed ranking: top five 0..4, disjoint
    assert top5_overlap(a, c) == 0.0


def test_kld_matches_the_closed_form_and_is_shift_invariant() -> None:
    base = np.array([[0.0, 0.0], [2.0, -1.0]])
    cand = np.array([[math.log(3.0), 0.0], [2.0, -1.0]])
    # softmax: p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    assert softmax_kld_per_sample(base, cand).tolist() == pytest.approx([0.5 * math.log(4 / 3), 0.0])
    assert softmax_kld(base, cand) == pytest.approx(0.25 * math.log(4 / 3))
    huge = softmax_kld_per_sample(base + 1e4, cand - 5e3)  # exp(1e4) would overflow without the max shift
    assert np.isfinite(huge).all() and huge == pytest.approx(softmax_kld_per_sample(base, cand))


def test_a_non_finite_candidate_row_is_a_disagreement(base: np.ndarray) -> None:
    cand = base.copy()
    cand[3, 0] = np.nan
    assert top1_agreement(base, cand) == pytest.approx(39 / 40)
    assert top5_overlap_per_sample(base, cand)[3] == 0.0
    assert softmax_kld_per_sample(base, cand)[3] == np.inf
    with pytest.raises(ValueError):
        softmax_kld(cand, base)  # the base must be finite
    with pytest.raises(ValueError):
        top1_agreement(base, base[:, :10])


def test_topk_accuracy_against_labels() -> None:
    logits = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 4)
    labels = np.array([0, 1, 4, 5])
    assert topk_accuracy_per_sample(logits, labels, 1).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert topk_accuracy(logits, labels, 1) == 0.25
    assert topk_accuracy(logits, labels, 5) == 0.75
    assert topk_accuracy(logits, labels, 6) == 1.0
    with pytest.raises(ValueError):
        topk_accuracy(logits, np.array([0, 1, 2, 6]), 1)  # 6 is not a class
    with pytest.raises(ValueError):
        topk_accuracy(logits, labels, 7)


def test_compare_logits_reports_every_metric(base: np.ndarray) -> None:
    labels = base.argmax(axis=1)
    out = compare_logits(base, base, labels)
    assert out == {"top1_agreement": 1.0, "decisive_top1_agreement": 1.0, "top5_overlap": 1.0, "softmax_kld": 0.0,
                   "top1_accuracy": 1.0,
                   "base_top1_accuracy": 1.0, "top5_accuracy": 1.0, "base_top5_accuracy": 1.0}
    assert set(compare_logits(base, base)) == {"top1_agreement", "decisive_top1_agreement", "top5_overlap",
                                               "softmax_kld"}


def test_decisive_agreement_ignores_inputs_the_base_is_unsure_of() -> None:
    from edgeopt.workloads.image_classification.quality import decisive, decisive_top1_agreement

    sure = np.zeros((4, 10))
    sure[np.arange(4), [1, 2, 3, 4]] = 8.0  # top-1 probability ~0.997
    flat = np.zeros((4, 10))
    flat[np.arange(4), [5, 6, 7, 8]] = 0.1  # top-1 probability ~0.11: a near tie
    base = np.concatenate([sure, flat])
    cand = base.copy()
    cand[4:, 9] = 1.0  # the candidate flips every near tie, and none of the decisive answers
    assert decisive(base).tolist() == [True] * 4 + [False] * 4
    assert decisive_top1_agreement(base, cand) == 1.0
    cand[0, 0] = 20.0  # one decisive answer flips
    assert decisive_top1_agreement(base, cand) == 0.75
    # With no decisive input at all, it is the plain agreement.
    assert decisive_top1_agreement(flat, flat) == 1.0
