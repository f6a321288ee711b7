"""The weekly cycle as a level per day of the week, chosen on a week's residual variances:
a quieter weekend is predicted at its Saturday-midnight step, and snapshots from before
keep their weekly harmonics."""

from __future__ import annotations

import numpy as np
import pytest

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.functions import Side
from mljob_operator.engine.model import DAY_S, WEEK_S, SeriesModel
from tests.engine.conftest import without_detector_field

SPAN = 1800  # 30-minute buckets: daily harmonics, as the synthetic corpus
PER_DAY = DAY_S // SPAN
T0 = 1_700_000_000 - 1_700_000_000 % WEEK_S  # a Thursday midnight UTC
WEEKS = 4


def _weekends(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A daily sine, unit noise and a weekend 4 lower, as the corpus' clean series."""
    b = np.arange(WEEKS * 7 * PER_DAY)
    t = T0 + b * SPAN
    weekend = (t // DAY_S + 3) % 7 >= 5  # epoch day 0 was a Thursday
    x = 50.0 + 5.0 * np.sin(2 * np.pi * b / PER_DAY) - 4.0 * weekend + rng.normal(0, 1, len(b))
    return t, x


def _raws(t: np.ndarray, x: np.ndarray, *, week: bool) -> np.ndarray:
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH, week=week)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    return np.array([m.step(idx, x[i : i + 1], int(t[i]))[1][0] for i in range(len(t))])


def test_a_quieter_weekend_is_predicted_at_its_step() -> None:
    steps, days = [], []
    for seed in range(6):
        t, x = _weekends(np.random.default_rng(seed))
        saturdays = np.flatnonzero(((t // DAY_S + 3) % 7 == 5) & (t % DAY_S == 0))
        late = saturdays[saturdays >= 15 * PER_DAY]  # the weekly cycle is in use by then
        profile, harmonic = _raws(t, x, week=True), _raws(t, x, week=False)
        steps.append((profile[late].max(), harmonic[late].max()))
        days.append(profile[15 * PER_DAY :].max())
    profile_steps, harmonic_steps = np.array(steps).T
    assert harmonic_steps.mean() > 5.0  # three harmonics: the step comes unpredicted
    assert profile_steps.mean() < 0.6 * harmonic_steps.mean()
    assert max(days) < 5.0  # nothing in the last two weeks stands out


def test_the_weekly_profile_is_not_used_on_a_series_without_a_week() -> None:
    t = T0 + np.arange(4 * 7 * PER_DAY) * SPAN
    x = 50.0 + np.random.default_rng(3).normal(0, 1, len(t))
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    for i in range(len(t)):
        m.step(idx, x[i : i + 1], int(t[i]))
    *_, sw_sel = m._predict(m.rows().copy(), int(t[-1]) + SPAN)
    assert sw_sel[0] == 0.0


@pytest.mark.parametrize("field", ["week", "fast"])
def test_a_snapshot_from_before_restores_bit_exact_without_it(field: str) -> None:
    cfg = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)
    t, x = _weekends(np.random.default_rng(9))
    records = [{"time": int(a), "value": float(b)} for a, b in zip(t, x, strict=True)]
    old = Analyzer(cfg)
    d = old.detectors[0]
    d.model = SeriesModel(SPAN, count_like=False, side=Side.BOTH, **{field: False})
    cut = 16 * PER_DAY
    old.ingest(records[:cut], 1, 0)
    blob = without_detector_field(snapshots.encode(old), field)

    restored = snapshots.decode(blob, cfg)
    assert not getattr(restored.detectors[0].model, field)
    assert np.array_equal(restored.detectors[0].model.rows(), d.model.rows())
    a = old.ingest(records[cut:], 1, 0)
    b = restored.ingest(records[cut:], 1, 0)
    assert [r.raw_score for r in a.buckets] == [r.raw_score for r in b.buckets]
    assert snapshots.encode(restored) == snapshots.encode(old)

    fresh = Analyzer(cfg)
    fresh.ingest(records, 1, 0)
    assert fresh.detectors[0].model.week
    assert fresh.detectors[0].model.fast
    again = snapshots.decode(snapshots.encode(fresh), cfg)
    assert snapshots.encode(again) == snapshots.encode(fresh)
