"""Prometheus metrics of the operator and its jobs, served as plain HTTP on their own port.

Events (closes and their outcomes, step and close durations, engine errors, HTTP requests)
are counted where they happen; the state of every job (by state, its data counts, model
size and datafeed) is read at scrape time from the statuses the controllers hold, so a
scrape costs no apiserver or store request. Names start with `mljob_`; per-job series are
labelled `namespace` and `job`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mljob_operator.api import JobState, MLJobStatus

REGISTRY = CollectorRegistry(auto_describe=True)
DURATIONS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

CLOSE_SECONDS = Histogram(
    "mljob_close_duration_seconds",
    "Close housekeeping, from beginClose to closed.",
    buckets=DURATIONS,
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "mljob_close_step_duration_seconds",
    "One housekeeping step in the engine.",
    ["step"],
    buckets=DURATIONS,
    registry=REGISTRY,
)
CLOSES = Counter(
    "mljob_closes",
    "Closes by outcome: closed (housekeeping done), forced, timed_out (reported, goes on), "
    "refused (a failed job closed without force).",
    ["outcome"],
    registry=REGISTRY,
)
ENGINE_ERRORS = Counter(
    "mljob_engine_errors",
    "Engine actions that failed (each retry counts).",
    ["action"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "mljob_http_requests",
    "Data API requests by route and status code.",
    ["route", "code"],
    registry=REGISTRY,
)
INGEST_BYTES = Gauge(
    "mljob_ingest_bytes_in_flight",
    "Bytes of data bodies being read or analysed now (MLJOB_INGEST_BUDGET bounds them).",
    registry=REGISTRY,
)

JOB_CONTROLLERS = Gauge(
    "mljob_job_controllers",
    "Jobs with a controller in memory; a settled closed job has none (metadata only).",
    registry=REGISTRY,
)

JobStatuses = Callable[[], Iterable[tuple[str, str, MLJobStatus]]]
"""(namespace, name, status) of every job this process reconciles."""
LatestScores = Callable[[str, str], tuple[float, float] | None]
"""(namespace, name) → (anomaly score, highest record score) of the newest final bucket."""

PER_JOB_COUNTS = (
    ("processed_record_count", "mljob_records_processed", "Records analysed."),
    ("invalid_date_count", "mljob_records_invalid_date", "Records without a usable time."),
    ("missing_field_count", "mljob_records_missing_field", "Records missing an analysed field."),
    (
        "out_of_order_timestamp_count",
        "mljob_records_out_of_order",
        "Records older than the latency allows.",
    ),
)


class JobsCollector(Collector):
    """Per-job figures from the controllers' statuses, read at scrape time."""

    def __init__(
        self,
        statuses: JobStatuses,
        scores: LatestScores = lambda namespace, name: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.statuses, self.scores, self.clock = statuses, scores, clock

    def collect(self) -> Iterator[Metric]:
        jobs = list(self.statuses())
        by_state = GaugeMetricFamily("mljob_jobs", "Jobs by state.", labels=["state"])
        for state in JobState:
            count = sum(1 for _, _, st in jobs if st.state == state)
            by_state.add_metric([state.value], count)
        yield by_state
        labels = ["namespace", "job"]
        for field, name, text in PER_JOB_COUNTS:
            family = CounterMetricFamily(name, text, labels=labels)
            for ns, job, st in jobs:
                family.add_metric([ns, job], getattr(st.data_counts, field))
            yield family
        model = GaugeMetricFamily("mljob_model_bytes", "Memory of the model.", labels=labels)
        lag = GaugeMetricFamily(
            "mljob_datafeed_lag_seconds",
            "How far the datafeed's pulls are behind now.",
            labels=labels,
        )
        failing = GaugeMetricFamily(
            "mljob_datafeed_failing", "1 while the datafeed's pulls fail.", labels=labels
        )
        failed = GaugeMetricFamily(
            "mljob_job_failed",
            "1 while the job is failed (see its Failed condition).",
            labels=labels,
        )
        now_ms = self.clock() * 1000
        for ns, job, st in jobs:
            model.add_metric([ns, job], st.model_size_stats.model_bytes)
            failed.add_metric([ns, job], 1 if st.state == JobState.FAILED else 0)
            feed = st.datafeed
            if feed is not None:
                if feed.searched_until is not None:
                    lag.add_metric([ns, job], max(now_ms - feed.searched_until, 0) / 1000)
                failing.add_metric([ns, job], 1 if feed.last_error else 0)
        yield model
        yield failed
        yield lag
        yield failing
        yield from self._scores(jobs, labels)

    def _scores(
        self, jobs: list[tuple[str, str, MLJobStatus]], labels: list[str]
    ) -> Iterator[Metric]:
        bucket = GaugeMetricFamily(
            "mljob_bucket_anomaly_score",
            "Anomaly score (0-100, as first published) of the newest final bucket.",
            labels=labels,
        )
        record = GaugeMetricFamily(
            "mljob_record_score_max",
            "Highest record score in the newest final bucket.",
            labels=labels,
        )
        for ns, job, _ in jobs:
            latest = self.scores(ns, job)
            if latest is not None:
                bucket.add_metric([ns, job], latest[0])
                record.add_metric([ns, job], latest[1])
        yield bucket
        yield record


def watch_jobs(
    statuses: JobStatuses,
    scores: LatestScores,
    in_flight: Callable[[], int],
    controllers: Callable[[], int],
) -> None:
    """Read the jobs, their scores, the bytes in flight and the controllers held at
    scrape time."""
    REGISTRY.register(JobsCollector(statuses, scores))
    INGEST_BYTES.set_function(lambda: float(in_flight()))
    JOB_CONTROLLERS.set_function(lambda: float(controllers()))
