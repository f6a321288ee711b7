"""After an accepted level shift the level from before it is held for a while as a second
hypothesis: a burst that ends just after it was taken for a shift is reported once."""

from __future__ import annotations

import numpy as np

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.functions import Side
from mljob_operator.engine.model import HOLD_BUCKETS, SHIFT_RUN, SeriesModel
from tests.engine.conftest import without_detector_field

SPAN = 3600  # hourly: harmonics, no daily profile
QUIET = 400  # buckets of noise before the burst
BURST = SHIFT_RUN + 1  # long enough to be accepted as a level shift
CFG = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)


def _values(after: float) -> np.ndarray:
    """Noise around 100, a burst of BURST buckets at +40, then noise around `after`."""
    x = 100.0 + np.random.default_rng(11).normal(0, 1, QUIET + BURST + 40)
    x[QUIET : QUIET + BURST] += 40.0
    x[QUIET + BURST :] += after - 100.0
    return x


def _raws(x: np.ndarray, *, held: bool, side: Side = Side.BOTH) -> np.ndarray:
    m = SeriesModel(SPAN, count_like=False, side=side, held=held)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    return np.array([m.step(idx, x[i : i + 1], i * SPAN)[1][0] for i in range(len(x))])


def test_a_burst_taken_for_a_shift_is_not_reported_again_when_it_ends() -> None:
    x = _values(after=100.0)
    end = QUIET + BURST
    without, with_held = _raws(x, held=False), _raws(x, held=True)
    assert without[QUIET] > 20.0
    assert with_held[QUIET] == without[QUIET]  # the start, in full
    assert without[end : end + 3].min() > 10.0  # before: the drop back was a second anomaly
    assert with_held[end : end + 3].max() < 3.0  # now: the level from before explains it


def test_a_shift_that_stays_is_learnt_as_before() -> None:
    x = _values(after=140.0)
    without, with_held = _raws(x, held=False), _raws(x, held=True)
    assert np.array_equal(with_held[: QUIET + SHIFT_RUN], without[: QUIET + SHIFT_RUN])
    assert with_held[QUIET + BURST :].max() < 5.0
    assert without[QUIET + BURST :].max() < 5.0


def test_one_sided_functions_see_the_held_level_too() -> None:
    raws = _raws(_values(after=100.0), held=True, side=Side.LOW)
    assert raws[QUIET + BURST : QUIET + BURST + 3].max() < 3.0


def test_the_held_level_expires() -> None:
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    x = _values(after=140.0)
    holds = []
    for i in range(len(x)):
        m.step(idx, x[i : i + 1], i * SPAN)
        holds.append(m.rows()[0, m.h0 + 1])
    shift = QUIET + SHIFT_RUN - 1
    assert holds[shift] == HOLD_BUCKETS
    assert holds[shift + int(HOLD_BUCKETS)] == 0.0
    assert m.rows()[0, m.h0] != 0.0  # the level it held, from before the shift


def _records(x: np.ndarray) -> list[dict[str, float]]:
    return [{"time": i * SPAN, "value": float(v)} for i, v in enumerate(x)]


def test_a_snapshot_from_before_the_held_level_restores_bit_exact_without_it() -> None:
    records = _records(_values(after=100.0))
    old = Analyzer(CFG)
    d = old.detectors[0]
    d.model = SeriesModel(SPAN, count_like=False, side=Side.BOTH, held=False)
    old.ingest(records[: QUIET + 2], 1, 0)
    blob = without_detector_field(snapshots.encode(old), "held")

    restored = snapshots.decode(blob, CFG)
    assert not restored.detectors[0].model.held
    assert np.array_equal(restored.detectors[0].model.rows(), d.model.rows())
    old.ingest(records[QUIET + 2 :], 1, 0)
    restored.ingest(records[QUIET + 2 :], 1, 0)
    assert snapshots.encode(restored) == snapshots.encode(old)


def test_a_level_held_at_snapshot_time_restores_bit_exact() -> None:
    records = _records(_values(after=100.0))
    cut = QUIET + BURST + 1  # inside the hold
    live = Analyzer(CFG)
    live.ingest(records[:cut], 1, 0)
    model = live.detectors[0].model
    assert model.held
    assert model.rows()[0, model.h0 + 1] > 0
    restored = snapshots.decode(snapshots.encode(live), CFG)
    assert np.array_equal(restored.detectors[0].model.rows(), model.rows())
    a = live.ingest(records[cut:], 1, 0)
    b = restored.ingest(records[cut:], 1, 0)
    assert [r.raw_score for r in a.buckets] == [r.raw_score for r in b.buckets]
    assert snapshots.encode(restored) == snapshots.encode(live)
