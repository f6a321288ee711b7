"""The bridge between the controller and the engine: spec → engine config, one job's calls
serialised, intake open or closed, close steps mapped to status fields, force-close and
revert on a real engine over a temporary SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest

from mljob_operator.api import CloseStep, MLJobSpec
from mljob_operator.engine.job import JobNotClosedError
from mljob_operator.engine.persistence import CommitResult, ResultsQuery, SnapshotQuery, WriteBatch
from mljob_operator.runtime import (
    InvalidSpecError,
    JobNotOpenError,
    JobRuntime,
    StoreUnavailableError,
    engine_config,
)
from mljob_operator.store import SQLiteStore, open_store

T0 = 1_764_547_200  # 2025-12-01T00:00:00Z
SPEC = MLJobSpec.model_validate(
    {"analysisConfig": {"bucketSpan": "1m", "detectors": [{"function": "count"}]}}
)


def run(work: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(work, timeout=30))


def data(minutes: int, start: int = T0) -> bytes:
    return b"\n".join(orjson.dumps({"time": start + 30 * i}) for i in range(2 * minutes))


async def closed_with_snapshot(runtime: JobRuntime, job_id: str) -> str:
    """Run every close step of a loaded job (close id c1), release it, and return the id
    of the snapshot the close persisted."""
    await runtime.stop_intake(job_id, "c1")
    done = [await runtime.run_step(job_id, "c1", step) for step in CloseStep]
    await runtime.release(job_id)
    return next(str(fields["snapshot_id"]) for fields in done if "snapshot_id" in fields)


def test_engine_config_from_the_spec() -> None:
    spec = MLJobSpec.model_validate(
        {
            "analysisConfig": {
                "bucketSpan": "90s",
                "latency": "1m",
                "detectors": [{"function": "mean", "fieldName": "v", "byFieldName": "host"}],
                "influencers": ["host"],
            },
            "dataDescription": {"timeField": "@t", "timeFormat": "epoch_ms"},
            "analysisLimits": {"modelMemoryLimit": "64mb"},
            "modelSnapshotRetentionDays": 3,
            "dailyModelSnapshotRetentionAfterDays": 7,
        }
    )
    config = engine_config(spec)
    assert (config.bucket_span_s, config.latency_s) == (90, 60)
    assert config.detectors[0].function == "mean"
    assert config.detectors[0].by_field_name == "host"
    assert (config.time_field, config.time_format) == ("@t", "epoch_ms")
    assert config.model_memory_limit_bytes == 64 * 1024 * 1024
    assert config.daily_model_snapshot_retention_after_days == 3, "capped as documented"


def test_a_spec_the_engine_rejects_is_an_invalid_spec_error() -> None:
    spec = MLJobSpec.model_validate(
        {**SPEC.model_dump(by_alias=True), "analysisLimits": {"modelMemoryLimit": "0mb"}}
    )
    with pytest.raises(InvalidSpecError, match="memory limit"):
        engine_config(spec)


def test_data_flows_only_while_intake_is_open_and_steps_fill_the_close_record(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        with pytest.raises(JobNotOpenError):
            await runtime.post_data("ns/j", data(1))
        assert await runtime.load("ns/j", SPEC, accepting=True) is None, "a new model"
        counts = await runtime.post_data("ns/j", data(10))
        assert counts.processed_record_count == 20
        assert runtime.analysed_until("ns/j") == (T0 + 30 * 19) * 1000 + 1
        await runtime.flush("ns/j", True, None, None)

        await runtime.stop_intake("ns/j", "c1")
        assert not runtime.is_accepting("ns/j")
        with pytest.raises(JobNotOpenError):
            await runtime.post_data("ns/j", data(1, T0 + 600))
        fields = {}
        for step in CloseStep:
            fields.update(await runtime.run_step("ns/j", "c1", step))
        assert set(fields) == {
            "records_flushed",
            "buckets_finalized",
            "snapshot_id",
            "snapshots_pruned",
            "results_pruned",
        }
        assert fields["buckets_finalized"] >= 1
        assert fields["snapshots_pruned"] == 0
        again = await runtime.run_step("ns/j", "c1", CloseStep.PERSIST_SNAPSHOT)
        assert again == {"snapshot_id": fields["snapshot_id"]}, "a step is done once per close"

        live = runtime.stats("ns/j")
        assert live is not None
        assert live[0].processed_record_count == 20
        assert live[1].model_bytes > 0
        await runtime.release("ns/j")
        assert runtime.stats("ns/j") is None
        assert runtime.known("ns/j")
        buckets = await runtime.buckets("ns/j", ResultsQuery(size=100))
        assert buckets.count == len(buckets.buckets) >= 9
        snaps = await runtime.snapshots("ns/j", SnapshotQuery())
        assert [s.snapshot_id for s in snaps.model_snapshots] == [fields["snapshot_id"]]

        assert await runtime.load("ns/j", SPEC, accepting=True) == fields["snapshot_id"]
        runtime.close()

    run(test())


def test_force_close_is_durable_and_revert_needs_a_closed_job(tmp_path: Path) -> None:
    async def test() -> None:
        store = open_store(tmp_path)
        runtime = JobRuntime(store)
        await runtime.load("ns/j", SPEC, accepting=True)
        await runtime.post_data("ns/j", data(5))
        first = await closed_with_snapshot(runtime, "ns/j")
        await runtime.load("ns/j", SPEC, accepting=True)
        with pytest.raises(JobNotClosedError):
            await runtime.revert("ns/j", first, delete_intervening_results=False)
        await runtime.post_data("ns/j", data(5, T0 + 600))
        await runtime.force_close("ns/j")
        assert not runtime.is_loaded("ns/j")
        row = store.get_job("ns/j")
        assert row is not None
        assert row.intake_open is False, "the store says closed: a restart will not reopen it"
        reverted = await runtime.revert("ns/j", first, delete_intervening_results=True)
        assert reverted.snapshot_id == first
        assert runtime.take_reverted("ns/j") == first
        assert runtime.take_reverted("ns/j") is None

        await runtime.delete_data("ns/j")
        assert not runtime.known("ns/j")
        runtime.close()

    run(test())


def test_calls_on_one_job_never_interleave(tmp_path: Path) -> None:
    async def test() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        await runtime.load("ns/j", SPEC, accepting=True)
        bodies = [data(1, T0 + 60 * i) for i in range(20)]
        results = await asyncio.gather(*(runtime.post_data("ns/j", b) for b in bodies))
        assert sorted(r.processed_record_count for r in results) == list(range(2, 42, 2))
        runtime.close()

    run(test())


def test_the_change_number_moves_when_an_operation_has_finished(tmp_path: Path) -> None:
    """An upkeep that runs while an ingest holds the job sees the counts from before it;
    the number moves only once the ingest is done, so the next upkeep looks again."""

    async def test() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        assert runtime.changes("ns/j") is None, "not loaded"
        await runtime.load("ns/j", SPEC, accepting=True)
        loaded = runtime.changes("ns/j")
        assert loaded is not None
        entered, leave = threading.Event(), threading.Event()
        job = runtime._slots["ns/j"].job
        assert job is not None
        post = job.post_data

        def held_post(body: bytes) -> Any:
            entered.set()
            assert leave.wait(10)
            return post(body)

        job.post_data = held_post  # type: ignore[method-assign]
        posting = asyncio.ensure_future(runtime.post_data("ns/j", data(5)))
        assert await asyncio.to_thread(entered.wait, 10)
        assert runtime.changes("ns/j") == loaded, "still running"
        leave.set()
        await posting
        assert runtime.changes("ns/j") != loaded
        await runtime.release("ns/j")
        assert runtime.changes("ns/j") is None
        runtime.close()

    run(test())


def test_a_revert_waits_for_a_close_step_abandoned_by_a_force_close(tmp_path: Path) -> None:
    async def test() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        await runtime.load("ns/j", SPEC, accepting=True)
        await runtime.post_data("ns/j", data(5))
        await runtime.stop_intake("ns/j", "c1")
        first = {}
        for step in CloseStep:
            first.update(await runtime.run_step("ns/j", "c1", step))
        await runtime.release("ns/j")
        await runtime.load("ns/j", SPEC, accepting=True)
        await runtime.post_data("ns/j", data(5, T0 + 600))
        release = asyncio.Event()

        async def stuck_step() -> None:
            await release.wait()

        step = asyncio.ensure_future(stuck_step())
        await runtime.abandon("ns/j", step)
        reverting = asyncio.ensure_future(
            runtime.revert("ns/j", str(first["snapshot_id"]), delete_intervening_results=True)
        )
        await asyncio.sleep(0.05)
        assert not reverting.done(), "the revert waits for the abandoned step"
        release.set()
        reverted = await asyncio.wait_for(reverting, 10)
        assert reverted.snapshot_id == first["snapshot_id"]
        runtime.close()

    run(test())


def test_nothing_recreates_a_deleted_job(tmp_path: Path) -> None:
    async def test() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        await runtime.load("ns/j", SPEC, accepting=True, uid="u1")
        await runtime.post_data("ns/j", data(5))
        await runtime.delete_data("ns/j")
        await runtime.force_close("ns/j")
        assert not runtime.known("ns/j")
        await runtime.force_close("ns/never")
        assert not runtime.known("ns/never"), "force-closing a job without data stores nothing"
        runtime.close()

    run(test())


class FlakyStore(SQLiteStore):
    """A real SQLite store whose commits fail while `full` is set, as on a full disk."""

    full = False

    def commit(self, job_id: str, batch: WriteBatch) -> CommitResult:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return super().commit(job_id, batch)


def test_a_refused_store_write_answers_unavailable_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        store = FlakyStore(tmp_path / "flaky.sqlite")
        runtime = JobRuntime(store)
        await runtime.load("ns/j", SPEC, accepting=True)
        acknowledged = (await runtime.post_data("ns/j", data(10))).processed_record_count
        store.full = True
        with pytest.raises(StoreUnavailableError, match="disk is full"):
            await runtime.post_data("ns/j", data(10, T0 + 600))
        with pytest.raises(StoreUnavailableError):
            await runtime.flush("ns/j", False, (T0 + 3600) * 1000, None)
        assert runtime.is_accepting("ns/j"), "the job stays open"
        assert runtime.stats("ns/j") is None, "no figures from a model ahead of the store"

        store.full = False
        counts = await runtime.post_data("ns/j", data(10, T0 + 600))
        assert counts.processed_record_count == acknowledged + 20, (
            "reloaded from what was acknowledged, and it carries on"
        )
        await runtime.release("ns/j")
        await runtime.load("ns/j", SPEC, accepting=True)
        replayed = runtime.stats("ns/j")
        assert replayed is not None
        assert replayed[0].processed_record_count == acknowledged + 20
        runtime.close()

    run(test())


def test_a_close_step_the_store_refuses_is_retried_after_a_reload(tmp_path: Path) -> None:
    async def test() -> None:
        store = FlakyStore(tmp_path / "flaky.sqlite")
        runtime = JobRuntime(store)
        await runtime.load("ns/j", SPEC, accepting=True)
        await runtime.post_data("ns/j", data(10))
        await runtime.stop_intake("ns/j", "c1")
        store.full = True
        with pytest.raises(StoreUnavailableError):
            await runtime.run_step("ns/j", "c1", CloseStep.FLUSH)
        store.full = False
        fields = {}
        for step in CloseStep:
            fields.update(await runtime.run_step("ns/j", "c1", step))
        assert fields["snapshot_id"]
        assert len(store.all_snapshots("ns/j")) == 1
        runtime.close()

    run(test())
