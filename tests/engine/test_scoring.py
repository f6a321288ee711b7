"""Scores stay in [0, 100]; renormalisation rescales within its window, initial scores stay."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.engine.model import two_sided_tail
from mljob_operator.engine.scoring import Normaliser, ScoreScale
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, ndjson

SPAN = 60


def test_score_scale_is_bounded_and_monotone() -> None:
    rng = np.random.default_rng(0)
    raws = np.sort(np.concatenate([rng.exponential(3, 2000), [0, 1e-9, 299.9, 300, 1e6]]))
    for q, top in [(0, 0), (3, 10), (5.5, 7), (2.9, 300), (120, 121), (300, 300)]:
        scores = ScoreScale(q, top).score(raws)
        assert scores.min() >= 0.0
        assert scores.max() <= 100.0
        assert np.all(np.diff(scores) >= -1e-9)
    assert ScoreScale(3, 40).score_one(40) == 100.0
    assert ScoreScale(3, 40).score_one(1.0) == 0.0


def test_normaliser_forgets_maxima_outside_the_window() -> None:
    n = Normaliser(window_ms=10 * SPAN * 1000, bucket_span_ms=SPAN * 1000)
    n.observe(0, np.array([50.0]))
    assert n.scale().max_raw == 50.0
    for b in range(1, 12):
        n.observe(b * SPAN * 1000, np.array([5.0]))
    assert n.scale().max_raw == 5.0


def test_tail_probabilities_are_accurate_far_out() -> None:
    p, raw = two_sided_tail(np.array([0.0, 1.959964, 3.0, 10.0, 40.0, 1e6]))
    assert p[0] == pytest.approx(1.0, abs=1e-6)
    assert p[1] == pytest.approx(0.05, rel=1e-4)
    assert p[2] == pytest.approx(0.0026998, rel=1e-4)
    assert raw[3] == pytest.approx(-np.log10(1.5239706e-23), rel=1e-6)
    assert 300 >= raw[4] > raw[3]
    assert raw[5] == 300.0


def _job(store: Store, clock: FakeClock, window_days: int | None = None) -> Job:
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "v"),),
        bucket_span_s=SPAN,
        renormalization_window_days=window_days,
        background_persist_interval_s=None,
    )
    return Job.open(store, "norm", cfg, clock=clock)


def _post(job: Job, start: int, stop: int, spikes: dict[int, float]) -> None:
    rng = np.random.default_rng(start)
    job.post_data(
        ndjson(
            [
                {"time": T0 + b * SPAN, "v": 10 + rng.normal() + spikes.get(b, 0.0)}
                for b in range(start, stop)
            ]
        )
    )


def test_bigger_anomaly_renormalises_earlier_scores(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    _post(job, 0, 500, {400: 8.0})
    q = ResultsQuery(min_score=1, sort="anomaly_score", desc=True)
    _, before = store.query_buckets("norm", q)
    first = before[0]
    assert first.timestamp == (T0 + 400 * SPAN) * 1000
    assert first.anomaly_score == 100.0
    _post(job, 500, 700, {600: 40.0})
    _, after = store.query_buckets("norm", q)
    assert after[0].timestamp == (T0 + 600 * SPAN) * 1000
    assert after[0].anomaly_score == 100.0
    again = next(b for b in after if b.timestamp == first.timestamp)
    assert again.initial_anomaly_score == 100.0
    assert 0 < again.anomaly_score < 100.0
    _, records = store.query_records("norm", ResultsQuery(min_score=0, size=1000))
    old = next(r for r in records if r.timestamp == first.timestamp)
    assert old.initial_record_score == 100.0 > old.record_score
    for b in after:
        assert 0.0 <= b.anomaly_score <= 100.0


def test_renormalisation_leaves_results_outside_the_window(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, window_days=1)
    day = 86_400 // SPAN
    _post(job, 0, 500, {400: 8.0})
    _post(job, 500, 500 + 2 * day, {400 + 2 * day: 40.0})
    _, buckets = store.query_buckets("norm", ResultsQuery(min_score=99, size=10))
    assert [b.timestamp for b in buckets] == [
        (T0 + 400 * SPAN) * 1000,
        (T0 + (400 + 2 * day) * SPAN) * 1000,
    ]


def test_one_extreme_anomaly_in_a_short_history_scores_high() -> None:
    norm = Normaliser(window_ms=30 * 86_400_000, bucket_span_ms=300_000)
    for b in range(40):
        norm.observe(b * 300_000, np.array([0.2]))
    norm.observe(40 * 300_000, np.array([20.0]))
    scale = norm.scale()
    assert scale.score_one(20.0) == 100.0
    assert scale.score_one(0.2) == 0.0


def test_a_repeated_extreme_bucket_is_discounted_the_first_is_not() -> None:
    norm = Normaliser(window_ms=30 * 86_400_000, bucket_span_ms=300_000)
    for b in range(200):
        norm.observe(b * 300_000, np.array([0.2]))
    assert norm.discounted(40.0) == 40.0
    assert norm.discounted(1.0) == 1.0
    firsts = []
    for k in range(5):
        firsts.append(norm.discounted(40.0))
        norm.observe((200 + k) * 300_000, np.array([40.0]))
    assert firsts[0] == 40.0
    assert all(a > b for a, b in itertools.pairwise(firsts))
    assert norm.discounted(80.0) == 80.0  # bigger than anything seen: news again
    assert norm.discounted(0.5) == 0.5  # noise is left alone
