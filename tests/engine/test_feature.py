"""The multi-bucket feature on a scale of its own: a sustained moderate rise that no single
bucket makes extreme is reported, in bucket and record scores, and snapshots carry the
feature (older ones restore without it, bit-exact)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import orjson
import pytest

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer, Output
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.functions import Side
from mljob_operator.engine.memory import series_bytes
from mljob_operator.engine.model import FEATURE_SD, SeriesModel, heavy_tail
from mljob_operator.engine.scoring import FEATURE_WEIGHT, ScoreScale, with_feature
from tests.engine.conftest import without_detector_field

SPAN = 60
CFG = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)
START, LENGTH, RISE = 2000, 12, 2.5  # after about a day and a half of noise: +2.5 sigma


def _records(seed: int, n: int = START + 200) -> list[dict[str, float]]:
    """Unit noise around 100, and from START a level 2.5 higher for LENGTH buckets."""
    x = 100.0 + np.random.default_rng(seed).normal(0, 1, n)
    x[START : START + LENGTH] = 100.0 + RISE
    return [{"time": i * SPAN, "value": float(v)} for i, v in enumerate(x)]


def _run(records: list[dict[str, float]], *, feature: bool) -> tuple[Analyzer, Output]:
    an = Analyzer(CFG)
    if not feature:  # as the engine scored before the feature
        an.detectors[0].model = SeriesModel(SPAN, count_like=False, side=Side.BOTH, feature=False)
    return an, an.ingest(records, 1, 0)


def _rise_scores(out: Output) -> tuple[float, float]:
    rise = range(START * SPAN * 1000, (START + LENGTH + 3) * SPAN * 1000)
    bucket = max(b.initial_anomaly_score for b in out.buckets if b.timestamp in rise)
    record = max((r.initial_record_score for r in out.records if r.timestamp in rise), default=0)
    return bucket, record


def test_the_feature_is_a_mean_of_clipped_deviations_over_a_few_buckets() -> None:
    m = SeriesModel(SPAN, count_like=False, side=Side.BOTH)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    x = 100.0 + np.random.default_rng(1).normal(0, 1, 600)
    for i, v in enumerate(x):
        m.step(idx, np.array([v]), i * SPAN)
    raws, feature = [], []
    for i in range(600, 612):
        _, raw, _, fraw = m.step(idx, np.array([100.0 + RISE]), i * SPAN)
        raws.append(raw[0])
        feature.append(fraw[0])
    assert max(raws) < 2.5  # no single bucket is extreme (p > 0.003)
    assert feature[-1] > 5.0  # the mean of 12 deviations of 2.5 sigma is (p < 1e-5)
    assert feature == sorted(feature)
    f = m.rows()[0, m.m0]
    assert 0.0 < f < RISE
    assert feature[-1] == heavy_tail(np.array([f / FEATURE_SD]))[1][0]
    assert pytest.approx((1 / 11) ** 0.5) == FEATURE_SD


def test_a_sustained_moderate_rise_is_reported_with_the_feature_not_without() -> None:
    for seed in range(3):
        records = _records(seed)
        with_bucket, with_record = _rise_scores(_run(records, feature=True)[1])
        without_bucket, without_record = _rise_scores(_run(records, feature=False)[1])
        assert without_bucket < 5.0
        assert without_record < 15.0
        assert with_bucket > 25.0
        assert with_record > 35.0
        assert with_bucket <= 100.0 * FEATURE_WEIGHT


def test_a_high_function_ignores_a_sustained_fall() -> None:
    m = SeriesModel(SPAN, count_like=False, side=Side.HIGH)
    m.add_series(1)
    idx = np.zeros(1, dtype=np.int64)
    for i, v in enumerate(100.0 + np.random.default_rng(2).normal(0, 1, 600)):
        m.step(idx, np.array([v]), i * SPAN)
    fraws = [m.step(idx, np.array([100.0 - RISE]), (600 + i) * SPAN)[3][0] for i in range(12)]
    assert max(fraws) == 0.0


def test_a_score_from_the_feature_stores_the_main_scales_inverse() -> None:
    scale = ScoreScale(4.2, 37.0)
    grid = np.round(np.linspace(0.0, 100.0, 2001), 4)
    assert np.array_equal(scale.score(scale.raw_for(grid)), grid)
    raw = np.array([1.0, 30.0, 3.0])
    scores, stored = with_feature(scale, raw, scale.score(raw), np.array([100.0, 100.0, 0.0]))
    assert scores[0] == 50.0
    assert scale.score(stored)[0] == 50.0  # the initial score is what rescoring starts from
    assert stored[1:].tolist() == raw[1:].tolist()  # the bucket's own score stands


def test_a_bucket_scored_by_the_feature_stores_a_raw_score_its_scale_maps_back() -> None:
    records = _records(0)
    _, out = _run(records, feature=True)
    for b in out.buckets:
        assert 0.0 <= b.anomaly_score <= 100.0
    for r in out.records:
        assert 0.0 <= r.record_score <= 100.0
    rise = [b for b in out.buckets if START <= b.timestamp // 1000 // SPAN < START + LENGTH]
    peak = max(rise, key=lambda b: b.initial_anomaly_score)
    k = peak.timestamp // 1000 // SPAN
    an, upto = _run(records[: k + 2], feature=True)  # bucket k is the last one finalised
    assert upto.buckets[-1] == peak
    assert an.bucket_norm.scale().score_one(peak.raw_score) == peak.initial_anomaly_score


def test_the_feature_is_a_model_column_counted_in_memory() -> None:
    with_f = SeriesModel(SPAN, count_like=False, side=Side.BOTH)
    without = SeriesModel(SPAN, count_like=False, side=Side.BOTH, feature=False)
    assert with_f.columns == without.columns + 1
    assert series_bytes(with_f.columns) == series_bytes(without.columns) + 8


def test_a_snapshot_inside_a_rise_goes_on_bit_exact() -> None:
    records = _records(1)
    cut = START + LENGTH // 2
    whole = Analyzer(CFG)
    whole.ingest(records[: cut * 1], 1, 0)
    assert whole.detectors[0].model.rows()[0, -1] > 1.0  # the feature, mid-rise
    assert whole.last_feature_top is not None
    restored = snapshots.decode(snapshots.encode(whole), CFG)
    assert restored.detectors[0].model.feature
    assert np.array_equal(restored.feature_norm.hist, whole.feature_norm.hist)
    assert restored.last_feature_top == whole.last_feature_top
    a = whole.ingest(records[cut:], 1, 0)
    b = restored.ingest(records[cut:], 1, 0)
    assert a.buckets == b.buckets
    assert a.records == b.records
    assert snapshots.encode(restored) == snapshots.encode(whole)


def _as_before_the_feature(blob: bytes) -> bytes:
    """The snapshot as written before the feature: no feature flag, normalisers or top."""
    blob = without_detector_field(blob, "feature")
    payload = zlib.decompress(blob)
    head = struct.Struct("<4sII")
    magic, version, hlen = head.unpack_from(payload)
    meta = orjson.loads(payload[head.size : head.size + hlen])
    del meta["fnorm"]
    del meta["last_feature_top"]
    header = orjson.dumps(meta)
    return zlib.compress(
        head.pack(magic, version, len(header)) + header + payload[head.size + hlen :]
    )


def test_a_snapshot_from_before_the_feature_restores_bit_exact_without_it() -> None:
    records = _records(2)
    cut = START - 100
    old = Analyzer(CFG)
    old.detectors[0].model = SeriesModel(SPAN, count_like=False, side=Side.BOTH, feature=False)
    old.ingest(records[:cut], 1, 0)
    restored = snapshots.decode(_as_before_the_feature(snapshots.encode(old)), CFG)
    model = restored.detectors[0].model
    assert not model.feature
    assert np.array_equal(model.rows(), old.detectors[0].model.rows())
    assert restored.last_feature_top is None
    assert not restored.feature_norm.hist.any()
    # it goes on exactly as the engine before the feature: the rise is not reported
    a = old.ingest(records[cut:], 1, 0)
    b = restored.ingest(records[cut:], 1, 0)
    assert a.buckets == b.buckets
    assert a.records == b.records
    assert np.array_equal(model.rows(), old.detectors[0].model.rows())
    assert _rise_scores(b)[0] < 5.0
