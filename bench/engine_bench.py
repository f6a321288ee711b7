"""Engine benchmark: ingest throughput, close housekeeping time and snapshot size.

Each figure is printed with its target and, for ingest, as a ratio to a floor measured in
the same run on the same input: parsing the NDJSON body with the standard library's
json.loads, line by line, and nothing else. Run it with `make bench`; it asserts nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import orjson

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import SQLiteStore

T0 = 1_700_000_000 - 1_700_000_000 % 86_400
BATCH = 20_000


def _bodies(records: Sequence[Mapping[str, object]]) -> list[bytes]:
    return [
        b"\n".join(orjson.dumps(r) for r in records[i : i + BATCH])
        for i in range(0, len(records), BATCH)
    ]


def _floor(bodies: list[bytes]) -> float:
    start = time.perf_counter()
    for body in bodies:
        for line in body.split(b"\n"):
            json.loads(line)
    return time.perf_counter() - start


def _ingest(name: str, cfg: JobConfig, bodies: list[bytes], n: int, target: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite")
        job = Job.open(store, name, cfg)
        start = time.perf_counter()
        for body in bodies:
            job.post_data(body)
        took = time.perf_counter() - start
        assert job.data_counts.processed_record_count == n
        store.close()
    floor = _floor(bodies)
    rate, floor_rate = n / took, n / floor
    print(
        f"ingest {name:<16} {rate:>10,.0f} records/s  floor(json.loads) {floor_rate:>10,.0f}/s"
        f"  ratio {rate / floor_rate:5.2f}  target >= {target:,.0f}/s"
        f"  {'ok' if rate >= target else 'BELOW TARGET'}"
    )


def one_series(n: int = 300_000) -> None:
    rng = np.random.default_rng(1)
    values = 100 + 10 * rng.standard_normal(n)
    records = [{"time": T0 + i, "value": round(float(v), 3)} for i, v in enumerate(values)]
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "value"),),
        bucket_span_s=300,
        background_persist_interval_s=None,
    )
    _ingest("1 series", cfg, _bodies(records), n, 250_000)


def partitions(n: int = 200_000, hosts: int = 1000) -> None:
    rng = np.random.default_rng(2)
    values = 100 + 10 * rng.standard_normal(n)
    records = [
        {
            "time": T0 + (i // hosts) * 60 + (i % hosts) * 60 // hosts,
            "host": f"host-{i % hosts:04d}",
            "value": round(float(v), 3),
        }
        for i, v in enumerate(values)
    ]
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "value", partition_field_name="host"),),
        bucket_span_s=60,
        background_persist_interval_s=None,
    )
    _ingest(f"{hosts} partitions", cfg, _bodies(records), n, 100_000)


def housekeeping(series: int = 10_000, buckets: int = 12) -> None:
    rng = np.random.default_rng(3)
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "value", partition_field_name="host"),),
        bucket_span_s=60,
        background_persist_interval_s=None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite")
        job = Job.open(store, "hk", cfg)
        names = [f"host-{i:05d}" for i in range(series)]
        for b in range(buckets):
            values = rng.normal(100, 10, series)
            job.post_data(
                b"\n".join(
                    orjson.dumps({"time": T0 + b * 60 + 30, "host": h, "value": float(v)})
                    for h, v in zip(names, values, strict=True)
                )
            )
        steps: list[tuple[str, Callable[[str], object]]] = [
            ("stop_intake", job.stop_intake),
            ("flush_buffers", job.flush_buffers),
            ("finalize_results", job.finalize_results),
            ("persist_snapshot", job.persist_snapshot),
            ("prune_history", job.prune_history),
        ]
        timings = []
        start = time.perf_counter()
        for name, step in steps:
            t = time.perf_counter()
            step("bench")
            timings.append(f"{name} {1000 * (time.perf_counter() - t):.0f} ms")
        took = time.perf_counter() - start
        snap = store.all_snapshots("hk")[-1]
        store.close()
    print(
        f"close housekeeping, {series:,} series: {took:.3f} s (target <= 1 s)"
        f"  {'ok' if took <= 1.0 else 'ABOVE TARGET'}  [{', '.join(timings)}]"
    )
    per_series = snap.size_bytes / series
    print(
        f"snapshot: {snap.size_bytes:,} bytes, {per_series:.0f} B per series (target <= 256 B)"
        f"  {'ok' if per_series <= 256 else 'ABOVE TARGET'}"
    )


def main() -> int:
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    one_series()
    partitions()
    housekeeping()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
