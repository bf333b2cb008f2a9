"""`edgeopt.stats` on synthetic samples whose answer is known: seeded normal samples (true mean = true median =
MU), a round shifted on purpose, a 2x-scaled copy; the comparisons on hand-made intervals; degenerate inputs.

Every sample is seeded and the bootstrap itself is seeded (`stats.SEED`), so these are exact, repeatable checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt import stats
from edgeopt.stats import (
    clearly_below,
    dominates_beyond_noise,
    mean_ci,
    paired_ratio_ci,
    rounds_ci,
    rounds_ratio_ci,
    separated,
    width_fraction,
)

MU, SD = 10.0, 1.0


def normal(n: int, seed: int, mu: float = MU, sd: float = SD) -> np.ndarray:
    return np.random.default_rng(seed).normal(mu, sd, n)


def rounds(k: int, n: int, seed: int, mu: float = MU, sd: float = SD) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(mu, sd, n) for _ in range(k)]


def width(ci: tuple[float, float]) -> float:
    return ci[1] - ci[0]


def contains(ci: tuple[float, float], value: float) -> bool:
    return ci[0] <= value <= ci[1]


def finite_around(ci: tuple[float, float], point: float) -> bool:
    return math.isfinite(ci[0]) and math.isfinite(ci[1]) and ci[0] <= point <= ci[1]


# -- intervals of one sample set ----------------------------------------------------------------


def test_mean_ci_contains_the_true_mean_and_shrinks_with_more_samples() -> None:
    cis = {n: mean_ci(normal(n, seed=2)) for n in (50, 200, 800)}
    for n, ci in cis.items():
        assert contains(ci, MU), (n, ci)
    # ~1/sqrt(n): four times the samples, about half the width.
    assert width(cis[200]) < 0.75 * width(cis[50])
    assert width(cis[800]) < 0.75 * width(cis[200])
    # A 95% interval of the mean of N(10, 1) with n=200 is about 2 * 1.96 / sqrt(200) = 0.28 wide.
    assert 0.15 < width(cis[200]) < 0.45


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    hits = sum(contains(mean_ci(normal(100, seed=s)), MU) for s in range(40))
    assert hits >= 34, hits  # nominal 38 of 40; the seeds make this exact


def test_paired_ratio_ci_of_a_scaled_copy_is_the_scale() -> None:
    base = normal(60, seed=3)
    ci = paired_ratio_ci(0.9 * base, base)
    # Paired: every resample takes the same samples of both, so the ratio is 0.9 in every one.
    assert ci == pytest.approx((0.9, 0.9))


def test_paired_ratio_ci_contains_the_true_ratio_of_noisy_scores() -> None:
    base = normal(200, seed=4)
    cand = 0.9 * base + np.random.default_rng(5).normal(0, 0.05, 200)
    ci = paired_ratio_ci(cand, base)
    assert contains(ci, 0.9) and width(ci) < 0.02


def test_paired_ratio_ci_refuses_samples_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_ratio_ci([1.0, 2.0, 3.0], [1.0, 2.0])


# -- rounds ----------------------------------------------------------------------------------------


def test_rounds_ci_contains_the_true_median_and_shrinks_with_more_samples() -> None:
    small, medium, large = rounds_ci(rounds(3, 50, seed=1)), rounds_ci(rounds(3, 200, seed=1)), \
        rounds_ci(rounds(6, 400, seed=1))
    for ci in (small, medium, large):
        assert contains(ci, MU), ci
    assert width(medium) < width(small)
    assert width(large) < 0.75 * width(medium)


def test_rounds_ci_covers_the_true_median_about_95_percent_of_the_time() -> None:
    hits = sum(contains(rounds_ci(rounds(3, 60, seed=s)), MU) for s in range(40))
    assert hits >= 34, hits


def test_rounds_ci_of_another_statistic() -> None:
    ci = rounds_ci(rounds(4, 200, seed=1), stats.p99)
    assert contains(ci, MU + 2.326 * SD), ci  # the 99th percentile of N(10, 1)


def test_rounds_ci_widens_when_the_rounds_disagree() -> None:
    agree = rounds(4, 100, seed=1)
    shifted = [r.copy() for r in agree]
    shifted[1] += 3 * SD  # one process ran on a busier machine
    a, b = rounds_ci(agree), rounds_ci(shifted)
    # The jitter inside each round is the same; only the disagreement between rounds differs, and the
    # cluster bootstrap over rounds shows it.
    assert width(b) > 5 * width(a), (a, b)
    pooled = float(np.median(np.concatenate(shifted)))
    assert contains(b, pooled) and b[1] > a[1] + SD


def test_rounds_ci_ignores_empty_rounds_and_refuses_no_samples() -> None:
    rs = rounds(3, 50, seed=1)
    assert rounds_ci([*rs, []]) == rounds_ci(rs)
    with pytest.raises(ValueError, match="no samples"):
        rounds_ci([[], []])


def test_rounds_ratio_ci_of_a_2x_scaled_copy_contains_2_and_is_narrow() -> None:
    den = rounds(4, 100, seed=1)
    num = [2.0 * r for r in den]
    ci = rounds_ratio_ci(num, den)
    assert contains(ci, 2.0), ci
    assert width_fraction(ci, 2.0) < 0.05, ci


def test_rounds_ratio_ci_pairs_rounds_so_a_shared_slow_pass_cancels() -> None:
    den = rounds(4, 100, seed=1)
    den[1] = den[1] + 3 * SD  # the second pass was slow for both
    paired = rounds_ratio_ci([2.0 * r for r in den], den)
    # The same data with the slow round of one paired against a normal round of the other.
    crossed = rounds_ratio_ci([2.0 * r for r in den[::-1]], den)
    assert contains(paired, 2.0) and width_fraction(paired, 2.0) < 0.05, paired
    assert width(crossed) > 5 * width(paired), (paired, crossed)


def test_rounds_ratio_ci_contains_the_true_ratio_of_independent_samples() -> None:
    hits = sum(contains(rounds_ratio_ci(rounds(3, 60, seed=s, mu=2 * MU, sd=2 * SD), rounds(3, 60, seed=100 + s)),
                        2.0) for s in range(40))
    assert hits >= 34, hits


def test_the_same_samples_give_the_same_interval() -> None:
    rs = rounds(3, 80, seed=7)
    assert rounds_ci(rs) == rounds_ci([r.copy() for r in rs])
    assert mean_ci(rs[0]) == mean_ci(rs[0].copy())


# -- degenerate inputs: finite intervals containing the point ------------------------------------


def test_constant_samples_give_the_point() -> None:
    assert mean_ci([3.0] * 5) == (3.0, 3.0)
    assert rounds_ci([[2.0] * 10, [2.0] * 5]) == (2.0, 2.0)
    assert rounds_ratio_ci([[4.0] * 3, [4.0] * 3], [[2.0] * 3, [2.0] * 3]) == (2.0, 2.0)
    assert paired_ratio_ci([1.0] * 4, [2.0] * 4) == (0.5, 0.5)


def test_one_sample_gives_the_point() -> None:
    assert mean_ci([4.0]) == (4.0, 4.0)
    assert rounds_ci([[5.0]]) == (5.0, 5.0)
    assert rounds_ratio_ci([[4.0]], [[2.0]]) == (2.0, 2.0)
    assert paired_ratio_ci([3.0], [6.0]) == (0.5, 0.5)


def test_one_round_gives_a_finite_interval_around_the_point() -> None:
    (r,) = rounds(1, 50, seed=1)
    ci = rounds_ci([r])
    assert finite_around(ci, float(np.median(r))) and width(ci) > 0
    ratio = rounds_ratio_ci([2.0 * r], [r])
    assert finite_around(ratio, 2.0)


def test_one_sample_per_round_gives_a_finite_interval_around_the_point() -> None:
    ci = rounds_ci([[1.0], [2.0], [3.0]])
    assert finite_around(ci, 2.0) and ci[0] >= 1.0 and ci[1] <= 3.0
    ratio = rounds_ratio_ci([[2.0], [4.0], [6.0]], [[1.0], [2.0], [3.0]])
    assert finite_around(ratio, 2.0)
    two = rounds_ci([[1.0], [3.0]])
    assert finite_around(two, 2.0)


# -- comparisons on hand-made intervals ------------------------------------------------------------


def test_clearly_below_needs_separated_intervals() -> None:
    assert clearly_below((1.0, 2.0), (3.0, 4.0))
    assert not clearly_below((3.0, 4.0), (1.0, 2.0))
    assert not clearly_below((1.0, 3.0), (2.0, 4.0))  # overlapping
    assert not clearly_below((1.0, 2.0), (2.0, 3.0))  # touching is not separated
    assert clearly_below((1.0, 1.0), (2.0, 2.0))  # exact values (size on disk)
    assert not clearly_below((2.0, 2.0), (2.0, 2.0))


def test_clearly_below_applies_the_floor_to_the_gap_between_middles() -> None:
    a, b = (9.0, 9.5), (9.6, 10.0)  # middles 9.25 and 9.8: a gap of 0.55 / 9.8 = 5.6% of b's
    assert clearly_below(a, b)
    assert clearly_below(a, b, floor=0.05)
    assert not clearly_below(a, b, floor=0.06)
    assert not clearly_below(a, b, floor=0.5)


def test_separated_is_either_way() -> None:
    assert separated((1.0, 2.0), (3.0, 4.0)) and separated((3.0, 4.0), (1.0, 2.0))
    assert not separated((1.0, 3.0), (2.0, 4.0))
    assert separated((9.0, 9.5), (9.6, 10.0), floor=0.05)
    assert not separated((9.6, 10.0), (9.0, 9.5), floor=0.06)


def test_dominates_beyond_noise() -> None:
    same = (5.0, 6.0)
    # Clearly better on one objective, tied on the other.
    assert dominates_beyond_noise([(1.0, 2.0), same], [(3.0, 4.0), same])
    assert not dominates_beyond_noise([(3.0, 4.0), same], [(1.0, 2.0), same])
    # Better on one, clearly worse on another: no domination either way.
    a, b = [(1.0, 2.0), (7.0, 8.0)], [(3.0, 4.0), (5.0, 6.0)]
    assert not dominates_beyond_noise(a, b) and not dominates_beyond_noise(b, a)
    # Nothing beyond the noise: overlapping everywhere.
    assert not dominates_beyond_noise([(1.0, 3.0), same], [(2.0, 4.0), same])
    # The floor: separated by 5.6%, which a 10% floor calls noise.
    assert dominates_beyond_noise([(9.0, 9.5)], [(9.6, 10.0)], floor=0.03)
    assert not dominates_beyond_noise([(9.0, 9.5)], [(9.6, 10.0)], floor=0.1)
    # A clear loss below the floor does not veto a clear win above it.
    assert dominates_beyond_noise([(1.0, 2.0), (9.6, 10.0)], [(3.0, 4.0), (9.0, 9.5)], floor=0.1)


def test_dominates_beyond_noise_needs_the_same_objectives() -> None:
    with pytest.raises(ValueError):
        dominates_beyond_noise([(1.0, 2.0)], [(3.0, 4.0), (5.0, 6.0)])


def test_width_fraction() -> None:
    assert width_fraction((9.0, 11.0), 10.0) == pytest.approx(0.2)
    assert width_fraction((-11.0, -9.0), -10.0) == pytest.approx(0.2)
    assert width_fraction((0.0, 1.0), 0.0) == math.inf
