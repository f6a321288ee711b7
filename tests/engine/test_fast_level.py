"""After an accepted level shift the new level learns fast (the running mean of the values
since the shift) while the level before it is held; a series that shifts often stops
shifting, so that a sharp daily wave is learnt by the daily profile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mljob_operator.engine import model
from mljob_operator.engine.functions import Side
from mljob_operator.engine.model import HOLD_BUCKETS, LEVEL, SHIFT_RUN, SeriesModel
from tests.engine.test_model_profile import _max_raw_on_a_missing_peak

SPAN = 3600  # hourly: harmonics, no daily profile
QUIET = 400


def _shift_with_a_high_sixth_value() -> np.ndarray:
    """Noise around 100, then a lasting shift to 140 whose sixth value (where the shift is
    accepted and the level jumps) happens to be 150."""
    x = 100.0 + np.random.default_rng(4).normal(0, 1, QUIET + 40)
    x[QUIET:] += 40.0
    x[QUIET + SHIFT_RUN - 1] = 150.0
    return x


def _run(x: np.ndarray, *, fast: bool) -> tuple[np.ndarray, np.ndarray]:
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH, fast=fast)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    raws, levels = [], []
    for i in range(len(x)):
        raws.append(m.step(idx, x[i : i + 1], i * SPAN)[1][0])
        levels.append(m.rows()[0, LEVEL])
    return np.array(raws), np.array(levels)


def test_the_new_level_is_the_running_mean_since_the_shift() -> None:
    x = _shift_with_a_high_sixth_value()
    shift = QUIET + SHIFT_RUN - 1
    hold = int(HOLD_BUCKETS)
    raws, levels = _run(x, fast=True)
    slow_raws, slow_levels = _run(x, fast=False)
    assert levels[shift] == slow_levels[shift] == 150.0  # the jump is the same
    mean = x[shift : shift + hold + 1].mean()
    assert abs(levels[shift + hold] - mean) < 2.0  # up to the 3-sigma clip of each update
    assert slow_levels[shift + hold - 1] > 148.0  # the slow level stays near the sixth value
    after = slice(shift + 1, shift + hold + 1)
    assert slow_raws[after].min() > 3.0  # every value after the shift is 10 below it
    assert raws[after][2:].max() < 4.0  # the fast level is there within three updates
    assert raws[after].sum() < 0.6 * slow_raws[after].sum()


def test_a_series_that_shifts_often_stops_shifting(monkeypatch: pytest.MonkeyPatch) -> None:
    normal, missing = _max_raw_on_a_missing_peak(model.DAILY_BINS)
    assert missing > 20.0
    assert missing > 2 * normal
    monkeypatch.setattr(model, "SHIFT_LIMIT", math.inf)  # every run of six is a shift
    unlimited_normal, unlimited_missing = _max_raw_on_a_missing_peak(model.DAILY_BINS)
    assert unlimited_normal > 30.0  # the level follows the square day: every switch a shift
    assert unlimited_missing < 5.0


def test_the_shift_count_decays() -> None:
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    x = _shift_with_a_high_sixth_value()
    for i in range(len(x)):
        m.step(idx, x[i : i + 1], i * SPAN)
    count = m.rows()[0, m.f0]
    assert 0.0 < count < 1.0
    assert count == pytest.approx(m.shifts_decay ** (len(x) - QUIET - SHIFT_RUN))
