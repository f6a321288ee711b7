"""A bucket right after another is scored on what it adds to it (scoring.continued)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import orjson

from mljob_operator.engine import snapshots
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.scoring import EPISODE_WEIGHT, continued

SPAN = 60
CFG = JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN)
QUIET = 300  # buckets of noise before the burst


def _records() -> list[dict[str, float]]:
    """Noise around 100, then a burst of three buckets (+40, +30, +35 sigma), then noise."""
    x = 100.0 + np.random.default_rng(3).normal(0, 1, QUIET + 20)
    x[QUIET : QUIET + 3] += (40.0, 30.0, 35.0)
    return [{"time": i * SPAN, "value": float(v)} for i, v in enumerate(x)]


def test_continued_takes_off_part_of_the_overlap_with_the_bucket_before() -> None:
    assert continued(40.0, 0.0) == 40.0  # after a quiet bucket: in full
    assert continued(40.0, 40.0) == 40.0 * (1 - EPISODE_WEIGHT)
    assert continued(40.0, 8.0) == 40.0 - EPISODE_WEIGHT * 8.0
    assert continued(10.0, 40.0) == 10.0 * (1 - EPISODE_WEIGHT)  # at most its own size
    assert continued(0.0, 40.0) == 0.0


def test_a_burst_is_scored_in_full_at_its_start_and_less_after() -> None:
    an = Analyzer(CFG)
    out = an.ingest(_records(), 1, 0)
    bucket = {b.timestamp // 1000 // SPAN: b for b in out.buckets}
    record = {r.timestamp // 1000 // SPAN: r for r in out.records}
    first, second = bucket[QUIET], bucket[QUIET + 1]
    r1, r2 = record[QUIET].raw_score, record[QUIET + 1].raw_score
    assert r1 - 1.0 < first.raw_score <= r1  # after noise, the first of its size: near full
    assert second.raw_score <= continued(r2, r1) < r2
    assert first.initial_anomaly_score > second.initial_anomaly_score


def _without_last_top(blob: bytes) -> bytes:
    """The snapshot as written before the episode discount: no last_top in its header."""
    payload = zlib.decompress(blob)
    head = struct.Struct("<4sII")
    magic, version, hlen = head.unpack_from(payload)
    meta = orjson.loads(payload[head.size : head.size + hlen])
    del meta["last_top"]
    header = orjson.dumps(meta)
    return zlib.compress(
        head.pack(magic, version, len(header)) + header + payload[head.size + hlen :]
    )


def test_a_snapshot_inside_a_burst_goes_on_bit_exact() -> None:
    records = _records()
    cut = QUIET + 3  # the bucket QUIET + 1 is final, QUIET + 2 still open
    whole = Analyzer(CFG)
    whole.ingest(records[:cut], 1, 0)
    assert whole.last_top is not None
    assert whole.last_top[0] == QUIET + 1
    restored = snapshots.decode(snapshots.encode(whole), CFG)
    assert restored.last_top == whole.last_top
    whole.ingest(records[cut:], 1, 0)
    restored.ingest(records[cut:], 1, 0)
    assert snapshots.encode(restored) == snapshots.encode(whole)


def test_a_snapshot_from_before_the_episode_discount_restores() -> None:
    an = Analyzer(CFG)
    an.ingest(_records()[:100], 1, 0)
    old = snapshots.decode(_without_last_top(snapshots.encode(an)), CFG)
    assert old.last_top is None  # its next bucket is scored in full
    assert np.array_equal(old.detectors[0].model.rows(), an.detectors[0].model.rows())
