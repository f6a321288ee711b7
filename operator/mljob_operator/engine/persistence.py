"""The persistence port the engine needs: one transactional write, typed queries.

The engine owns this interface and the store packages implement it (`store.sqlite`,
`store.postgres`), so the dependency points one way: store → engine, never back. Every
change the engine makes goes through `Store.commit(job_id, WriteBatch)`, applied in one
transaction; that is what makes a data post durable together with the results it
produced, and each close step exactly-once together with its record. tests/engine runs
every engine test on each store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    InfluencerResult,
    ModelPlotResult,
    ModelSizeStats,
    ModelSnapshot,
    RecordResult,
)

ScoreFn = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


class StoreError(Exception):
    """A store operation failed or was refused."""


class WriteRefused(StoreError):
    """A write the store refused for now, not for what it asked (e.g. this replica no
    longer holds the job's shard): nothing was written, and the same call may succeed
    later, or on another replica."""


class NotFoundError(StoreError, KeyError):
    """The job or snapshot does not exist."""


class ActiveSnapshotError(StoreError):
    """The active model snapshot of a job cannot be deleted."""


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One acknowledged operation: a data body, or a flush/finalise that changed the model."""

    seq: int
    kind: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    active_snapshot_id: str | None
    intake_open: bool
    close_id: str | None
    close_complete: bool
    data_counts: DataCounts
    model_size_stats: ModelSizeStats
    owner_uid: str | None = None
    """The uid of the object the job's data belongs to (another object under the same
    name must not inherit it)."""


@dataclass(frozen=True, slots=True)
class Rescore:
    """Renormalise stored, final results at or after since_ms with new score functions
    (influencers are on the record scale)."""

    since_ms: int
    bucket_score: ScoreFn
    record_score: ScoreFn
    min_raw: float


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A housekeeping step done, committed with its effects so it runs exactly once."""

    close_id: str
    step: str
    result: dict[str, Any]


@dataclass(slots=True)
class WriteBatch:
    """Everything one engine operation changes; applied atomically, in this order."""

    wal_kind: str | None = None
    wal_payload: bytes = b""
    received_ms: int = 0
    clear_interim: bool = False
    buckets: list[BucketResult] = field(default_factory=list)
    records: list[RecordResult] = field(default_factory=list)
    model_plot: list[ModelPlotResult] = field(default_factory=list)
    influencers: list[InfluencerResult] = field(default_factory=list)
    rescore: Rescore | None = None
    data_counts: DataCounts | None = None
    model_size_stats: ModelSizeStats | None = None
    intake_open: bool | None = None
    close_id: str | None = None
    close_complete: bool | None = None
    snapshot: ModelSnapshot | None = None
    snapshot_state: bytes | None = None
    activate_snapshot: str | None = None
    truncate_wal_through: int | None = None
    delete_snapshots: list[str] = field(default_factory=list)
    delete_results_before_ms: int | None = None
    delete_results_after_ms: int | None = None
    close_step: StepRecord | None = None
    owner_uid: str | None = None


BUCKET_SORTS = ("timestamp", "anomaly_score", "initial_anomaly_score", "event_count", "bucket_span")
RECORD_SORTS = (
    "timestamp",
    "record_score",
    "initial_record_score",
    "probability",
    "detector_index",
)
MODEL_PLOT_SORTS = ("timestamp", "detector_index", "actual")
INFLUENCER_SORTS = (
    "timestamp",
    "influencer_score",
    "initial_influencer_score",
    "probability",
    "influencer_field_name",
    "influencer_field_value",
)
SNAPSHOT_SORTS = ("timestamp", "snapshot_id", "latest_record_time_stamp")
"""The fields results and snapshots can be sorted by (the result types' own names)."""


@dataclass(frozen=True, slots=True)
class ResultsQuery:
    """start inclusive, end exclusive (epoch ms), as the seed's results APIs; `sort` is one
    of BUCKET_SORTS or RECORD_SORTS."""

    start_ms: int | None = None
    end_ms: int | None = None
    min_score: float | None = None
    exclude_interim: bool = False
    sort: str | None = None
    desc: bool = False
    from_: int = 0
    size: int = 100


@dataclass(frozen=True, slots=True)
class ModelPlotQuery(ResultsQuery):
    """A results query (min_score unused) narrowed to one split value or two."""

    partition_field_value: str | None = None
    by_field_value: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotQuery:
    start_ms: int | None = None
    end_ms: int | None = None
    snapshot_id: str | None = None
    sort: str | None = None
    desc: bool = False
    from_: int = 0
    size: int = 100


@dataclass(frozen=True, slots=True)
class BucketSummary:
    """What a jobs table shows of one job's bucket results: how many are stored and the
    highest anomaly score among them (interim included)."""

    count: int
    max_score: float | None


@dataclass(frozen=True, slots=True)
class CommitResult:
    wal_seq: int | None
    results_deleted: int = 0
    snapshots_deleted: int = 0


class Store(Protocol):
    """Persistence of jobs, write-ahead data, results and model snapshots."""

    def close(self) -> None: ...

    # jobs
    def ensure_job(self, job_id: str) -> JobRow: ...
    def get_job(self, job_id: str) -> JobRow | None: ...
    def list_jobs(self) -> list[str]: ...
    def delete_job(self, job_id: str) -> None: ...

    # the single write path
    def commit(self, job_id: str, batch: WriteBatch) -> CommitResult: ...

    # replay and close bookkeeping
    def wal_entries(self, job_id: str, after_seq: int) -> Iterator[WalEntry]: ...
    def last_wal_seq(self, job_id: str) -> int: ...
    def close_step(self, job_id: str, close_id: str, step: str) -> dict[str, Any] | None: ...

    # snapshots
    def get_snapshot(self, job_id: str, snapshot_id: str) -> ModelSnapshot | None: ...
    def snapshot_state(self, job_id: str, snapshot_id: str) -> bytes: ...
    def list_snapshots(
        self, job_id: str, query: SnapshotQuery | None = None
    ) -> tuple[int, list[ModelSnapshot]]: ...
    def all_snapshots(self, job_id: str) -> list[ModelSnapshot]: ...
    def set_snapshot_retain(self, job_id: str, snapshot_id: str, retain: bool) -> ModelSnapshot: ...
    def delete_snapshot(self, job_id: str, snapshot_id: str) -> None: ...

    # results
    def query_buckets(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[BucketResult]]: ...
    def query_records(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[RecordResult]]: ...
    def query_model_plot(
        self, job_id: str, query: ModelPlotQuery | None = None
    ) -> tuple[int, list[ModelPlotResult]]: ...
    def query_influencers(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[InfluencerResult]]: ...
    def bucket_summaries(self, job_ids: Sequence[str]) -> dict[str, BucketSummary]:
        """The bucket figures of each of `job_ids` in one query; a job without buckets
        (or unknown to the store) is left out."""
        ...

    def latest_bucket_ms(self, job_id: str) -> int | None: ...
    def count_results_before(self, job_id: str, before_ms: int) -> int: ...
