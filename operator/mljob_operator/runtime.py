"""The engine jobs this operator process holds open, and the bridge to them.

The engine is synchronous (numpy, SQLite); everything here runs it in worker threads, one
call at a time per job (an asyncio lock each), so data posts from the HTTP API and close
housekeeping from the controller never interleave on a job. This module also converts
the pydantic API spec into the engine's plain config: the engine never sees the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mljob_operator import engine_to_api as to_api
from mljob_operator.api import (
    CloseStep,
    DataCounts,
    MLJobSpec,
    ModelSizeStats,
    parse_duration,
    parse_memory_limit,
)
from mljob_operator.api import results as api
from mljob_operator.api.results import Flushed
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.errors import ConfigError, StoreWriteError
from mljob_operator.engine.job import Job, JobNotClosedError, revert_to_snapshot
from mljob_operator.engine.persistence import (
    BucketSummary,
    ModelPlotQuery,
    ResultsQuery,
    SnapshotQuery,
    Store,
    WriteBatch,
)
from mljob_operator.engine.results import PruneResult

T = TypeVar("T")
log = logging.getLogger(__name__)


class JobNotOpenError(Exception):
    """Data was posted to a job that is not open in this process."""


class InvalidSpecError(Exception):
    """The spec passed the CRD schema but the engine cannot run it."""


class StoreUnavailableError(Exception):
    """The store refused a write; nothing of the request was acknowledged and the job was
    reopened from what the store holds (or will be, on its next call). Retry later."""


RETRY_AFTER_S = 5
DEFAULT_THREADS = 4
"""Threads for engine work, and as many for store reads: the engine holds the GIL most of
the time, so more would only queue; their own pools keep the Kubernetes client (its own
pool in `kube`) and the asyncio default executor free whatever the jobs do."""


def engine_config(spec: MLJobSpec) -> JobConfig:
    analysis = spec.analysis_config
    limit = spec.analysis_limits.model_memory_limit if spec.analysis_limits else None
    try:
        return JobConfig(
            detectors=tuple(
                DetectorConfig(
                    function=d.function.value,
                    field_name=d.field_name,
                    by_field_name=d.by_field_name,
                    partition_field_name=d.partition_field_name,
                    description=d.detector_description,
                )
                for d in analysis.detectors
            ),
            bucket_span_s=int(parse_duration(analysis.bucket_span).total_seconds()),
            latency_s=int(parse_duration(analysis.latency).total_seconds()),
            influencers=tuple(analysis.influencers),
            time_field=spec.data_description.time_field,
            time_format=spec.data_description.time_format.value,
            model_memory_limit_bytes=parse_memory_limit(limit) if limit else None,
            model_snapshot_retention_days=spec.model_snapshot_retention_days,
            daily_model_snapshot_retention_after_days=spec.effective_daily_retention_after_days,
            results_retention_days=spec.results_retention_days,
            model_plot_enabled=spec.model_plot_config.enabled,
        )
    except (ConfigError, ValueError) as err:
        raise InvalidSpecError(str(err)) from err


def _pruned(result: PruneResult) -> dict[str, Any]:
    return {"snapshots_pruned": result.snapshots_deleted, "results_pruned": result.results_deleted}


STEP_CALLS: dict[CloseStep, tuple[Callable[[Job, str], Any], Callable[[Any], dict[str, Any]]]] = {
    CloseStep.FLUSH: (Job.flush_buffers, lambda n: {"records_flushed": n}),
    CloseStep.FINALIZE_RESULTS: (Job.finalize_results, lambda n: {"buckets_finalized": n}),
    CloseStep.PERSIST_SNAPSHOT: (Job.persist_snapshot, lambda s: {"snapshot_id": s.snapshot_id}),
    CloseStep.PRUNE_HISTORY: (Job.prune_history, _pruned),
}
"""Each housekeeping step (the API's name) → the engine call that does it, and how its
result fills `status.lastClose`."""


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    job: Job | None = None
    accepting: bool = False
    config: JobConfig | None = None
    changes: int = 0
    """The runtime's change number when the job was loaded or an operation on it last
    finished (in its worker thread, so an upkeep during the operation sees it move)."""


class JobRuntime:
    def __init__(self, store: Store, threads: int = DEFAULT_THREADS) -> None:
        self._store = store
        self._engine = ThreadPoolExecutor(threads, thread_name_prefix="engine")
        self._changes = itertools.count(1)
        self._reader = ThreadPoolExecutor(threads, thread_name_prefix="store-read")
        self._slots: dict[str, _Slot] = {}
        self._reverted: dict[str, str] = {}
        self._abandoned: dict[str, asyncio.Future[None]] = {}

    async def _work(self, fn: Callable[..., T], *args: Any) -> T:
        """Engine work (and the store writes it makes) on the engine's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._engine, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Result and snapshot reads on their own threads: never behind an ingest."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def _slot(self, job_id: str) -> _Slot:
        return self._slots.setdefault(job_id, _Slot())

    def is_loaded(self, job_id: str) -> bool:
        slot = self._slots.get(job_id)
        return slot is not None and slot.job is not None

    def is_accepting(self, job_id: str) -> bool:
        slot = self._slots.get(job_id)
        return slot is not None and slot.job is not None and slot.accepting

    async def _call(self, job_id: str, slot: _Slot, fn: Callable[[Job], T]) -> T:
        """`fn(job)` in a worker thread, the slot's lock held by the caller. A store that
        refuses a write leaves no zombie: the job is reopened from the store (which holds
        exactly what was acknowledged) and the caller gets StoreUnavailableError."""
        job = await self._healthy(job_id, slot)

        def counted(job: Job) -> T:
            try:
                return fn(job)
            finally:
                slot.changes = next(self._changes)

        try:
            return await self._work(counted, job)
        except StoreWriteError as err:
            await self._reopen(job_id, slot)
            raise StoreUnavailableError(str(err)) from err

    async def _healthy(self, job_id: str, slot: _Slot) -> Job:
        if slot.job is None:
            raise JobNotOpenError(job_id)
        if slot.job.failed:
            await self._reopen(job_id, slot)
            if slot.job.failed:
                raise StoreUnavailableError(f"job {job_id} cannot be reloaded from the store")
        return slot.job

    async def _reopen(self, job_id: str, slot: _Slot) -> None:
        """Replace a failed job by one reopened from the store; keep it if that fails too
        (the next call tries again)."""
        config = slot.config
        if config is None:
            return
        try:
            slot.job = await self._work(self._reopened, job_id, config, slot.accepting)
            slot.changes = next(self._changes)
        except Exception:
            log.exception("%s: reopening from the store failed; will retry", job_id)

    def _reopened(self, job_id: str, config: JobConfig, accepting: bool) -> Job:
        """The job as the store has it; a close in progress keeps its intake stopped."""
        job = Job.open(self._store, job_id, config)
        row = self._store.get_job(job_id)
        if not accepting and row is not None and row.close_id and not row.close_complete:
            job.stop_intake(row.close_id)
        return job

    async def load(
        self, job_id: str, spec: MLJobSpec, *, accepting: bool, uid: str | None = None
    ) -> str | None:
        """Open the engine job (restore the latest snapshot, replay after it); returns
        the restored snapshot id. Data another object of the same name left behind (its
        finalizer removed by hand) is purged first, never inherited."""
        config = engine_config(spec)
        await self._settle(job_id)
        slot = self._slot(job_id)
        async with slot.lock:
            if slot.job is None:
                await self._work(self._claim, job_id, uid)
                slot.job = await self._work(Job.open, self._store, job_id, config)
                slot.config = config
                slot.changes = next(self._changes)
            slot.accepting = accepting
            return slot.job.active_snapshot_id

    def apply_live_spec(self, job_id: str, spec: MLJobSpec) -> None:
        """Carry the spec fields an open job may change (modelPlotConfig) to its engine
        job, from its next bucket; a reopen after a store failure keeps them too."""
        slot = self._slots.get(job_id)
        if slot is None or slot.job is None or slot.config is None:
            return
        enabled = spec.model_plot_config.enabled
        if slot.config.model_plot_enabled != enabled:
            slot.config = dataclasses.replace(slot.config, model_plot_enabled=enabled)
            slot.job.set_model_plot(enabled)

    def _claim(self, job_id: str, uid: str | None) -> None:
        if uid is None:
            return
        row = self._store.get_job(job_id)
        if row is not None and row.owner_uid not in (None, uid):
            self._store.delete_job(job_id)
            row = None
        if row is None or row.owner_uid != uid:
            self._store.commit(job_id, WriteBatch(owner_uid=uid))

    async def post_data(self, job_id: str, body: bytes) -> DataCounts:
        slot = self._slot(job_id)
        async with slot.lock:
            if slot.job is None or not slot.accepting:
                raise JobNotOpenError(job_id)
            counts = await self._call(job_id, slot, lambda job: job.post_data(body))
        return to_api.data_counts(counts)

    async def flush(
        self, job_id: str, calc_interim: bool, advance_ms: int | None, skip_ms: int | None
    ) -> Flushed:
        slot = self._slot(job_id)
        async with slot.lock:
            if slot.job is None or not slot.accepting:
                raise JobNotOpenError(job_id)
            result = await self._call(
                job_id, slot, lambda job: job.flush(calc_interim, advance_ms, skip_ms)
            )
        return to_api.flushed(result)

    async def stop_intake(self, job_id: str, close_id: str) -> None:
        slot = self._slot(job_id)
        async with slot.lock:
            slot.accepting = False
            if slot.job is not None:
                await self._call(job_id, slot, lambda job: job.stop_intake(close_id))

    async def run_step(self, job_id: str, close_id: str, step: CloseStep) -> dict[str, Any]:
        """One housekeeping step; returns the CloseRecord fields it fills in."""
        run, record = STEP_CALLS[step]
        slot = self._slot(job_id)
        async with slot.lock:
            done = await self._call(job_id, slot, lambda job: run(job, close_id))
        return record(done)

    async def release(self, job_id: str) -> None:
        slot = self._slots.pop(job_id, None)
        if slot is None:
            return
        async with slot.lock:
            if slot.job is not None:
                await self._work(slot.job.release)
            slot.job = None
            slot.accepting = False

    async def force_close(self, job_id: str) -> None:
        """Close without housekeeping, durably (the store marks intake closed, so a
        revert sees a closed job), and drop the in-memory model."""
        slot = self._slots.pop(job_id, None)
        if slot is not None and slot.job is not None:
            job = slot.job
            async with slot.lock:
                await self._work(job.force_close)
            return
        await self._work(self._close_intake, job_id)

    def _close_intake(self, job_id: str) -> None:
        """Mark intake closed in the store; a job without data (or deleted) gets no row."""
        if self._store.get_job(job_id) is not None:
            self._store.commit(job_id, WriteBatch(intake_open=False))

    async def revert(
        self, job_id: str, snapshot_id: str, delete_intervening_results: bool
    ) -> api.ModelSnapshot:
        """Make an older snapshot the model of a closed job, holding the job's lock so a
        reopen cannot interleave; refused (JobNotClosedError) while it is loaded. A close
        step abandoned by a force-close finishes first (it could still write a snapshot)."""
        await self._settle(job_id)
        slot = self._slot(job_id)
        async with slot.lock:
            if slot.job is not None:
                raise JobNotClosedError(f"job {job_id} is open; close it before reverting")
            snapshot = await self._work(
                functools.partial(
                    revert_to_snapshot,
                    self._store,
                    job_id,
                    snapshot_id,
                    delete_intervening_results=delete_intervening_results,
                )
            )
        self._reverted[job_id] = snapshot.snapshot_id
        return to_api.model_snapshot(snapshot)

    def reverted(self, job_id: str) -> bool:
        """Whether the job was reverted since `take_reverted` was last called."""
        return job_id in self._reverted

    def take_reverted(self, job_id: str) -> str | None:
        """The snapshot a closed job was reverted to since the last call, for its status."""
        return self._reverted.pop(job_id, None)

    async def abandon(self, job_id: str, step: asyncio.Future[Any]) -> None:
        """Force-close a job while a housekeeping step still runs in a worker thread
        (which cannot be interrupted): the store says closed at once, the job object is
        detached and force-closed when the step returns; a reopen waits for that."""
        slot = self._slots.pop(job_id, None)

        async def finish() -> None:
            with contextlib.suppress(Exception):
                await step
            if slot is not None and slot.job is not None:
                async with slot.lock:
                    await self._work(slot.job.force_close)

        self._abandoned[job_id] = asyncio.ensure_future(finish())
        await self._work(self._close_intake, job_id)

    async def _settle(self, job_id: str) -> None:
        pending = self._abandoned.pop(job_id, None)
        if pending is not None:
            await pending

    async def delete_data(self, job_id: str) -> None:
        await self._settle(job_id)
        await self.release(job_id)
        await self._work(self._store.delete_job, job_id)

    def changes(self, job_id: str) -> int | None:
        """A number that moves whenever an operation may have changed the loaded job's
        counts or model (None when it is not loaded): equal numbers, equal stats."""
        slot = self._slots.get(job_id)
        return slot.changes if slot is not None and slot.job is not None else None

    def stats(self, job_id: str) -> tuple[DataCounts, ModelSizeStats] | None:
        """The live counts of a job loaded in this process."""
        slot = self._slots.get(job_id)
        if slot is None or slot.job is None or slot.job.failed:
            return None
        job = slot.job
        return to_api.data_counts(job.data_counts), to_api.model_size_stats(job.model_size_stats)

    def latest_scores(self, job_id: str) -> tuple[float, float] | None:
        """(anomaly score, highest record score) of the newest bucket this process
        finalised for the job, as first published; None when it has none yet."""
        slot = self._slots.get(job_id)
        latest = slot.job.latest_final if slot is not None and slot.job is not None else None
        return None if latest is None else (latest.anomaly_score, latest.max_record_score)

    async def recorded_stats(self, job_id: str) -> tuple[DataCounts, ModelSizeStats, str | None]:
        """Counts (live when loaded, else as stored) and the active snapshot id."""
        row = await self._read(self._store.get_job, job_id)
        active = row.active_snapshot_id if row is not None else None
        live = self.stats(job_id)
        if live is not None:
            return *live, active
        if row is None:
            return DataCounts(), ModelSizeStats(), None
        return (
            to_api.data_counts(row.data_counts),
            to_api.model_size_stats(row.model_size_stats),
            active,
        )

    def analysed_until(self, job_id: str) -> int | None:
        """Epoch ms before which the job takes no more data: just after its latest record,
        or the end of its last final bucket if later (None when it has neither)."""
        slot = self._slots.get(job_id)
        if slot is None or slot.job is None or slot.job.analyzer is None:
            return None
        analyzer = slot.job.analyzer
        latest = analyzer.counts.latest_record_timestamp
        after_latest = None if latest is None else latest + 1
        bounds = [b for b in (after_latest, analyzer.last_finalized_end_ms) if b is not None]
        return max(bounds, default=None)

    def close(self) -> None:
        self._engine.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._store.close()

    # -- reading what the store keeps (open or closed jobs alike) ---------------------

    def known(self, job_id: str) -> bool:
        """Whether the store holds this job (it may not be loaded in this process)."""
        return self._store.get_job(job_id) is not None

    async def buckets(self, job_id: str, query: ResultsQuery) -> api.BucketPage:
        count, items = await self._read(self._store.query_buckets, job_id, query)
        return api.BucketPage(count=count, buckets=[to_api.bucket(b) for b in items])

    async def records(self, job_id: str, query: ResultsQuery) -> api.RecordPage:
        count, items = await self._read(self._store.query_records, job_id, query)
        return api.RecordPage(count=count, records=[to_api.record(r) for r in items])

    async def model_plot(self, job_id: str, query: ModelPlotQuery) -> api.ModelPlotPage:
        count, items = await self._read(self._store.query_model_plot, job_id, query)
        return api.ModelPlotPage(count=count, model_plot=[to_api.model_plot(m) for m in items])

    async def influencers(self, job_id: str, query: ResultsQuery) -> api.InfluencerPage:
        count, items = await self._read(self._store.query_influencers, job_id, query)
        return api.InfluencerPage(count=count, influencers=[to_api.influencer(i) for i in items])

    async def bucket_summaries(self, job_ids: list[str]) -> dict[str, BucketSummary]:
        """The bucket count and highest score of several jobs in one store read."""
        return await self._read(self._store.bucket_summaries, job_ids)

    async def snapshots(self, job_id: str, query: SnapshotQuery) -> api.ModelSnapshotPage:
        count, items = await self._read(self._store.list_snapshots, job_id, query)
        return api.ModelSnapshotPage(
            count=count, model_snapshots=[to_api.model_snapshot(s) for s in items]
        )

    async def snapshot(self, job_id: str, snapshot_id: str) -> api.ModelSnapshot | None:
        found = await self._read(self._store.get_snapshot, job_id, snapshot_id)
        return None if found is None else to_api.model_snapshot(found)

    async def retain_snapshot(
        self, job_id: str, snapshot_id: str, retain: bool
    ) -> api.ModelSnapshot:
        updated = await self._work(self._store.set_snapshot_retain, job_id, snapshot_id, retain)
        return to_api.model_snapshot(updated)

    async def delete_snapshot(self, job_id: str, snapshot_id: str) -> None:
        await self._work(self._store.delete_snapshot, job_id, snapshot_id)
