"""Model snapshots over HTTP: list, retain, revert (closed jobs only), delete (never the
active one), against the real operator and store."""

from __future__ import annotations

import json
from typing import Any

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from tests.e2e.jobs import (
    event_series,
    mljob,
    ndjson,
    post,
    set_state,
    status,
    wait_for,
    wait_state,
)


def test_snapshot_retain_revert_delete(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    base = f"/v1/namespaces/{ns}/mljobs/web"

    def call(method: str, tail: str, body: bytes | None = None) -> tuple[int, Any]:
        return op.request(method, base + tail, body, token=op.token)

    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("web"))
    wait_state(cp, ns, "web", "opened")
    records = event_series(120)
    assert post(op, ns, "web", ndjson(records[:180]))[0] == 202
    assert call("POST", "/close")[0] == 200
    first = status(cp, ns, "web")["modelSnapshotId"]
    assert call("POST", "/open")[0] == 200
    assert post(op, ns, "web", ndjson(records[180:]))[0] == 202

    code, body = call("POST", f"/modelsnapshots/{first}/_revert")
    assert code == 409, body
    assert "close it" in body["error"]["message"]
    assert call("POST", "/close")[0] == 200
    second = status(cp, ns, "web")["modelSnapshotId"]
    assert second != first

    code, page = call("GET", "/modelsnapshots?sort=timestamp&desc=true")
    assert [s["snapshotId"] for s in page["modelSnapshots"]] == [second, first]
    code, body = call(
        "POST", f"/modelsnapshots/{first}/_update", json.dumps({"retain": True}).encode()
    )
    assert code == 200, body
    assert body["model"]["retain"] is True
    assert call("GET", f"/modelsnapshots/{first}")[1]["model"]["retain"] is True

    code, body = call("DELETE", f"/modelsnapshots/{second}")
    assert code == 409, body
    assert "active" in body["error"]["message"]

    code, body = call("POST", f"/modelsnapshots/{first}/_revert?deleteInterveningResults=true")
    assert code == 200, body
    assert body["model"]["snapshotId"] == first
    code, stats = call("GET", "/stats")
    assert stats["modelSnapshotId"] == first

    def status_follows() -> bool:
        return status(cp, ns, "web")["modelSnapshotId"] == first

    wait_for(status_follows, "status.modelSnapshotId to follow the revert")
    assert call("DELETE", f"/modelsnapshots/{second}") == (200, {"acknowledged": True})
    assert call("GET", f"/modelsnapshots/{second}")[0] == 404

    set_state(cp, ns, "web", "opened")
    reopened = wait_state(cp, ns, "web", "opened")
    assert reopened["lastOpen"]["restoredSnapshotId"] == first
