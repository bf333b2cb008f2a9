"""`edgeopt.timing`: the warm-up and the two floors of the timing loop, and the percentiles of known durations.

Nothing here claims how fast anything is: the calls are counted, and the only clock readings asserted on are
the ones the floors are defined by (the loop may stop only once `min_time_s` has passed).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from edgeopt import timing
from edgeopt.timing import stats, timed_loop


class Counter:
    """A call that counts itself and sleeps a little (a real, measurable call)."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


class FakeClock:
    """`time.perf_counter` that only moves when a call moves it: exact counts under a time floor."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize(("warmup", "min_iters"), [(0, 1), (3, 5), (7, 2)])
def test_without_a_time_floor_it_runs_warmup_plus_exactly_min_iters(warmup: int, min_iters: int) -> None:
    run = Counter()
    durations = timed_loop(run, warmup, min_iters, 0.0)
    assert len(durations) == min_iters
    assert run.calls == warmup + min_iters
    assert all(d >= 0 for d in durations)


def test_the_time_floor_keeps_it_going_past_the_iteration_floor() -> None:
    run = Counter(sleep_s=0.005)
    min_time_s = 0.1
    t0 = time.perf_counter()
    durations = timed_loop(run, 2, 3, min_time_s)
    spent = time.perf_counter() - t0
    assert run.calls == 2 + len(durations)
    # 3 calls of >= 5 ms cannot fill 100 ms: the time floor, not the iteration floor, ended the loop.
    assert len(durations) > 3
    assert spent >= min_time_s  # the floor's definition
    # It stopped at the first check after the floor: before the last call the floor was not yet reached,
    # and the timed calls before it lie inside that span.
    assert sum(durations[:-1]) < min_time_s
    # Every timed call includes its own sleep.
    assert min(durations) >= 0.005 * 0.9


def test_the_iteration_floor_holds_when_the_time_floor_is_already_reached() -> None:
    run = Counter(sleep_s=0.02)
    durations = timed_loop(run, 1, 4, 0.001)  # the first timed call alone passes 1 ms
    assert len(durations) == 4 and run.calls == 5


def test_warmup_calls_are_not_timed_and_the_floors_are_exact_on_a_fake_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    calls: list[str] = []
    warmup = 3

    def run() -> None:
        # Warm-up calls are slow (100 s each on this clock), timed ones take 0.25 s: a warm-up call that
        # was timed would show up as a 100 s duration.
        calls.append("warm" if len(calls) < warmup else "timed")
        clock.now += 100.0 if calls[-1] == "warm" else 0.25

    durations = timed_loop(run, warmup, 2, 1.0)
    # 0.25 s per call: the time floor of 1 s is reached after exactly 4 calls (more than min_iters=2).
    assert durations == [0.25] * 4
    assert calls == ["warm"] * 3 + ["timed"] * 4


def test_the_fake_clock_iteration_floor_wins_over_a_short_time_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=clock.perf_counter))

    def run() -> None:
        clock.now += 0.5

    assert timed_loop(run, 0, 6, 1.0) == [0.5] * 6


def test_stats_on_known_durations() -> None:
    durations = [i / 1000 for i in range(1, 101)]  # 1..100 ms, shuffled: order does not matter
    rng = np.random.default_rng(0)
    rng.shuffle(durations)
    s = stats(durations, batch=4)
    assert s.batch_size == 4 and s.iterations == 100
    # numpy's linear interpolation between closest ranks
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5)


def test_stats_of_one_duration_and_of_constant_durations() -> None:
    one = stats([0.002], batch=1)
    assert (one.iterations, one.p50_ms, one.p90_ms, one.p99_ms, one.mean_ms) == (1, 2.0, 2.0, 2.0, 2.0)
    same = stats([0.003] * 10, batch=1)
    assert same.p50_ms == pytest.approx(3.0) and same.p99_ms == pytest.approx(3.0)


def test_stats_are_ordered_and_skewed_durations_pull_the_mean_not_the_median() -> None:
    durations = [0.001] * 98 + [0.1, 0.2]
    s = stats(durations, batch=1)
    assert s.p50_ms <= s.p90_ms <= s.p99_ms
    assert s.p50_ms == pytest.approx(1.0)
    assert s.mean_ms == pytest.approx((98 * 1.0 + 100 + 200) / 100)


def test_stats_of_no_durations_is_an_error() -> None:
    with pytest.raises(ValueError, match="no timings"):
        stats([], batch=1)
