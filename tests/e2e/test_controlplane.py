"""The test control plane is a real Kubernetes API server: schema validation, RBAC,
watches, the version it was built as, and helm talking to it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import kubernetes
import pytest
import yaml

from devtools.controlplane import KUBERNETES_VERSION, ControlPlane

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.mljob.dev"},
    "spec": {
        "group": "harness.mljob.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _widget(name: str, size: object) -> str:
    return json.dumps(
        {
            "apiVersion": "harness.mljob.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }
    )


def _pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_custom_resource_rejected_by_its_openapi_schema(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.harness.mljob.dev", "--timeout=30s"
    )
    ok = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=_widget("ok", 3))
    assert "widget.harness.mljob.dev/ok created" in ok.stdout

    too_big = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=_widget("big", 99), check=False
    )
    assert too_big.returncode != 0
    assert "spec.size: Invalid value: 99" in too_big.stderr
    assert "less than or equal to 10" in too_big.stderr

    wrong_type = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=_widget("typed", "three"), check=False
    )
    assert wrong_type.returncode != 0
    assert 'spec.size: Invalid value: "string"' in wrong_type.stderr


def test_restricted_user_is_denied_until_a_rolebinding_allows(
    control_plane: ControlPlane, namespace: str
) -> None:
    alice = control_plane.kubeconfig_for("alice", ("team-a",))
    denied = control_plane.kubectl(
        "get", "configmaps", "-n", namespace, kubeconfig=alice, check=False
    )
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "alice" cannot list resource "configmaps"' in denied.stderr

    control_plane.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps"
    )
    control_plane.kubectl(
        "create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader", "--group=team-a"
    )
    allowed = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=alice)
    assert allowed.returncode == 0

    still_denied = control_plane.kubectl(
        "create", "configmap", "x", "-n", namespace, kubeconfig=alice, check=False
    )
    assert 'User "alice" cannot create resource "configmaps"' in still_denied.stderr
    other_ns = control_plane.kubectl(
        "get", "configmaps", "-n", "default", kubeconfig=alice, check=False
    )
    assert 'cannot list resource "configmaps" in API group "" in the namespace "default"' in (
        other_ns.stderr
    )


def test_watch_sees_added_modified_deleted(control_plane: ControlPlane, namespace: str) -> None:
    api_client = kubernetes.config.new_client_from_config(str(control_plane.kubeconfig))
    core = kubernetes.client.CoreV1Api(api_client)
    seen: list[tuple[str, str]] = []
    # Watching from the list's resourceVersion guarantees every later event is delivered.
    resource_version = core.list_namespaced_config_map(namespace).metadata.resource_version

    def watch() -> None:
        watcher = kubernetes.watch.Watch()
        stream = watcher.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=resource_version,
            timeout_seconds=30,
        )
        for event in stream:
            obj = event["object"]
            if obj.metadata.name == "watched":
                seen.append((event["type"], (obj.data or {}).get("k", "")))
            if event["type"] == "DELETED":
                watcher.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    body = {"metadata": {"name": "watched"}, "data": {"k": "1"}}
    core.create_namespaced_config_map(namespace, body)
    core.patch_namespaced_config_map("watched", namespace, {"data": {"k": "2"}})
    core.delete_namespaced_config_map("watched", namespace)
    thread.join(timeout=30)
    api_client.close()
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED", "DELETED"], seen
    assert seen[1][1] == "2"


def test_kubectl_version_reports_the_built_server_version(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("version", "-o", "json").stdout
    version = json.loads(out)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    assert version["serverVersion"]["major"] == major
    assert version["serverVersion"]["minor"] == minor
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_helm_version_and_cluster_access(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.helm("version", "--short").stdout
    assert re.match(r"v3\.\d+\.\d+", out), out
    listed = control_plane.helm("list", "-n", namespace, "-o", "json").stdout
    assert json.loads(listed) == []


def test_stop_leaves_no_process(control_plane: ControlPlane) -> None:
    with ControlPlane() as other:
        pids = other.pids
        assert len(pids) == 2
        assert all(_pid_alive(p) for p in pids)
        root = other.root
    assert not any(_pid_alive(p) for p in pids)
    assert not root.exists()


def _read_until(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r} from {proc.args}")


def _child_pids(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def _foreground_controlplane() -> subprocess.Popen[str]:
    """`make controlplane` without make: the same module, in the foreground."""
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.controlplane"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_make_controlplane_serves_kubectl_and_stops_on_sigterm(
    control_plane: ControlPlane,
) -> None:
    with _foreground_controlplane() as proc:
        try:
            export = _read_until(proc, "export KUBECONFIG=", timeout=120)
            kubeconfig = Path(export.split("=", 1)[1])
            assert kubeconfig.is_absolute()
            children = _child_pids(proc.pid)
            assert len(children) == 2
            namespaces = control_plane.kubectl("get", "ns", "-o", "name", kubeconfig=kubeconfig)
            assert "namespace/default" in namespaces.stdout.split()
            assert yaml.safe_load(kubeconfig.read_text())["current-context"] == "admin"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    _wait_until(lambda: not any(_pid_alive(p) for p in children), 10, "children to exit")


@pytest.mark.timeout(180)
def test_sigkilled_owner_leaks_no_control_plane() -> None:
    """Even when the owning process dies without cleanup, etcd and apiserver go with it."""
    with _foreground_controlplane() as proc:
        try:
            _read_until(proc, "export KUBECONFIG=", timeout=120)
            children = _child_pids(proc.pid)
            assert len(children) == 2
        finally:
            proc.kill()
            proc.wait(timeout=30)
    _wait_until(lambda: not any(_pid_alive(p) for p in children), 10, "orphans to die")
