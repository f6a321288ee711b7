"""by/partition splits model each series apart; influencers are recorded on records."""

from __future__ import annotations

import numpy as np
import pytest

from mljob_operator import engine_to_api
from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, ndjson

SPAN = 300


def test_partition_and_by_values_split_series(store: Store, clock: FakeClock) -> None:
    cfg = JobConfig(
        detectors=(
            DetectorConfig("mean", "latency", by_field_name="status", partition_field_name="host"),
        ),
        influencers=("host", "user"),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
    )
    job = Job.open(store, "split", cfg, clock=clock)
    rng = np.random.default_rng(3)
    levels = {("h1", "200"): 10.0, ("h1", "500"): 50.0, ("h2", "200"): 100.0}
    records = []
    for b in range(300):
        for (host, status), level in levels.items():
            for i in range(3):
                value = level + rng.normal()
                if b == 250 and host == "h2":
                    value = level + 15.0
                user = "mallory" if b == 250 and host == "h2" else f"user{i}"
                records.append(
                    {
                        "time": T0 + b * SPAN + i,
                        "latency": value,
                        "host": host,
                        "status": status,
                        "user": user,
                    }
                )
    records.sort(key=lambda r: float(r["time"]))  # type: ignore[arg-type]
    job.post_data(ndjson(records))
    assert job.data_counts.out_of_order_timestamp_count == 0
    stats = job.model_size_stats
    assert stats.total_partition_field_count == 2
    assert stats.total_by_field_count == 2
    _, recs = store.query_records("split", ResultsQuery(min_score=50, size=100))
    assert recs, "the h2 shift must be found"
    assert {(r.partition_field_value, r.by_field_value) for r in recs} == {("h2", "200")}
    top = recs[0]
    assert top.timestamp == (T0 + 250 * SPAN) * 1000
    assert top.partition_field_name == "host"
    assert top.by_field_name == "status"
    assert top.typical[0] == pytest.approx(100.0, abs=1.0)
    influencers = {i.field_name: i.field_values for i in top.influencers}
    assert influencers == {"host": ("h2",), "user": ("mallory",)}
    api = engine_to_api.record(top).model_dump(by_alias=True)
    assert api["influencers"][0] == {"influencerFieldName": "host", "influencerFieldValues": ["h2"]}


def test_count_by_field_flags_the_silent_value(store: Store, clock: FakeClock) -> None:
    cfg = JobConfig(
        detectors=(DetectorConfig("low_count", by_field_name="service"),),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
    )
    job = Job.open(store, "dropout", cfg, clock=clock)
    records = []
    for b in range(200):
        for service in ("api", "db"):
            if service == "db" and b in (150, 151):
                continue
            records += [{"time": T0 + b * SPAN + i, "service": service} for i in range(20)]
    records.sort(key=lambda r: r["time"])
    job.post_data(ndjson(records))
    _, recs = store.query_records("dropout", ResultsQuery(min_score=25, size=100))
    assert {(r.by_field_value, r.timestamp // 1000) for r in recs} == {
        ("db", T0 + 150 * SPAN),
        ("db", T0 + 151 * SPAN),
    }
    assert all(r.actual == (0.0,) for r in recs)
