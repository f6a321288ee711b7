"""A burst no larger than one in the last few hours is muted (scoring.RECENT_WEIGHT)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import orjson

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.scoring import RECENT_MEMORY_S, Normaliser

SPAN = 60
CFG = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)
QUIET = 300  # buckets of noise before the first burst
HOUR = 3600 // SPAN


def _records(bursts: dict[int, float], n: int) -> list[dict[str, float]]:
    """Noise around 100 with one-bucket bursts of the given sizes (in sigmas)."""
    x = 100.0 + np.random.default_rng(5).normal(0, 1, n)
    for b, size in bursts.items():
        x[b] += size
    return [{"time": i * SPAN, "value": float(v)} for i, v in enumerate(x)]


def _quiet(norm: Normaliser, start: int, count: int) -> None:
    for b in range(start, start + count):
        norm.observe(b * 300_000, np.array([0.2]))


def test_a_burst_like_one_an_hour_ago_is_muted_one_days_later_is_not() -> None:
    recent = Normaliser(30 * 86_400_000, 300_000, recent=True)
    plain = Normaliser(30 * 86_400_000, 300_000)
    for norm in (recent, plain):
        _quiet(norm, 0, 200)
        assert norm.discounted(40.0) == 40.0  # the first of its size: in full
        norm.observe(200 * 300_000, np.array([40.0]))
        _quiet(norm, 201, 11)
    # an hour later: the 30-day count alone divides by 1.5, the recent one by ~13
    assert plain.discounted(40.0) > 25.0
    assert recent.discounted(40.0) < 0.2 * plain.discounted(40.0)
    assert recent.discounted(80.0) == 80.0  # bigger than the flurry: news
    assert recent.discounted(1.0) == 1.0  # noise is left alone
    # two days later the flurry is forgotten; the 30-day count still applies
    for norm in (recent, plain):
        norm.observe_quiet(2 * 86_400 // 300, 800 * 300_000, zero_top=True)
    assert recent.discounted(40.0) > 0.99 * plain.discounted(40.0)
    assert RECENT_MEMORY_S < 86_400


def test_the_second_burst_of_a_flurry_scores_low_in_a_job() -> None:
    first_at, second_at = QUIET, QUIET + HOUR
    out = Analyzer(CFG).ingest(_records({first_at: 40.0, second_at: 40.0}, QUIET + 2 * HOUR), 1, 0)
    bucket = {b.timestamp // 1000 // SPAN: b for b in out.buckets}
    record = {r.timestamp // 1000 // SPAN: r for r in out.records}
    first, second = bucket[first_at], bucket[second_at]
    assert record[second_at].raw_score > 0.8 * record[first_at].raw_score  # as unlikely
    assert first.raw_score > 0.9 * record[first_at].raw_score
    assert second.raw_score < 0.2 * first.raw_score
    assert first.initial_anomaly_score > 90.0
    assert second.initial_anomaly_score < 50.0


def _without_recent(blob: bytes) -> bytes:
    """The snapshot as written before the recent histogram: none in its header."""
    payload = zlib.decompress(blob)
    head = struct.Struct("<4sII")
    magic, version, hlen = head.unpack_from(payload)
    meta = orjson.loads(payload[head.size : head.size + hlen])
    del meta["norm"][0]["recent"]
    header = orjson.dumps(meta)
    return zlib.compress(
        head.pack(magic, version, len(header)) + header + payload[head.size + hlen :]
    )


def test_a_snapshot_inside_a_flurry_goes_on_bit_exact() -> None:
    records = _records({QUIET: 40.0, QUIET + HOUR: 40.0}, QUIET + 2 * HOUR)
    cut = QUIET + 10
    whole = Analyzer(CFG)
    whole.ingest(records[:cut], 1, 0)
    assert whole.bucket_norm.recent is not None
    assert whole.bucket_norm.recent.sum() > 0
    assert whole.record_norm.recent is None
    restored = snapshots.decode(snapshots.encode(whole), CFG)
    assert restored.bucket_norm.recent is not None
    assert np.array_equal(restored.bucket_norm.recent, whole.bucket_norm.recent)
    whole.ingest(records[cut:], 1, 0)
    restored.ingest(records[cut:], 1, 0)
    assert snapshots.encode(restored) == snapshots.encode(whole)


def test_a_snapshot_from_before_the_recent_histogram_restores() -> None:
    an = Analyzer(CFG)
    an.ingest(_records({QUIET: 40.0}, QUIET + 10), 1, 0)
    old = snapshots.decode(_without_recent(snapshots.encode(an)), CFG)
    assert old.bucket_norm.recent is not None
    assert not old.bucket_norm.recent.any()  # no flurry remembered: bursts score as before
    assert np.array_equal(old.bucket_norm.hist, an.bucket_norm.hist)
    assert np.array_equal(old.detectors[0].model.rows(), an.detectors[0].model.rows())
