"""Fixtures for engine tests: a fresh store per test on each backend, and a fake clock.

Every test that takes `store` (or `store_backend`) runs twice: on SQLite and on a real
PostgreSQL cluster (one per session, started by `devtools.postgres`; each store of a test
in its own schema). `-k sqlite` or `-k postgres` picks one.
"""

from __future__ import annotations

import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from devtools.postgres import PostgresCluster
from mljob_operator.store import SQLiteStore, Store
from mljob_operator.store.postgres import PostgresStore

T0 = 1_700_000_000 - 1_700_000_000 % 86_400  # a UTC midnight
STORE_BACKENDS = ("sqlite", "postgres")


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class StoreBackend:
    """Opens a test's stores on one backend. The same (directory, name) is the same store
    when opened again, as a restarted process sees it."""

    def __init__(self, kind: str, postgres: PostgresCluster | None = None) -> None:
        self.kind = kind
        self.postgres = postgres
        self._schemas: dict[tuple[Path, str], str] = {}

    def location(self, where: Path, name: str = "mljob") -> str:
        """A SQLite file path or a PostgreSQL URL, for `open_location` (or a subprocess)."""
        if self.postgres is None:
            return str(where / f"{name}.sqlite")
        key = (where, name)
        if key not in self._schemas:
            self._schemas[key] = (
                f"{re.sub(r'[^a-z0-9]', '_', name.lower())[:30]}_{uuid.uuid4().hex[:12]}"
            )
        return self.postgres.schema_url(self._schemas[key], "mljob_tests")

    def open(self, where: Path, name: str = "mljob") -> Store:
        return open_location(self.location(where, name))


def open_location(location: str) -> Store:
    if location.startswith("postgresql:"):
        return PostgresStore(location, max_connections=4)
    return SQLiteStore(location)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as pg:
        pg.execute("CREATE DATABASE mljob_tests")
        yield pg


@pytest.fixture(scope="session", params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    if request.param == "postgres":
        return StoreBackend("postgres", request.getfixturevalue("postgres_cluster"))
    return StoreBackend("sqlite")


@pytest.fixture
def store(store_backend: StoreBackend, tmp_path: Path) -> Iterator[Store]:
    s = store_backend.open(tmp_path)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def daily_two_hosts(start: int, stop: int) -> Iterator[tuple[int, int, str, float]]:
    """(bucket, record in bucket, host, value): four records a 5-minute bucket for hosts a
    and b, a daily sine plus noise seeded by the bucket (the same values in every test)."""
    for b in range(start, stop):
        rng = np.random.default_rng(b)
        for i in range(4):
            for host in ("a", "b"):
                yield b, i, host, float(20 + 5 * np.sin(2 * np.pi * b / 288) + rng.normal())


def without_detector_field(blob: bytes, field: str) -> bytes:
    """The snapshot `blob` as written before `field` was added to its detector headers
    (for tests that older snapshots still restore, bit-exact)."""
    payload = zlib.decompress(blob)
    head = struct.Struct("<4sII")
    magic, version, hlen = head.unpack_from(payload)
    meta = orjson.loads(payload[head.size : head.size + hlen])
    for d in meta["detectors"]:
        del d[field]
    header = orjson.dumps(meta)
    return zlib.compress(
        head.pack(magic, version, len(header)) + header + payload[head.size + hlen :]
    )
