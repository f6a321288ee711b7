"""Close and open over HTTP: the seed's selection (`*`, comma lists, `_all`,
allowNoMatch), `{"closed": true}` once the controller reports it, force as a privilege that
the admission policy also enforces, and a timeout that leaves the close going on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devtools.controlplane import REPO_ROOT, ControlPlane
from devtools.operatorproc import (
    OperatorProcess,
    service_account_token,
)
from tests.e2e.jobs import condition, event_series, mljob, ndjson, post, status, wait_state

FORCE_CLOSE_POLICY = REPO_ROOT / "manifests" / "admission" / "force-close-policy.yaml"


def close(op: OperatorProcess, ns: str, names: str, token: str, query: str = "") -> tuple[int, Any]:
    path = f"/v1/namespaces/{ns}/mljobs/{names}/close{'?' + query if query else ''}"
    return op.request("POST", path, token=token, timeout=180)


def states(cp: ControlPlane, ns: str, *names: str) -> dict[str, str]:
    return {n: status(cp, ns, n).get("state", "") for n in names}


def test_close_by_pattern_list_and_all_then_open(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    editor = service_account_token(cp, ns, "pipeline", "mljob-editor")
    jobs = ("web-1", "web-2", "db-1", "api-1")
    for name in jobs:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in jobs:
        wait_state(cp, ns, name, "opened")

    assert close(op, ns, "web-*", editor) == (200, {"closed": True})
    assert states(cp, ns, *jobs) == {
        "web-1": "closed",
        "web-2": "closed",
        "db-1": "opened",
        "api-1": "opened",
    }
    code, body = close(op, ns, "nope-*", editor, "allowNoMatch=false")
    assert code == 404, body
    assert "nope-*" in body["error"]["message"]
    assert close(op, ns, "nope-*", editor) == (200, {"closed": True})
    code, body = close(op, ns, "db-1,missing", editor)
    assert code == 404, body
    assert "missing" in body["error"]["message"]
    assert states(cp, ns, "db-1") == {"db-1": "opened"}, "nothing closes on a 404"
    code, body = close(op, ns, "Bad_Name", editor)
    assert code == 400, body

    assert close(op, ns, "db-1,web-1", editor) == (200, {"closed": True})
    assert states(cp, ns, "db-1", "api-1") == {"db-1": "closed", "api-1": "opened"}
    assert close(op, ns, "_all", editor) == (200, {"closed": True})
    assert set(states(cp, ns, *jobs).values()) == {"closed"}

    code, body = op.request("POST", f"/v1/namespaces/{ns}/mljobs/web-2/open", token=editor)
    assert (code, body) == (200, {"opened": True})
    st = status(cp, ns, "web-2")
    assert st["state"] == "opened"
    assert st["lastOpen"]["restoredSnapshotId"] == status(cp, ns, "web-2")["modelSnapshotId"]
    assert post(op, ns, "web-2", ndjson(event_series(5)), token=editor)[0] == 202


def test_force_close_needs_forceclose_and_passes_the_admission_policy(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    cp.kubectl("apply", "-f", str(FORCE_CLOSE_POLICY))
    editor = service_account_token(cp, ns, "pipeline", "mljob-editor")
    admin = service_account_token(cp, ns, "oncall", "mljob-admin")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("stuck"))
    wait_state(cp, ns, "stuck", "opened")
    assert post(op, ns, "stuck", ndjson(event_series(30)), token=editor)[0] == 202

    code, body = close(op, ns, "stuck", editor, "force=true")
    assert code == 403, body
    assert "mljobs/forceclose" in body["error"]["message"]
    assert close(op, ns, "stuck", admin, "force=true&timeout=2m") == (200, {"closed": True})
    st = status(cp, ns, "stuck")
    assert condition(st, "Closed")["reason"] == "ForceClosed"
    assert st["lastClose"]["forced"] is True
    assert st["lastHandledForceClose"]
    handled = st["lastHandledForceClose"]
    assert close(op, ns, "stuck", admin, "force=true") == (200, {"closed": True})
    assert status(cp, ns, "stuck")["lastHandledForceClose"] == handled, (
        "forcing a closed job sets no new annotation value"
    )


def test_close_timeout_is_408_and_the_close_goes_on(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns = control_plane, namespace
    op = operator_factory(MLJOB_FAULT_STEP_DELAY="1.0")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("slow"))
    wait_state(cp, ns, "slow", "opened")
    assert post(op, ns, "slow", ndjson(event_series(20)))[0] == 202
    assert op.token is not None
    code, body = close(op, ns, "slow", op.token, "timeout=1s")
    assert code == 408, body
    assert "still" in body["error"]["message"]
    assert status(cp, ns, "slow")["state"] == "closing"
    assert close(op, ns, "slow", op.token, "timeout=1m") == (200, {"closed": True})
    assert condition(status(cp, ns, "slow"), "Closed")["reason"] == "Closed"
