"""End-to-end fixtures: one real control plane per session, one namespace per test.

Never mock the Kubernetes API here: these tests run against kube-apiserver + etcd built
from Go modules (see devtools/controlplane.py), with RBAC on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, install_crd_and_rbac


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        pids = cp.pids
        yield cp
    leaked = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not leaked, f"control-plane processes left running: {leaked}"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted after; no namespace controller runs, so the
    deletion is not waited for)."""
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def mljob_crd(control_plane: ControlPlane) -> ControlPlane:
    """The MLJob CRD and the operator's RBAC from manifests/, installed once."""
    install_crd_and_rbac(control_plane)
    return control_plane


@pytest.fixture
def operator_factory(
    mljob_crd: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts real operator processes (`kopf run -m mljob_operator`) scoped to the test's
    namespace, sharing one data directory so a restarted one sees the same store."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        op = OperatorProcess(mljob_crd, tmp_path / "data", tmp_path / "operator.log")
        started.append(op)
        return op.start(namespace=namespace, **env)

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    return operator_factory()
