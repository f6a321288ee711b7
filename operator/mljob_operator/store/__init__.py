"""Persistence for the engine: implementations of its port (`engine.persistence`).

SQLite under the operator's data directory is the embedded default; a `postgresql://`
URL selects the PostgreSQL store, which several replicas can share.
"""

from pathlib import Path

from mljob_operator.engine.persistence import (
    ActiveSnapshotError,
    CommitResult,
    JobRow,
    ModelPlotQuery,
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
    "ModelPlotQuery",
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


def open_store(data_dir: Path, url: str | None = None, connections: int = 16) -> Store:
    """The store the operator runs on: SQLite in `data_dir`, or PostgreSQL at `url`
    (imported only then, so an embedded operator never loads psycopg)."""
    if not url:
        return SQLiteStore(data_dir / "mljobs.sqlite")
    from mljob_operator.store.postgres import PostgresStore  # noqa: PLC0415

    return PostgresStore(url, max_connections=connections)
