"""The façade the operator drives: one open anomaly-detection job.

Every operation that changes the model is written ahead to the store in the same
transaction as the results it produced, before it returns; that commit is the
acknowledgement. Opening a job restores the active snapshot and replays the log written
after it, so a crash loses nothing that was acknowledged. Close housekeeping is split into
steps keyed by a close id; each step's outcome is committed with its effect, so repeating a
step (in the same process or after a restart) returns the recorded outcome and a close
produces exactly one snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from mljob_operator.engine import retention, snapshots
from mljob_operator.engine.analyzer import Analyzer, Output
from mljob_operator.engine.config import JobConfig
from mljob_operator.engine.errors import (
    EngineError,
    JobClosedError,
    JobFailedError,
    StoreWriteError,
)
from mljob_operator.engine.ingest import parse_records
from mljob_operator.engine.persistence import (
    CommitResult,
    NotFoundError,
    Rescore,
    StepRecord,
    Store,
    WriteBatch,
)
from mljob_operator.engine.results import (
    DataCounts,
    FlushResult,
    ModelSizeStats,
    ModelSnapshot,
    PruneResult,
)
from mljob_operator.engine.scoring import NOISE_RAW


@dataclass(frozen=True, slots=True)
class LatestFinal:
    timestamp: int
    anomaly_score: float
    max_record_score: float


class JobNotClosedError(EngineError):
    """The operation needs a closed job (revert to a snapshot)."""


class Job:
    """An open job: use `Job.open`, never the constructor."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        config: JobConfig,
        analyzer: Analyzer,
        *,
        active_snapshot_id: str | None,
        applied_seq: int,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.config = config
        self.analyzer: Analyzer | None = analyzer
        self.active_snapshot_id = active_snapshot_id
        self.applied_seq = applied_seq
        self.clock = clock
        self.intake_open = True
        self._failed = False
        self.latest_final: LatestFinal | None = None
        """The newest final bucket this process has finalised, for monitoring."""
        self._lock = threading.RLock()
        self._last_stats: tuple[DataCounts, ModelSizeStats] | None = None
        self._last_persist_ms = self._now_ms()

    # ---- open --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        store: Store,
        job_id: str,
        config: JobConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> Job:
        """Restore the active snapshot (or an empty model) and replay the log after it."""
        row = store.ensure_job(job_id)
        after = 0
        analyzer = Analyzer(config)
        if row.active_snapshot_id is not None:
            snap = store.get_snapshot(job_id, row.active_snapshot_id)
            if snap is not None:
                analyzer = snapshots.decode(
                    store.snapshot_state(job_id, row.active_snapshot_id), config
                )
                after = snap.wal_seq
        job = cls(
            store,
            job_id,
            config,
            analyzer,
            active_snapshot_id=row.active_snapshot_id,
            applied_seq=after,
            clock=clock,
        )
        for entry in store.wal_entries(job_id, after):
            job._replay(entry.kind, entry.payload, entry.received_ms)
            job.applied_seq = entry.seq
        analyzer.refresh_memory()
        store.commit(
            job_id,
            WriteBatch(
                intake_open=True,
                data_counts=analyzer.counts,
                model_size_stats=analyzer.model_size_stats(),
            ),
        )
        return job

    def _replay(self, kind: str, payload: bytes, received_ms: int) -> None:
        an = self._an()
        if kind == "data":
            an.ingest(parse_records(payload), len(payload), received_ms)
        elif kind == "flush":
            args = orjson.loads(payload)
            an.advance(args.get("advance_ms"), args.get("skip_ms"))
        elif kind == "finalize":
            an.finalize_all()
        else:
            raise EngineError(f"unknown log entry kind {kind!r}")

    # ---- state -------------------------------------------------------------------------
    def _an(self) -> Analyzer:
        if self.analyzer is None:
            raise JobClosedError(f"job {self.job_id} was released")
        if self._failed:
            raise JobFailedError(f"job {self.job_id} failed to persist; reopen it")
        return self.analyzer

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def failed(self) -> bool:
        """A write failed after the model changed: only a reopen from the store is right."""
        return self._failed

    @property
    def data_counts(self) -> DataCounts:
        return self._stats()[0]

    @property
    def model_size_stats(self) -> ModelSizeStats:
        return self._stats()[1]

    def _stats(self) -> tuple[DataCounts, ModelSizeStats]:
        """Consistent counts and sizes; while an operation holds the job (in a worker
        thread) the last ones taken, so a status read never waits for an ingest."""
        if self._lock.acquire(blocking=False):
            try:
                an = self._an()
                self._last_stats = (an.counts.copy(), an.model_size_stats())
            finally:
                self._lock.release()
        if self._last_stats is None:
            with self._lock:
                an = self._an()
                self._last_stats = (an.counts.copy(), an.model_size_stats())
        return self._last_stats

    def set_model_plot(self, enabled: bool) -> None:
        """Switch model plot results from the next operation on. Without the job's lock on
        purpose (a caller on an event loop must not wait for an ingest): it is one
        attribute read when a bucket is analysed, and it changes no model state, so the
        log replays the same whatever it was."""
        self.config = replace(self.config, model_plot_enabled=enabled)
        if self.analyzer is not None:
            self.analyzer.model_plot = enabled

    # ---- intake ------------------------------------------------------------------------
    def post_data(self, body: bytes) -> DataCounts:
        """Analyse NDJSON or a JSON array; the data is durable when this returns."""
        with self._lock:
            an = self._an()
            if not self.intake_open:
                raise JobClosedError(f"job {self.job_id} does not accept data")
            records = parse_records(body)
            now = self._now_ms()
            out = an.ingest(records, len(body), now)
            self._commit(out, WriteBatch(wal_kind="data", wal_payload=body, received_ms=now))
            self._maybe_persist(now)
            return an.counts.copy()

    def flush(
        self,
        calc_interim: bool = False,
        advance_time_ms: int | None = None,
        skip_time_ms: int | None = None,
    ) -> FlushResult:
        with self._lock:
            an = self._an()
            if not self.intake_open:
                raise JobClosedError(f"job {self.job_id} is closing or closed")
            if advance_time_ms is not None or skip_time_ms is not None:
                out = an.advance(advance_time_ms, skip_time_ms)
                payload = orjson.dumps({"advance_ms": advance_time_ms, "skip_ms": skip_time_ms})
                self._commit(
                    out,
                    WriteBatch(wal_kind="flush", wal_payload=payload, received_ms=self._now_ms()),
                )
            if calc_interim:
                self._commit(an.interim(), WriteBatch())
            return FlushResult(True, an.last_finalized_end_ms)

    def _commit(self, out: Output, batch: WriteBatch) -> None:
        an = self._an()
        batch.clear_interim = out.interim or out.finalized > 0
        batch.buckets = out.buckets
        batch.records = out.records
        batch.model_plot = out.model_plot
        batch.influencers = out.influencers
        if out.rescale is not None:
            bscale, rscale = out.rescale
            batch.rescore = Rescore(out.rescale_since_ms, bscale.score, rscale.score, NOISE_RAW)
        batch.data_counts = an.counts
        batch.model_size_stats = an.model_size_stats()
        result = self._write(self.job_id, batch)
        if result.wal_seq is not None:
            self.applied_seq = result.wal_seq
        self._note_latest(out)

    def _note_latest(self, out: Output) -> None:
        final = [b for b in out.buckets if not b.is_interim]
        if not final:
            return
        last = max(final, key=lambda b: b.timestamp)
        records = [
            r.initial_record_score
            for r in out.records
            if not r.is_interim and r.timestamp == last.timestamp
        ]
        self.latest_final = LatestFinal(
            last.timestamp, last.initial_anomaly_score, max(records, default=0.0)
        )

    def _write(self, job_id: str, batch: WriteBatch) -> CommitResult:
        """Commit; a refusal marks the job failed (its model may be ahead of the store)."""
        try:
            return self.store.commit(job_id, batch)
        except Exception as err:
            self._failed = True
            raise StoreWriteError(f"the store refused a write: {err}") from err
        except BaseException:
            self._failed = True
            raise

    # ---- snapshots ---------------------------------------------------------------------
    def _snapshot_id(self, now_ms: int) -> str:
        base = str(now_ms // 1000)
        sid, n = base, 0
        while self.store.get_snapshot(self.job_id, sid) is not None:
            n += 1
            sid = f"{base}-{n}"
        return sid

    def _persist(self, description: str, close_id: str | None = None) -> ModelSnapshot:
        an = self._an()
        blob = snapshots.encode(an)
        now = self._now_ms()
        sid = self._snapshot_id(now)
        snap = ModelSnapshot(
            snapshot_id=sid,
            timestamp=now,
            description=description,
            latest_record_time_stamp=an.counts.latest_record_timestamp,
            latest_result_time_stamp=(
                None if an.final_end is None else (an.final_end - 1) * an.span_ms
            ),
            snapshot_doc_count=1,
            size_bytes=len(blob),
            retain=False,
            wal_seq=self.applied_seq,
            model_size_stats=an.model_size_stats(),
            data_counts=an.counts.copy(),
        )
        self._write(
            self.job_id,
            WriteBatch(
                snapshot=snap,
                snapshot_state=blob,
                activate_snapshot=snap.snapshot_id,
                truncate_wal_through=self.applied_seq,
                close_step=None
                if close_id is None
                else StepRecord(close_id, "persist_snapshot", {"snapshot_id": sid}),
            ),
        )
        self.active_snapshot_id = snap.snapshot_id
        self._last_persist_ms = now
        return snap

    def _maybe_persist(self, now_ms: int) -> None:
        interval = self.config.background_persist_interval_s
        if interval is not None and now_ms - self._last_persist_ms >= interval * 1000:
            self._persist("State persisted due to background persistence")

    def persist_background_snapshot(self) -> ModelSnapshot:
        """Persist now (the operator's periodic persistence calls this)."""
        with self._lock:
            return self._persist("State persisted due to background persistence")

    # ---- close housekeeping ------------------------------------------------------------
    def _recorded(self, close_id: str, step: str) -> dict[str, Any] | None:
        return self.store.close_step(self.job_id, close_id, step)

    def stop_intake(self, close_id: str) -> None:
        with self._lock:
            self._an()
            self.intake_open = False
            if self._recorded(close_id, "stop_intake") is not None:
                # resumed after a restart: Job.open marked intake open again
                self._write(self.job_id, WriteBatch(intake_open=False))
                return
            self._write(
                self.job_id,
                WriteBatch(
                    intake_open=False,
                    close_id=close_id,
                    close_complete=False,
                    close_step=StepRecord(close_id, "stop_intake", {}),
                ),
            )

    def flush_buffers(self, close_id: str) -> int:
        """Records held in not yet final buckets (they are analysed as the close goes on)."""
        with self._lock:
            an = self._an()
            done = self._recorded(close_id, "flush_buffers")
            if done is not None:
                return int(done["records"])
            pending = an.pending_records()
            self._write(
                self.job_id,
                WriteBatch(close_step=StepRecord(close_id, "flush_buffers", {"records": pending})),
            )
            return pending

    def finalize_results(self, close_id: str) -> int:
        """Finalise every open bucket, the partial one included; returns how many."""
        with self._lock:
            an = self._an()
            done = self._recorded(close_id, "finalize_results")
            if done is not None:
                return int(done["buckets"])
            out = an.finalize_all()
            batch = WriteBatch(
                wal_kind="finalize",
                received_ms=self._now_ms(),
                close_step=StepRecord(close_id, "finalize_results", {"buckets": out.finalized}),
            )
            self._commit(out, batch)
            return out.finalized

    def persist_snapshot(self, close_id: str) -> ModelSnapshot:
        with self._lock:
            self._an()
            done = self._recorded(close_id, "persist_snapshot")
            if done is not None:
                found = self.store.get_snapshot(self.job_id, str(done["snapshot_id"]))
                if found is None:
                    raise EngineError(f"snapshot {done['snapshot_id']} of this close is gone")
                return found
            stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds")
            return self._persist(f"State persisted due to job close at {stamp}", close_id)

    def prune_history(self, close_id: str) -> PruneResult:
        with self._lock:
            self._an()
            done = self._recorded(close_id, "prune_history")
            if done is not None:
                return PruneResult(int(done["snapshots_deleted"]), int(done["results_deleted"]))
            return self._prune(close_id)

    def _prune(self, close_id: str | None) -> PruneResult:
        cfg = self.config
        doomed = retention.snapshots_to_delete(
            self.store.all_snapshots(self.job_id),
            retention_days=cfg.model_snapshot_retention_days,
            daily_after_days=cfg.daily_model_snapshot_retention_after_days,
            active_id=self.active_snapshot_id,
        )
        cutoff = retention.results_cutoff_ms(
            self.store.latest_bucket_ms(self.job_id), cfg.results_retention_days
        )
        results = 0 if cutoff is None else self.store.count_results_before(self.job_id, cutoff)
        outcome = PruneResult(len(doomed), results)
        self._write(
            self.job_id,
            WriteBatch(
                delete_snapshots=doomed,
                delete_results_before_ms=cutoff,
                close_complete=True if close_id is not None else None,
                close_step=None
                if close_id is None
                else StepRecord(
                    close_id,
                    "prune_history",
                    {"snapshots_deleted": len(doomed), "results_deleted": results},
                ),
            ),
        )
        return outcome

    def release(self) -> None:
        """Drop the in-memory model; acknowledged data stays in the store."""
        with self._lock:
            self.analyzer = None

    def force_close(self) -> None:
        """Close without housekeeping (the force-close path): mark closed and release."""
        with self._lock:
            self.intake_open = False
            self._write(self.job_id, WriteBatch(intake_open=False))
            self.analyzer = None


def revert_to_snapshot(
    store: Store, job_id: str, snapshot_id: str, *, delete_intervening_results: bool = False
) -> ModelSnapshot:
    """Make an older snapshot the active model of a closed job; later log entries go."""
    row = store.get_job(job_id)
    if row is None:
        raise JobNotClosedError(f"job {job_id} does not exist")
    if row.intake_open:
        raise JobNotClosedError(f"job {job_id} must be closed to revert its model")
    snap = store.get_snapshot(job_id, snapshot_id)
    if snap is None:
        raise NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")
    latest_result = snap.latest_result_time_stamp
    store.commit(
        job_id,
        WriteBatch(
            activate_snapshot=snapshot_id,
            truncate_wal_through=store.last_wal_seq(job_id),
            data_counts=snap.data_counts,
            model_size_stats=snap.model_size_stats,
            delete_results_after_ms=(
                (-1 if latest_result is None else latest_result)
                if delete_intervening_results
                else None
            ),
        ),
    )
    return snap
