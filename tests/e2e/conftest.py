"""End-to-end fixtures: one real control plane per session, one namespace per test.

Never mock the Kubernetes API here: these tests run against kube-apiserver + etcd built
from Go modules (see devtools/controlplane.py), with RBAC on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.controlplane import ControlPlane


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
