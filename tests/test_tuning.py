"""The runtime settings search's pure core: the grid, the output check and the choice under noise."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.tuning import SettingsSpace, choose, label, same_outputs

SPACE = SettingsSpace(default={"threads": "threads", "spin": True}, alternatives={"threads": [1], "spin": [False]})


def test_the_grid_is_the_default_then_one_change_at_a_time():
    assert SPACE.grid(2) == [{"threads": 2, "spin": True}, {"threads": 1, "spin": True},
                             {"threads": 2, "spin": False}]


def test_an_alternative_equal_to_the_default_is_dropped():
    assert SPACE.grid(1) == [{"threads": 1, "spin": True}, {"threads": 1, "spin": False}]


def test_label_names_what_changed():
    default = SPACE.default_settings(2)
    assert label(default, default) == "default"
    assert label({"threads": 2, "spin": False}, default) == "spin=False"


def _passes(center: float, n_passes: int = 3, n: int = 30, jitter: float = 0.01, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(center * (1 + jitter * rng.standard_normal(n))) for _ in range(n_passes)]


def test_a_clearly_faster_setting_wins():
    grid = SPACE.grid(2)
    series = {0: _passes(0.010), 1: _passes(0.020, seed=1), 2: _passes(0.007, seed=2)}
    tuning = choose("rt", grid, series, {1: True, 2: True}, {})
    assert tuning.chosen == {"threads": 2, "spin": False}
    verdicts = {p.label: p.verdict for p in tuning.probes}
    assert verdicts == {"default": "default", "threads=1": "slower", "spin=False": "faster"}
    probe = next(p for p in tuning.probes if p.label == "spin=False")
    assert probe.speedup_ci is not None and probe.speedup_ci[0] > 1.03
    assert "spin=False" in tuning.summary()


def test_a_difference_inside_the_noise_keeps_the_default():
    grid = SPACE.grid(2)
    series = {0: _passes(0.010, jitter=0.2), 1: _passes(0.0099, jitter=0.2, seed=1),
              2: _passes(0.0101, jitter=0.2, seed=2)}
    tuning = choose("rt", grid, series, {1: True, 2: True}, {})
    assert tuning.chosen == grid[0] and tuning.chosen_label == "default"
    assert {p.verdict for p in tuning.probes[1:]} == {"noise"}


def test_a_faster_setting_that_changes_the_outputs_is_refused():
    grid = SPACE.grid(2)
    series = {0: _passes(0.010), 1: _passes(0.005, seed=1), 2: _passes(0.010, seed=2)}
    tuning = choose("rt", grid, series, {1: False, 2: True}, {})
    assert tuning.chosen == grid[0]
    assert tuning.probes[1].verdict == "changes outputs"


def test_a_failed_setting_is_reported_and_a_failed_default_refused():
    grid = SPACE.grid(2)
    tuning = choose("rt", grid, {0: _passes(0.01), 2: _passes(0.01, seed=2)}, {2: True}, {1: "refused"})
    assert tuning.probes[1].verdict == "failed" and tuning.probes[1].detail == "refused"
    with pytest.raises(ValueError, match="default"):
        choose("rt", grid, {1: _passes(0.01)}, {1: True}, {0: "crashed"})


def test_same_outputs_tolerates_reordered_float_sums_but_not_a_lower_precision():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 384)).astype(np.float32)
    assert same_outputs(x + np.float32(1e-7) * rng.standard_normal(x.shape).astype(np.float32), x)
    bf16_like = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # bf16 truncation
    assert not same_outputs(bf16_like, x)
    assert same_outputs(np.array([1, 2, 3]), np.array([1, 2, 3]))
    assert not same_outputs(np.array([1, 2, 3]), np.array([1, 2, 4]))
    assert not same_outputs({"a": x}, {"a": x[:2]})
    assert not same_outputs(np.array([np.nan]), np.array([np.nan]))
