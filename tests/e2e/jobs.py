"""Helpers for end-to-end tests of MLJobs: manifests, status reads, polling with deadlines."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess

T = TypeVar("T")
INVALID_LIMITS = {"analysisLimits": {"modelMemoryLimit": "0mb"}}
"""Passes the CRD and the models but not the engine: a model needs some memory."""
BASE_TIME = 1_699_999_800  # epoch seconds, on a 5-minute bucket boundary


def mljob(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "ml.mljob.dev/v1alpha1",
        "kind": "MLJob",
        "metadata": {"name": name},
        "spec": {
            "analysisConfig": {
                "bucketSpan": "5m",
                "detectors": [{"function": "count", "detectorDescription": "event rate"}],
            },
            **spec,
        },
    }
    return json.dumps(body)


def get(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "mljob", name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    st: dict[str, Any] = get(cp, namespace, name).get("status") or {}
    return st


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    found = next((c for c in st.get("conditions", []) if c["type"] == type_), None)
    return found or {}


def wait_for(fn: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def eventually(
    probe: Callable[[], subprocess.CompletedProcess[str]], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Retry a kubectl call until it succeeds (e.g. discovery catching up with a new CRD)
    or the deadline passes; returns the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def wait_state(
    cp: ControlPlane, namespace: str, name: str, state: str, timeout: float = 60.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status(cp, namespace, name)
        return st if st.get("state") == state else None

    return wait_for(check, f"{namespace}/{name} to be {state}", timeout)


def wait_reason(
    cp: ControlPlane, namespace: str, name: str, type_: str, reason: str, timeout: float = 60.0
) -> dict[str, Any]:
    """The status once condition `type_` carries `reason`."""

    def check() -> dict[str, Any] | None:
        st = status(cp, namespace, name)
        return st if condition(st, type_).get("reason") == reason else None

    return wait_for(check, f"{namespace}/{name} {type_} reason {reason}", timeout)


def set_state(cp: ControlPlane, namespace: str, name: str, state: str) -> None:
    patch = json.dumps({"spec": {"state": state}})
    cp.kubectl("patch", "mljob", name, "-n", namespace, "--type=merge", "-p", patch)


def annotate_force(cp: ControlPlane, namespace: str, name: str, value: str) -> None:
    cp.kubectl(
        "annotate",
        "mljob",
        name,
        "-n",
        namespace,
        f"ml.mljob.dev/force-close={value}",
        "--overwrite",
    )


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def event_series(
    minutes: int, start: int = BASE_TIME, spike_at: int | None = None, per_minute: int = 3
) -> list[dict[str, Any]]:
    """`per_minute` events each minute; ten times as many in the minute `spike_at`."""
    records = []
    for m in range(minutes):
        n = per_minute * 10 if m == spike_at else per_minute
        records += [{"time": start + m * 60 + i} for i in range(n)]
    return records


def post(
    op: OperatorProcess,
    namespace: str,
    name: str,
    body: bytes,
    token: str | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """POST data as `token`, by default the mljob-admin ServiceAccount's."""
    path = f"/v1/namespaces/{namespace}/mljobs/{name}/data"
    return op.request("POST", path, body, token=token or op.token, timeout=timeout)


def api_get(
    op: OperatorProcess, namespace: str, name: str, path: str, token: str | None = None
) -> Any:
    code, payload = op.request(
        "GET", f"/v1/namespaces/{namespace}/mljobs/{name}/{path}", token=token or op.token
    )
    assert code == 200, (code, payload)
    return payload


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cp.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items
