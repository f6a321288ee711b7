"""Prometheus metrics: events counted where they happen (closes by outcome, step
durations, engine errors, HTTP requests) and per-job figures read from the controllers'
statuses at scrape time."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from mljob_operator import metrics
from mljob_operator.api import DataCounts, DatafeedStatus, JobState, MLJobStatus
from tests.unit.test_controller import Harness, data, run
from tests.unit.test_http_server import JOB, Call, with_client


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_close_is_counted_with_its_steps(tmp_path: Path) -> None:
    async def test() -> None:
        closed = sample("mljob_closes_total", outcome="closed")
        flushes = sample("mljob_close_step_duration_seconds_count", step="flush")
        h = Harness(tmp_path)
        await h.settle()
        await h.runtime.post_data("ns/j", data(10))
        h.api.edit_spec(state="closed")
        await h.settle()
        assert sample("mljob_closes_total", outcome="closed") == closed + 1
        assert sample("mljob_close_step_duration_seconds_count", step="flush") == flushes + 1
        assert sample("mljob_close_duration_seconds_count") >= 1
        scores = h.controller.latest_scores
        assert scores is not None, "the newest final bucket's scores, kept after the close"
        assert 0 <= scores[0] <= 100
        assert 0 <= scores[1] <= 100

    run(test)


def test_engine_errors_and_refusals_are_counted(tmp_path: Path) -> None:
    async def test() -> None:
        errors = sample("mljob_engine_errors_total", action="runStep")
        refused = sample("mljob_closes_total", outcome="refused")
        h = Harness(tmp_path, fail_at="flush")
        await h.settle()
        h.api.edit_spec(state="closed")
        await h.settle()
        assert sample("mljob_engine_errors_total", action="runStep") == errors + 4
        assert sample("mljob_closes_total", outcome="refused") == refused + 1

    run(test)


def test_per_job_figures_come_from_the_statuses() -> None:
    statuses = [
        (
            "team-a",
            "web",
            MLJobStatus(
                state=JobState.OPENED,
                data_counts=DataCounts(processed_record_count=42, invalid_date_count=3),
                datafeed=DatafeedStatus(searched_until=1_000_000, last_error="boom"),
            ),
        ),
        ("team-a", "db", MLJobStatus(state=JobState.CLOSED)),
    ]
    registry = CollectorRegistry()
    scores = {("team-a", "web"): (87.5, 99.0)}
    registry.register(
        metrics.JobsCollector(
            lambda: statuses, lambda ns, job: scores.get((ns, job)), clock=lambda: 1_060.0
        )
    )
    text = generate_latest(registry).decode()
    assert 'mljob_jobs{state="opened"} 1.0' in text
    assert 'mljob_jobs{state="closed"} 1.0' in text
    assert 'mljob_records_processed_total{job="web",namespace="team-a"} 42.0' in text
    assert 'mljob_records_invalid_date_total{job="web",namespace="team-a"} 3.0' in text
    assert 'mljob_datafeed_lag_seconds{job="web",namespace="team-a"} 60.0' in text
    assert 'mljob_datafeed_failing{job="web",namespace="team-a"} 1.0' in text
    assert 'mljob_bucket_anomaly_score{job="web",namespace="team-a"} 87.5' in text
    assert 'mljob_record_score_max{job="web",namespace="team-a"} 99.0' in text
    assert 'mljob_bucket_anomaly_score{job="db"' not in text, "no bucket final yet"
    assert 'mljob_job_failed{job="web",namespace="team-a"} 0.0' in text


def test_http_requests_are_counted_by_route_template(tmp_path: Path) -> None:
    route = "/v1/namespaces/{namespace}/mljobs/{name}/results/buckets"
    before = sample("mljob_http_requests_total", route=route, code="200")
    denied = sample("mljob_http_requests_total", route=route, code="401")

    async def test(call: Call) -> None:
        assert (await call("GET", JOB + "/results/buckets", "viewer"))[0] == 200
        assert (await call("GET", JOB + "/results/buckets"))[0] == 401

    with_client(tmp_path, test)
    assert sample("mljob_http_requests_total", route=route, code="200") == before + 1
    assert sample("mljob_http_requests_total", route=route, code="401") == denied + 1
