"""A settled closed job keeps metadata only: its controller (and kopf daemon) goes once the
close is done, and comes back for whatever changes the job (a reopen, a revert), through
the real operator. The operator's `mljob_job_controllers` gauge shows how many it holds;
the jobs' state stays visible (status, stats, `mljob_jobs`), also after a restart."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.processes import free_port
from tests.e2e.jobs import (
    api_get,
    event_series,
    mljob,
    ndjson,
    post,
    set_state,
    status,
    wait_for,
    wait_state,
)

NAMES = ["quiet-1", "quiet-2", "busy"]


def scrape(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def controllers(addr: str) -> float:
    return scrape(addr)[("mljob_job_controllers", ())]


def closed_jobs(addr: str) -> float:
    return scrape(addr).get(("mljob_jobs", (("state", "closed"),)), 0.0)


def settled(addr: str, holding: int = 0) -> Callable[[], bool]:
    return lambda: controllers(addr) == holding


def test_a_closed_job_lets_go_of_its_controller_and_gets_it_back_when_needed(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns = control_plane, namespace
    addr = f"127.0.0.1:{free_port()}"
    op = operator_factory(MLJOB_METRICS_ADDR=addr)
    base = f"/v1/namespaces/{ns}/mljobs/busy"

    def call(method: str, tail: str) -> tuple[int, Any]:
        return op.request(method, base + tail, None, token=op.token)

    for name in NAMES:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in NAMES:
        wait_state(cp, ns, name, "opened")
    assert controllers(addr) == 3
    records = event_series(120)
    assert post(op, ns, "busy", ndjson(records[:180]))[0] == 202
    assert call("POST", "/close")[0] == 200
    first = status(cp, ns, "busy")["modelSnapshotId"]
    assert call("POST", "/open")[0] == 200
    assert post(op, ns, "busy", ndjson(records[180:]))[0] == 202
    for name in NAMES:
        set_state(cp, ns, name, "closed")
    for name in NAMES:
        wait_state(cp, ns, name, "closed")
    wait_for(settled(addr), "every closed job to let go of its controller")
    second = status(cp, ns, "busy")["modelSnapshotId"]
    assert second != first
    assert closed_jobs(addr) == 3, "settled jobs still count as closed"
    assert api_get(op, ns, "busy", "stats")["state"] == "closed"
    code, body = op.request("POST", f"/v1/namespaces/{ns}/mljobs/busy/data", b"{}", token=op.token)
    assert code == 409, body

    code, body = call("POST", f"/modelsnapshots/{first}/_revert")
    assert code == 200, body
    wait_for(
        lambda: status(cp, ns, "busy")["modelSnapshotId"] == first,
        "status.modelSnapshotId of a settled job to follow the revert",
    )
    wait_for(settled(addr), "the revert's controller to settle again")

    set_state(cp, ns, "quiet-1", "opened")
    wait_state(cp, ns, "quiet-1", "opened")
    wait_for(settled(addr, holding=1), "the reopened job to hold a controller")
    assert post(op, ns, "quiet-1", ndjson(event_series(5)))[0] == 202
    assert call("POST", "/open")[0] == 200, "a settled job opens through the API"
    assert post(op, ns, "busy", ndjson(event_series(3, start=records[-1]["time"] + 60)))[0] == 202
    assert controllers(addr) == 2

    op.stop()
    addr = f"127.0.0.1:{free_port()}"
    op = operator_factory(MLJOB_METRICS_ADDR=addr)
    wait_for(lambda: closed_jobs(addr) == 1, "a restarted operator to list the settled job")
    wait_for(settled(addr, holding=2), "only the open jobs to get controllers")
    assert api_get(op, ns, "quiet-2", "stats")["state"] == "closed"
