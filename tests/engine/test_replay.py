"""bench.quality.replay gives the engine's initial bucket scores (its figures are trusted)."""

from __future__ import annotations

import numpy as np
from bench.quality.replay import bucket_scores

from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.config import DetectorConfig, JobConfig

SPAN = 300


def test_the_replay_scores_every_bucket_as_a_job_does() -> None:
    rng = np.random.default_rng(21)
    n = 3 * 288
    t = np.arange(n) * SPAN + rng.integers(0, SPAN, n)  # one row a bucket, anywhere in it
    x = 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    x[400:408] += 30.0  # a burst long enough to be taken for a shift
    x[500] -= 25.0
    x[600:603] += 15.0
    keep = np.ones(n, dtype=bool)
    keep[700:720] = False  # empty buckets
    t = np.concatenate([t[keep], t[keep][:50] + 1])  # and a second row in some buckets
    x = np.concatenate([x[keep], x[keep][:50] + 2.0])
    order = np.argsort(t, kind="stable")
    t, x = t[order], x[order]

    an = Analyzer(JobConfig(detectors=(DetectorConfig("mean", "value"),), bucket_span_s=SPAN))
    records = [{"time": int(a), "value": float(b)} for a, b in zip(t, x, strict=True)]
    out = an.ingest(records, 1, 0)
    out_end = an.advance((int(t[-1]) // SPAN + 1) * SPAN * 1000, None)
    engine = {
        b.timestamp // 1000 // SPAN: b.initial_anomaly_score
        for b in out.buckets + out_end.buckets
        if b.event_count
    }

    buckets, scores, _ = bucket_scores(t, x, SPAN)
    assert dict(zip(buckets.tolist(), scores.tolist(), strict=True)) == engine
    assert max(engine.values()) > 50.0
