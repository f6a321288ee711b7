"""A job's datafeed beside its controller: the spec turned into a runner config, the feed
started and stopped as told, its progress folded into status, engine refusals ending it,
pull errors reported once each. Real engine on a temporary store, real HTTP source on
loopback, fake clocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mljob_operator.api import DatafeedState, DatafeedStatus, MLJobSpec
from mljob_operator.datafeed import HttpQuery, PrometheusQuery, SourceAccess
from mljob_operator.datafeed.runner import Progress
from mljob_operator.datafeed_supervisor import (
    ERROR_EVENT_REPEAT_S,
    DatafeedSupervisor,
    feed_config,
)
from mljob_operator.faults import FaultInjector
from mljob_operator.runtime import JobRuntime
from mljob_operator.store import open_store
from tests.unit.polling import until
from tests.unit.test_datafeed_runner import END, T0, records, source

FEED_WAIT_S = 20.0

ANALYSIS = {"bucketSpan": "1m", "detectors": [{"function": "count"}]}


def spec(datafeed: dict[str, Any] | None) -> MLJobSpec:
    body: dict[str, Any] = {"analysisConfig": ANALYSIS}
    if datafeed is not None:
        body["datafeed"] = datafeed
    return MLJobSpec.model_validate(body)


def at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_prometheus_config_defaults_to_the_bucket_span_and_bounds_chunks() -> None:
    prom = {"url": "http://prom:9090", "query": "up"}
    config = feed_config(spec({"prometheus": prom, "start": at(T0)}))
    assert config is not None
    assert config.source == PrometheusQuery("http://prom:9090", "up", 60_000, "value")
    assert (config.frequency_ms, config.chunk_ms) == (60_000, 1000 * 60_000)
    assert config.start_ms == T0
    assert config.end_ms is None
    huge = feed_config(spec({"prometheus": {**prom, "step": "10s"}, "chunkSpan": "365d"}))
    assert huge is not None
    assert huge.chunk_ms == 10_000 * 10_000, "at most 10,000 steps a query"


def test_http_config_pulls_100_buckets_a_chunk_by_default() -> None:
    config = feed_config(
        spec({"http": {"url": "http://src/data"}, "frequency": "5m", "queryDelay": "30s"})
    )
    assert config is not None
    assert config.source == HttpQuery("http://src/data")
    assert (config.frequency_ms, config.query_delay_ms) == (300_000, 30_000)
    assert config.chunk_ms == 100 * 60_000
    assert feed_config(spec(None)) is None


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.runtime = JobRuntime(open_store(tmp_path))
        self.errors: list[str] = []
        self.reasons: list[str] = []
        self.changes = 0
        self.now_s = 0.0
        self.supervisor = DatafeedSupervisor(
            "ns/j",
            self.runtime,
            FaultInjector(None),
            clock=lambda: datetime.fromtimestamp(END / 1000, UTC) + timedelta(hours=1),
            on_change=self._changed,
            on_error=self._error,
            access=SourceAccess(1 << 20),
            monotonic=lambda: self.now_s,
        )

    def _changed(self) -> None:
        self.changes += 1

    def _error(self, reason: str, message: str) -> None:
        self.reasons.append(reason)
        self.errors.append(message)


def test_a_running_feed_posts_into_the_job_until_its_end(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        async with source() as (url, _):
            job_spec = spec({"http": {"url": url}, "start": at(T0), "end": at(END)})
            await h.runtime.load("ns/j", job_spec, accepting=True)
            recorded = DatafeedStatus(searched_until=None)
            await h.supervisor.sync(job_spec, run=False, recorded=recorded)
            assert not h.supervisor.running
            assert h.supervisor.status(recorded) is recorded, "no progress: what was recorded"

            await h.supervisor.sync(job_spec, run=True, recorded=recorded)
            await until(
                lambda: (
                    h.supervisor.progress is not None
                    and h.supervisor.progress.searched_until == END
                    and not h.supervisor.running
                ),
                "the feed to reach its end",
                FEED_WAIT_S,
            )
            status = h.supervisor.status(recorded)
            assert status is not None
            assert status.searched_until == END
            assert status.state == DatafeedState.STOPPED
            assert status.last_pull_time is not None
            assert h.changes > 0
            stats = h.runtime.stats("ns/j")
            assert stats is not None
            assert stats[0].processed_record_count == len(records(T0, END))
            assert h.errors == []

            await h.supervisor.sync(spec(None), run=True, recorded=recorded)
            assert h.supervisor.progress is None, "a removed datafeed forgets its progress"
        h.runtime.close()

    asyncio.run(asyncio.wait_for(test(), 60))


def test_a_job_that_stopped_taking_data_ends_the_feed_without_an_error(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        async with source() as (url, _):
            job_spec = spec({"http": {"url": url}, "start": at(T0), "end": at(END)})
            await h.runtime.load("ns/j", job_spec, accepting=False)
            await h.supervisor.sync(job_spec, run=True, recorded=None)
            await until(lambda: not h.supervisor.running, "the feed to stop", FEED_WAIT_S)
            assert h.errors == []
            assert h.supervisor.progress is not None
            assert h.supervisor.progress.records == 0
        h.runtime.close()

    asyncio.run(asyncio.wait_for(test(), 60))


def test_pull_errors_are_reported_once_each_then_again_after_a_while(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for _ in range(5):
        h.supervisor._error("source down")
    assert h.errors == ["source down"]
    h.supervisor._error("bad json")
    h.supervisor._error("bad json")
    assert h.errors == ["source down", "bad json"]
    h.now_s += ERROR_EVENT_REPEAT_S
    h.supervisor._error("bad json")
    assert h.errors == ["source down", "bad json", "bad json"]
    assert set(h.reasons) == {"DatafeedError"}
    h.runtime.close()


def test_status_carries_progress_over_what_was_recorded(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.supervisor.progress = Progress(searched_until=T0, running=True, last_error="boom")
    recorded = DatafeedStatus(searched_until=T0 - 1)
    status = h.supervisor.status(recorded)
    assert status is not None
    assert (status.state, status.searched_until, status.last_error) == (
        DatafeedState.STARTED,
        T0,
        "boom",
    )
    h.runtime.close()
