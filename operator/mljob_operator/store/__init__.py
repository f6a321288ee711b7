"""Persistence for the engine: implementations of its port (`engine.persistence`).

SQLite under the operator's data directory is the embedded default.
"""

from pathlib import Path

from mljob_operator.engine.persistence import (
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
    "open_store",
]


def open_store(data_dir: Path) -> Store:
    """The store the operator runs on."""
    return SQLiteStore(data_dir / "mljobs.sqlite")
