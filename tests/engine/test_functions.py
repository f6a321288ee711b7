"""Every detector function: what it measures per bucket and which side it flags."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.engine.analyzer import Analyzer
from mljob_operator.engine.functions import FUNCTIONS, Side
from mljob_operator.engine.ingest import parse_records
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, ndjson

SPAN = 60
HIGH_AT, LOW_AT, BUCKETS = 200, 300, 360


def _values(function: str, records: list[dict[str, Any]]) -> float:
    needs = FUNCTIONS[function].needs_field
    field = ("u" if "distinct" in function else "v") if needs else None
    an = Analyzer(JobConfig(detectors=(DetectorConfig(function, field),), bucket_span_s=SPAN))
    an.ingest(parse_records(ndjson(records)), 0, 0)
    d = an.detectors[0]
    idx, x = d.values(d.open[T0 // SPAN])
    assert idx.tolist() == [0]
    return float(x[0])


BUCKET = [
    {"time": T0 + 1, "v": 1.0, "u": "a"},
    {"time": T0 + 2, "v": 5.0, "u": "b"},
    {"time": T0 + 3, "v": 3.0, "u": "a"},
    {"time": T0 + 4, "v": 2.0, "u": "c"},
    {"time": T0 + 5, "u": "c"},
]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("count", 5),
        ("high_count", 5),
        ("low_count", 5),
        ("non_zero_count", 5),
        ("distinct_count", 3),
        ("high_distinct_count", 3),
        ("mean", 2.75),
        ("high_mean", 2.75),
        ("low_mean", 2.75),
        ("sum", 11.0),
        ("high_sum", 11.0),
        ("low_sum", 11.0),
        ("non_null_sum", 11.0),
        ("min", 1.0),
        ("max", 5.0),
        ("median", 2.5),
        ("high_median", 2.5),
    ],
)
def test_bucket_metric(function: str, expected: float) -> None:
    assert _values(function, BUCKET) == pytest.approx(expected)


def test_median_of_odd_count() -> None:
    assert _values("median", BUCKET[:3]) == 3.0


@pytest.mark.parametrize(
    ("function", "fills"),
    [
        ("count", True),
        ("sum", True),
        ("non_zero_count", False),
        ("mean", False),
        ("non_null_sum", False),
        ("max", False),
    ],
)
def test_empty_buckets_are_zero_only_for_count_and_sum(function: str, fills: bool) -> None:
    field = None if "count" in function else "v"
    an = Analyzer(JobConfig(detectors=(DetectorConfig(function, field),), bucket_span_s=SPAN))
    an.ingest(parse_records(ndjson([{"time": T0, "v": 1}])), 0, 0)
    idx, x = an.detectors[0].values(None)
    assert (idx.tolist(), x.tolist()) == (([0], [0.0]) if fills else ([], []))


def _series(function: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    spec = FUNCTIONS[function]
    records: list[dict[str, Any]] = []
    for b in range(BUCKETS):
        t = T0 + b * SPAN
        if spec.metric.value == "count":
            n = 80 if b == HIGH_AT else 2 if b == LOW_AT else int(rng.poisson(20))
            records += [{"time": t + i % SPAN} for i in range(n)]
        elif spec.metric.value == "distinct":
            k = 40 if b == HIGH_AT else 1 if b == LOW_AT else 10
            records += [{"time": t + i, "u": f"u{i % k}"} for i in range(40)]
        else:
            shift = 25.0 if b == HIGH_AT else -25.0 if b == LOW_AT else 0.0
            records += [{"time": t + i, "v": 10.0 + shift + float(rng.normal())} for i in range(10)]
    return records


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_function_flags_only_its_side(store: Store, clock: FakeClock, function: str) -> None:
    spec = FUNCTIONS[function]
    field = ("u" if spec.metric.value == "distinct" else "v") if spec.needs_field else None
    cfg = JobConfig(
        detectors=(DetectorConfig(function, field),),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
    )
    job = Job.open(store, function, cfg, clock=clock)
    job.post_data(ndjson(_series(function, np.random.default_rng(7))))
    _, records = store.query_records(function, ResultsQuery(size=1000, min_score=1.0))
    flagged = {r.timestamp // 1000 for r in records}
    high, low = T0 + HIGH_AT * SPAN, T0 + LOW_AT * SPAN
    assert (high in flagged) == (spec.side in (Side.BOTH, Side.HIGH))
    assert (low in flagged) == (spec.side in (Side.BOTH, Side.LOW))
    top = max(records, key=lambda r: r.record_score)
    assert top.timestamp // 1000 in (high, low)
    assert top.function == function
    assert top.field_name == field
    for r in records:
        if r.timestamp // 1000 == high:
            assert r.actual[0] > r.typical[0]
        if r.timestamp // 1000 == low:
            assert r.actual[0] < r.typical[0]
