"""Persistence for the engine: the Store protocol and its embedded SQLite default."""

from mljob_operator.store.base import (
    ActiveSnapshotError,
    CommitResult,
    JobRow,
    NotFoundError,
    ResultsQuery,
    SnapshotQuery,
    Store,
    StoreError,
    WalEntry,
    WriteBatch,
)
from mljob_operator.store.sqlite import SQLiteStore

__all__ = [
    "ActiveSnapshotError",
    "CommitResult",
    "JobRow",
    "NotFoundError",
    "ResultsQuery",
    "SQLiteStore",
    "SnapshotQuery",
    "Store",
    "StoreError",
    "WalEntry",
    "WriteBatch",
]
