"""The daily profile: sharp days fit, and snapshots from before it keep their harmonics."""

from __future__ import annotations

import numpy as np

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.functions import Side
from mljob_operator.engine.model import (
    DAILY_BINS,
    DAY_S,
    FEATURE_COLUMNS,
    HELD_COLUMNS,
    SHIFTS_COLUMNS,
    SLOW_COLUMNS,
    WEEK_BINS,
    SeriesModel,
    daily_bins,
)
from tests.engine.conftest import without_detector_field

SPAN = 300


def _square_days(days: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A load on from nine to six, noisier when on (as NAB's artificial daily series)."""
    t = np.arange(days * DAY_S // SPAN) * SPAN
    on = (t % DAY_S >= 9 * 3600) & (t % DAY_S < 18 * 3600)
    x = np.where(on, 80.0 + rng.normal(0, 5, len(t)), 20.0 + rng.normal(0, 1, len(t)))
    return t, x


def _max_raw_on_a_missing_peak(bins: int) -> tuple[float, float]:
    """Largest raw score of the last normal day and of a day whose peak stays low."""
    t, x = _square_days(12, np.random.default_rng(5))
    per_day = DAY_S // SPAN
    x[11 * per_day : 12 * per_day] = 20.0 + np.random.default_rng(6).normal(0, 1, per_day)
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH, bins=bins)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    raws = np.array([m.step(idx, x[i : i + 1], int(t[i]))[1][0] for i in range(len(t))])
    return float(raws[10 * per_day : 11 * per_day].max()), float(raws[11 * per_day :].max())


def test_a_profile_is_used_only_where_each_bin_gets_two_buckets() -> None:
    assert daily_bins(60) == daily_bins(900) == DAILY_BINS
    assert daily_bins(1800) == daily_bins(3600) == 0
    assert SeriesModel(300, count_like=False, side=Side.BOTH).columns == (
        6 + DAILY_BINS + WEEK_BINS + HELD_COLUMNS + SLOW_COLUMNS + SHIFTS_COLUMNS + FEATURE_COLUMNS
    )


def test_a_square_day_without_its_peak_stands_out_of_ordinary_days() -> None:
    normal, missing = _max_raw_on_a_missing_peak(DAILY_BINS)
    assert missing > 20
    assert missing > 2 * normal
    _, h_missing = _max_raw_on_a_missing_peak(0)
    assert missing > 3 * h_missing  # 4 harmonics ring at every step and hide it


def test_a_snapshot_from_before_the_profile_restores_its_harmonics_bit_exact() -> None:
    cfg = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)
    t, x = _square_days(3, np.random.default_rng(7))
    records = [{"time": int(a), "value": float(b)} for a, b in zip(t, x, strict=True)]
    old = Analyzer(cfg)
    d = old.detectors[0]
    d.model = SeriesModel(SPAN, count_like=False, side=Side.BOTH, bins=0)
    old.ingest(records[:500], 1, 0)
    blob = without_detector_field(snapshots.encode(old), "bins")

    restored = snapshots.decode(blob, cfg)
    assert restored.detectors[0].model.bins == 0
    assert np.array_equal(restored.detectors[0].model.rows(), d.model.rows())
    old.ingest(records[500:], 1, 0)
    restored.ingest(records[500:], 1, 0)
    assert snapshots.encode(restored) == snapshots.encode(old)
    assert snapshots.decode(snapshots.encode(restored), cfg).detectors[0].model.bins == 0

    fresh = Analyzer(cfg)
    fresh.ingest(records, 1, 0)
    assert fresh.detectors[0].model.bins == DAILY_BINS
    assert snapshots.encode(snapshots.decode(snapshots.encode(fresh), cfg)) == snapshots.encode(
        fresh
    )
