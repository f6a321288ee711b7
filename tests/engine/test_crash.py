"""A process SIGKILLed after acknowledging data loses none of it on restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from tests.engine.conftest import T0, FakeClock, StoreBackend, ndjson

BATCH = 500
SPAN = 60

WRITER = textwrap.dedent(
    """
    import sys
    from mljob_operator.engine import DetectorConfig, Job, JobConfig
    from tests.engine.conftest import open_location
    from tests.engine.test_crash import CONFIG, batch

    store = open_location(sys.argv[1])
    job = Job.open(store, "crash", CONFIG, clock=lambda: 1_800_000_000.0)
    if sys.argv[2] == "snapshot-first":
        job.post_data(batch(0))
        job.persist_background_snapshot()
        print("ACK 0", flush=True)
        start = 1
    else:
        start = 0
    for n in range(start, 10_000):
        job.post_data(batch(n))
        print(f"ACK {n}", flush=True)
    """
)

CONFIG = JobConfig(
    detectors=(DetectorConfig("mean", "v", partition_field_name="p"), DetectorConfig("count")),
    bucket_span_s=SPAN,
    background_persist_interval_s=None,
)


def batch(n: int) -> bytes:
    return ndjson(
        [
            {"time": T0 + n * BATCH + i, "v": float((n * BATCH + i) % 17), "p": f"p{i % 5}"}
            for i in range(BATCH)
        ]
    )


def _kill_after(location: str, acks: int, mode: str) -> int:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'operator'}"}
    last = -1
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, location, mode],
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                last = int(line.split()[1])
                if last + 1 >= acks:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return last + 1


def _check(backend: StoreBackend, tmp_path: Path, mode: str) -> None:
    location = backend.location(tmp_path, "crash")
    if backend.postgres is not None:
        # The server may still commit the killed writer's last transaction: the restart
        # reads once its session is gone, as a replica taking over waits out the lease.
        tag = f"crash-writer-{uuid.uuid4().hex[:8]}"
        acked = _kill_after(f"{location}&application_name={tag}", 6, mode)
        backend.postgres.wait_sessions_gone(tag)
    else:
        acked = _kill_after(location, 6, mode)
    store = backend.open(tmp_path, "crash")
    job = Job.open(store, "crash", CONFIG, clock=FakeClock())
    counts = job.data_counts
    assert counts.input_record_count >= acked * BATCH
    assert counts.input_record_count % BATCH == 0
    done = counts.input_record_count // BATCH

    reference_store = backend.open(tmp_path, "reference")
    reference = Job.open(reference_store, "crash", CONFIG, clock=FakeClock())
    for n in range(done):
        reference.post_data(batch(n))
    expected = reference.data_counts
    assert (counts.processed_record_count, counts.bucket_count, counts.latest_record_timestamp) == (
        expected.processed_record_count,
        expected.bucket_count,
        expected.latest_record_timestamp,
    )
    assert store.query_buckets("crash")[0] == reference_store.query_buckets("crash")[0]
    store.close()
    reference_store.close()


def test_sigkill_loses_no_acknowledged_record(store_backend: StoreBackend, tmp_path: Path) -> None:
    _check(store_backend, tmp_path, "log-only")


def test_sigkill_after_a_snapshot_replays_the_log_after_it(
    store_backend: StoreBackend, tmp_path: Path
) -> None:
    _check(store_backend, tmp_path, "snapshot-first")
