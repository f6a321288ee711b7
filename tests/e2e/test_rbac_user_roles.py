"""The user ClusterRoles against the real RBAC authorizer: restricted users with their own
client certificates, bound in one namespace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from devtools.controlplane import ControlPlane
from tests.e2e.jobs import eventually

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crd" / "ml.mljob.dev_mljobs.yaml"
USER_ROLES = REPO / "manifests" / "rbac" / "user-roles.yaml"
FORCE_CLOSE_POLICY = REPO / "manifests" / "admission" / "force-close-policy.yaml"
FORCE_CLOSE = "ml.mljob.dev/force-close"
DEADLINE_S = 30.0
JOB = {
    "apiVersion": "ml.mljob.dev/v1alpha1",
    "kind": "MLJob",
    "metadata": {"name": "job"},
    "spec": {"analysisConfig": {"detectors": [{"function": "count"}]}},
}


@pytest.fixture(scope="module")
def roles(control_plane: ControlPlane) -> None:
    control_plane.kubectl(
        "apply", "-f", str(CRD_FILE), "-f", str(USER_ROLES), "-f", str(FORCE_CLOSE_POLICY)
    )
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/mljobs.ml.mljob.dev", "--timeout=30s"
    )


@pytest.fixture
def job(control_plane: ControlPlane, namespace: str, roles: None) -> str:
    created = eventually(
        lambda: control_plane.kubectl(
            "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(JOB), check=False
        )
    )
    assert created.returncode == 0, created.stderr
    return "job"


def user_bound_to(cp: ControlPlane, namespace: str, role: str) -> Path:
    user = f"{role}-{namespace}"
    cp.kubectl(
        "create", "rolebinding", role, "-n", namespace, f"--clusterrole={role}", f"--user={user}"
    )
    kubeconfig = cp.kubeconfig_for(user)
    allowed = eventually(
        lambda: cp.kubectl(
            "auth",
            "can-i",
            "get",
            "mljobs.ml.mljob.dev",
            "-n",
            namespace,
            kubeconfig=kubeconfig,
            check=False,
        )
    )
    assert allowed.stdout.strip() == "yes", allowed.stderr
    return kubeconfig


def can_i(cp: ControlPlane, kubeconfig: Path, namespace: str, verb: str, subresource: str) -> bool:
    result = cp.kubectl(
        "auth",
        "can-i",
        verb,
        "mljobs.ml.mljob.dev",
        f"--subresource={subresource}",
        "-n",
        namespace,
        kubeconfig=kubeconfig,
        check=False,
    )
    return result.stdout.strip() == "yes"


def patch_state(
    cp: ControlPlane, kubeconfig: Path, namespace: str, state: str
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "patch",
        "mlj",
        "job",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"state": state}}),
        kubeconfig=kubeconfig,
        check=False,
    )


@pytest.mark.usefixtures("job")
def test_viewer_reads_but_cannot_patch(control_plane: ControlPlane, namespace: str) -> None:
    viewer = user_bound_to(control_plane, namespace, "mljob-viewer")
    got = control_plane.kubectl(
        "get", "mlj", "job", "-n", namespace, "-o", "json", kubeconfig=viewer
    )
    assert json.loads(got.stdout)["metadata"]["name"] == "job"
    listed = control_plane.kubectl("get", "mlj", "-n", namespace, "-o", "name", kubeconfig=viewer)
    assert listed.stdout.split() == ["mljob.ml.mljob.dev/job"]

    patched = patch_state(control_plane, viewer, namespace, "closed")
    assert patched.returncode != 0
    assert "Forbidden" in patched.stderr
    assert 'cannot patch resource "mljobs"' in patched.stderr

    other = control_plane.kubectl("get", "mlj", "-n", "default", kubeconfig=viewer, check=False)
    assert "Forbidden" in other.stderr

    assert can_i(control_plane, viewer, namespace, "get", "results")
    assert can_i(control_plane, viewer, namespace, "get", "snapshots")
    assert not can_i(control_plane, viewer, namespace, "create", "data")
    assert not can_i(control_plane, viewer, namespace, "create", "close")
    assert not can_i(control_plane, viewer, namespace, "create", "forceclose")


@pytest.mark.usefixtures("job")
def test_editor_patches_spec_state_but_not_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    editor = user_bound_to(control_plane, namespace, "mljob-editor")
    patched = patch_state(control_plane, editor, namespace, "closed")
    assert patched.returncode == 0, patched.stderr
    state = control_plane.kubectl(
        "get", "mlj", "job", "-n", namespace, "-o", "jsonpath={.spec.state}", kubeconfig=editor
    )
    assert state.stdout == "closed"

    status = control_plane.kubectl(
        "patch",
        "mlj",
        "job",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"state": "closed", "closed": True}}),
        kubeconfig=editor,
        check=False,
    )
    assert "Forbidden" in status.stderr

    assert can_i(control_plane, editor, namespace, "create", "data")
    assert can_i(control_plane, editor, namespace, "create", "close")
    assert can_i(control_plane, editor, namespace, "get", "results")
    assert not can_i(control_plane, editor, namespace, "create", "forceclose")


@pytest.mark.usefixtures("job")
def test_only_admin_may_force_close(control_plane: ControlPlane, namespace: str) -> None:
    admin = user_bound_to(control_plane, namespace, "mljob-admin")
    assert can_i(control_plane, admin, namespace, "create", "forceclose")
    assert can_i(control_plane, admin, namespace, "create", "close")
    assert patch_state(control_plane, admin, namespace, "closed").returncode == 0
    deleted = control_plane.kubectl("delete", "mlj", "job", "-n", namespace, kubeconfig=admin)
    assert "deleted" in deleted.stdout


def test_user_roles_aggregate_into_builtin_roles(control_plane: ControlPlane, roles: None) -> None:
    aggregates = {
        "mljob-viewer": "view",
        "mljob-editor": "edit",
        "mljob-admin": "admin",
    }
    for role, builtin in aggregates.items():
        got = json.loads(control_plane.kubectl("get", "clusterrole", role, "-o", "json").stdout)
        assert (
            got["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{builtin}"] == "true"
        )


def annotate(
    cp: ControlPlane, kubeconfig: Path, namespace: str, *annotations: str
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "annotate",
        "--overwrite",
        "mlj",
        "job",
        "-n",
        namespace,
        *annotations,
        kubeconfig=kubeconfig,
        check=False,
    )


@pytest.mark.usefixtures("job")
def test_only_admin_may_set_the_force_close_annotation(
    control_plane: ControlPlane, namespace: str
) -> None:
    editor = user_bound_to(control_plane, namespace, "mljob-editor")
    admin = user_bound_to(control_plane, namespace, "mljob-admin")

    def denied() -> subprocess.CompletedProcess[str]:
        result = annotate(control_plane, editor, namespace, f"{FORCE_CLOSE}=editor-try")
        if "denied request" in result.stderr:
            return subprocess.CompletedProcess(result.args, 0, result.stdout, result.stderr)
        annotate(control_plane, editor, namespace, f"{FORCE_CLOSE}-")
        return subprocess.CompletedProcess(result.args, 1, result.stdout, result.stderr)

    refused = eventually(denied)
    assert refused.returncode == 0, "the policy never started denying"
    assert "setting the ml.mljob.dev/force-close annotation needs permission to create" in (
        refused.stderr
    )

    assert annotate(control_plane, admin, namespace, f"{FORCE_CLOSE}=stuck-1").returncode == 0
    assert annotate(control_plane, editor, namespace, "team=ml").returncode == 0
    assert patch_state(control_plane, editor, namespace, "closed").returncode == 0
    changed = annotate(control_plane, editor, namespace, f"{FORCE_CLOSE}=stuck-2")
    assert "denied request" in changed.stderr
    assert annotate(control_plane, editor, namespace, f"{FORCE_CLOSE}-").returncode == 0
