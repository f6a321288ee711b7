"""Faults of the platform, through the real operator: the apiserver killed for 30 s and for
3 minutes, etcd killed and restarted, the operator SIGKILLed while ten jobs ingest.

Writers post data the whole time and keep what they were told: a 202 is an acknowledged
body, an answer lost to a timeout or a dropped connection is one of unknown fate. After the
platform returns, everything converges within 60 s: a close in progress finishes with
exactly one snapshot, every job takes data again, and each job holds every acknowledged
record (and none beyond the bodies of unknown fate).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from tests.e2e.jobs import (
    BASE_TIME,
    api_get,
    condition,
    mljob,
    ndjson,
    post,
    set_state,
    wait_for,
    wait_state,
)

RECORDS_PER_POST = 20
CONVERGE_S = 60.0


@dataclass
class Writer:
    """Posts one minute of records at a time to one job until stopped."""

    op: OperatorProcess
    namespace: str
    name: str
    acknowledged: int = 0
    unknown: int = 0
    refused: int = 0
    minute: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            start = BASE_TIME + self.minute * 60
            body = ndjson([{"time": start + i} for i in range(RECORDS_PER_POST)])
            self.minute += 1
            try:
                code, _ = post(self.op, self.namespace, self.name, body, timeout=10)
            except OSError:
                self.unknown += RECORDS_PER_POST
                code = 0
            if code == 202:
                self.acknowledged += RECORDS_PER_POST
            elif code:
                self.refused += 1
            self.stop.wait(0.2)


@contextmanager
def writing(op: OperatorProcess, namespace: str, names: list[str]) -> Iterator[list[Writer]]:
    writers = [Writer(op, namespace, n) for n in names]
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    for t in threads:
        t.start()
    try:
        yield writers
    finally:
        for w in writers:
            w.stop.set()
        for t in threads:
            t.join(timeout=120)


def assert_nothing_acknowledged_lost(op: OperatorProcess, writer: Writer) -> None:
    counts = api_get(op, writer.namespace, writer.name, "stats")["dataCounts"]
    processed = counts["processedRecordCount"]
    assert writer.acknowledged > 0
    assert writer.acknowledged <= processed <= writer.acknowledged + writer.unknown, (
        writer.name,
        processed,
        writer,
    )


def converged_close(cp: ControlPlane, op: OperatorProcess, ns: str, name: str) -> None:
    """The close finishes within CONVERGE_S; if not, the failure shows the job's status
    and the operator's and apiserver's last words."""
    deadline = time.monotonic() + CONVERGE_S
    st: dict[str, Any] = {}
    while condition(st, "Closed").get("status") != "True":
        if time.monotonic() > deadline:
            pytest.fail(
                f"{name} not closed {CONVERGE_S:.0f}s after the platform returned\n"
                f"status: {st}\noperator:\n{op.log_tail(40)}\n"
                f"kube-apiserver:\n{cp.log_tail('kube-apiserver', 20)}"
            )
        time.sleep(0.5)
        result = cp.kubectl("get", "mljob", name, "-n", ns, "-o", "json", check=False, timeout=20)
        if result.returncode == 0:
            st = json.loads(result.stdout).get("status") or {}
    assert condition(st, "Closed")["reason"] == "Closed"
    snapshots = api_get(op, ns, name, "modelsnapshots")["modelSnapshots"]
    assert [s["snapshotId"] for s in snapshots] == [st["modelSnapshotId"]], "exactly one"


def takes_data_again(writer: Writer) -> None:
    """Post until a 202 (within CONVERGE_S), counted in what the writer was told."""
    body = ndjson([{"time": BASE_TIME + (writer.minute + 1) * 60 + i} for i in range(5)])
    deadline = time.monotonic() + CONVERGE_S
    while True:
        try:
            code, _ = post(writer.op, writer.namespace, writer.name, body, timeout=10)
        except OSError:
            writer.unknown += 5
            code = 0
        if code == 202:
            writer.acknowledged += 5
            return
        assert time.monotonic() < deadline, f"{writer.name} takes no data: {code}"
        time.sleep(0.5)


def outage(
    cp: ControlPlane,
    ns: str,
    op: OperatorProcess,
    component: str,
    seconds: float,
) -> None:
    """Jobs ingest and one closes (slowly) while `component` is down for `seconds`."""
    ingesting = ["steady-1", "steady-2"]
    for name in [*ingesting, "closer"]:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in [*ingesting, "closer"]:
        wait_state(cp, ns, name, "opened")
    with writing(op, ns, [*ingesting, "closer"]) as writers:
        wait_for(lambda: all(w.acknowledged for w in writers) or None, "data acknowledged")
        writers[-1].stop.set()
        set_state(cp, ns, "closer", "closed")
        wait_state(cp, ns, "closer", "closing")
        cp.kill(component)
        time.sleep(seconds)
        cp.restart(component)
        returned = time.monotonic()
        converged_close(cp, op, ns, "closer")
    for w in writers[:-1]:
        takes_data_again(w)
    converged = time.monotonic() - returned
    assert converged < CONVERGE_S
    for w in writers:
        assert_nothing_acknowledged_lost(op, w)
    print(
        f"\n{component} down {seconds:.0f}s: converged {converged:.1f}s after its return; "
        + "; ".join(f"{w.name} {w.acknowledged} acked, {w.refused} refused" for w in writers)
    )


@pytest.mark.parametrize("seconds", [30, 180])
def test_apiserver_down_then_back(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    seconds: int,
) -> None:
    op = operator_factory(MLJOB_FAULT_STEP_DELAY="2")
    outage(control_plane, namespace, op, "kube-apiserver", seconds)


def test_etcd_restarted(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    op = operator_factory(MLJOB_FAULT_STEP_DELAY="2")
    outage(control_plane, namespace, op, "etcd", 20)


def test_sigkill_while_ten_jobs_ingest_loses_nothing_acknowledged(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns = control_plane, namespace
    names = [f"busy-{i}" for i in range(10)]
    doomed = operator_factory()
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in names:
        wait_state(cp, ns, name, "opened")
    with writing(doomed, ns, names) as writers:
        wait_for(lambda: all(w.acknowledged >= 100 for w in writers) or None, "data flowing")
        doomed.kill()
    survivor = operator_factory()
    for w in writers:
        w.op = survivor
        takes_data_again(w)
        assert_nothing_acknowledged_lost(survivor, w)
