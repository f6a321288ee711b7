"""Operator benchmark: how much the operator adds on top of the apiserver and the engine.

Every figure is a ratio to a floor measured in the same run on the same control plane:
- open and close latency (apply/patch → condition seen by a client) against a bare
  status-patch round trip (patch + read back: the least any reconcile can cost);
- data API throughput (HTTPS + token check + engine + durable write) against the same
  bodies posted to the engine in-process.
Run with `make bench`; it asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, install_crd_and_rbac, service_account_token
from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import SQLiteStore

NAMESPACE = "bench"
ROUNDS = 8
RECORDS = 200_000
BATCH = 20_000
T0 = 1_699_920_000


def _job(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "ml.mljob.dev/v1alpha1",
            "kind": "MLJob",
            "metadata": {"name": name},
            "spec": {
                "analysisConfig": {
                    "bucketSpan": "5m",
                    "detectors": [{"function": "mean", "fieldName": "v"}],
                }
            },
        }
    )


def _status(cp: ControlPlane, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "mljob", name, "-n", NAMESPACE, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def _until(cp: ControlPlane, name: str, state: str) -> float:
    start = time.perf_counter()
    while _status(cp, name).get("state") != state:
        time.sleep(0.01)
    return time.perf_counter() - start


def _floor_status_patch(cp: ControlPlane) -> float:
    """Patch a status field and read it back: one write, one read, as a reconcile does."""
    cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_job("floor"))
    _until(cp, "floor", "opened")
    times = []
    for i in range(ROUNDS):
        start = time.perf_counter()
        cp.kubectl(
            "patch",
            "mljob",
            "floor",
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"lastHandledForceClose": f"f{i}"}}),
        )
        _status(cp, "floor")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bodies() -> list[bytes]:
    lines = [json.dumps({"time": T0 + i, "v": (i % 97) * 0.5}) for i in range(RECORDS)]
    return ["\n".join(lines[i : i + BATCH]).encode() for i in range(0, RECORDS, BATCH)]


def _engine_floor(bodies: list[bytes]) -> float:
    config = JobConfig(detectors=(DetectorConfig("mean", field_name="v"),))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "floor.sqlite")
        job = Job.open(store, "floor", config)
        start = time.perf_counter()
        for body in bodies:
            job.post_data(body)
        took = time.perf_counter() - start
        store.close()
    return RECORDS / took


def _row(what: str, value: float, unit: str, ratio: float | None = None) -> None:
    tail = f"  ratio to floor {ratio:5.2f}" if ratio is not None else ""
    print(f"{what:<40} {value:12,.1f} {unit:<3}{tail}", flush=True)


def main() -> int:
    with ControlPlane() as cp, tempfile.TemporaryDirectory() as tmp:
        install_crd_and_rbac(cp)
        cp.kubectl("create", "namespace", NAMESPACE)
        op = OperatorProcess(cp, Path(tmp) / "data", Path(tmp) / "operator.log")
        op.start(namespace=NAMESPACE)
        try:
            floor = _floor_status_patch(cp)
            opens, closes = [], []
            for i in range(ROUNDS):
                name = f"job-{i}"
                start = time.perf_counter()
                cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_job(name))
                opens.append(time.perf_counter() - start + _until(cp, name, "opened"))
                start = time.perf_counter()
                cp.kubectl(
                    "patch",
                    "mljob",
                    name,
                    "-n",
                    NAMESPACE,
                    "--type=merge",
                    "-p",
                    '{"spec":{"state":"closed"}}',
                )
                closes.append(time.perf_counter() - start + _until(cp, name, "closed"))
            open_s, close_s = statistics.median(opens), statistics.median(closes)
            _row("floor: status patch + read back", floor * 1000, "ms")
            _row("open  (apply → opened)", open_s * 1000, "ms", open_s / floor)
            _row("close (patch → closed, 4 steps)", close_s * 1000, "ms", close_s / floor)

            token = service_account_token(cp, NAMESPACE, "bench-admin", "mljob-admin")
            cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_job("ingest"))
            _until(cp, "ingest", "opened")
            bodies = _bodies()
            start = time.perf_counter()
            for body in bodies:
                code, _ = op.request(
                    "POST", f"/v1/namespaces/{NAMESPACE}/mljobs/ingest/data", body, token=token
                )
                assert code == 202, code
            api_rate = RECORDS / (time.perf_counter() - start)
            engine_rate = _engine_floor(bodies)
            _row("data API ingest, records/s", api_rate, "", api_rate / engine_rate)
            _row("floor: engine in-process, records/s", engine_rate, "")
        finally:
            op.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
