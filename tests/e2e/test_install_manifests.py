"""`kubectl apply -k manifests/` against a real apiserver: server-side dry run, then the
real apply, then what the apiserver stored (security context, store volume, RBAC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane
from tests.e2e.jobs import eventually

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OPERATOR_SA = "system:serviceaccount:mljob-system:mljob-operator"
DEADLINE_S = 30.0


def kustomize(cp: ControlPlane, path: Path) -> list[dict[str, Any]]:
    out = cp.kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> list[dict[str, Any]]:
    """Dry run first, then apply; returns the objects of the kustomization.

    A server-side dry run cannot create the namespace its namespaced objects go into, so
    on a fresh cluster the namespace is applied first (as manifests/README.md says)."""
    objects = kustomize(control_plane, MANIFESTS)
    control_plane.kubectl("apply", "-f", str(MANIFESTS / "namespace.yaml"))
    dry = control_plane.kubectl("apply", "--dry-run=server", "-k", str(MANIFESTS))
    assert dry.stdout.count("(server dry run)") == len(objects), dry.stdout
    real = control_plane.kubectl("apply", "-k", str(MANIFESTS))
    assert "(server dry run)" not in real.stdout
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/mljobs.ml.mljob.dev", "--timeout=30s"
    )
    return objects


def test_every_object_exists(control_plane: ControlPlane, installed: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in installed)
    assert kinds == sorted(
        [
            ("Namespace", "mljob-system"),
            ("CustomResourceDefinition", "mljobs.ml.mljob.dev"),
            ("ServiceAccount", "mljob-operator"),
            ("ClusterRole", "mljob-operator"),
            ("ClusterRoleBinding", "mljob-operator"),
            ("ClusterRole", "mljob-operator-datafeed-credentials"),
            ("ClusterRole", "mljob-admin"),
            ("ClusterRole", "mljob-editor"),
            ("ClusterRole", "mljob-viewer"),
            ("PersistentVolumeClaim", "mljob-operator-data"),
            ("Deployment", "mljob-operator"),
            ("Service", "mljob-operator"),
            ("ValidatingAdmissionPolicy", "mljob-operator-force-close"),
            ("ValidatingAdmissionPolicyBinding", "mljob-operator-force-close"),
        ]
    )
    for obj in installed:
        ns = obj["metadata"].get("namespace")
        args = ["get", obj["kind"], obj["metadata"]["name"], "-o", "name"]
        control_plane.kubectl(*args, *(["-n", ns] if ns else []))


def test_deployment_is_locked_down(
    control_plane: ControlPlane, installed: list[dict[str, Any]]
) -> None:
    deployment = json.loads(
        control_plane.kubectl(
            "get", "deployment", "mljob-operator", "-n", "mljob-system", "-o", "json"
        ).stdout
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mljob-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"livenessProbe", "readinessProbe"} <= container.keys()
    assert {"requests", "limits"} <= container["resources"].keys()
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == env["MLJOB_DATA_DIR"]
    assert env["MLJOB_HTTP_ADDR"].endswith(":8080")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "mljob-operator-data"
    assert container["args"][:3] == ["run", "-m", "mljob_operator"]
    assert "--all-namespaces" in container["args"]


@pytest.mark.usefixtures("installed")
def test_samples_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    applied = eventually(
        lambda: control_plane.kubectl(
            "apply", "-n", namespace, "-k", str(MANIFESTS / "samples"), check=False
        )
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("created") == 3
    listed = control_plane.kubectl("get", "mlj", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == [
        "mljob.ml.mljob.dev/event-rate",
        "mljob.ml.mljob.dev/http-request-rate",
        "mljob.ml.mljob.dev/response-times",
    ]


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "mljobs.ml.mljob.dev", True),
        ("patch", "mljobs.ml.mljob.dev", True),
        ("patch", "mljobs.ml.mljob.dev --subresource=status", True),
        ("update", "mljobs.ml.mljob.dev --subresource=status", False),
        ("create", "events", True),
        ("create", "subjectaccessreviews.authorization.k8s.io", True),
        ("create", "tokenreviews.authentication.k8s.io", True),
        ("delete", "mljobs.ml.mljob.dev", False),
        ("create", "mljobs.ml.mljob.dev", False),
        ("get", "secrets", False),
        ("get", "configmaps", False),
        ("create", "pods", False),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("list", "namespaces", False),
        ("create", "mljobs.ml.mljob.dev --subresource=forceclose", True),
    ],
)
def test_operator_rbac_is_least_privilege(
    control_plane: ControlPlane, verb: str, resource: str, allowed: bool
) -> None:
    result = control_plane.kubectl(
        "auth", "can-i", verb, *resource.split(), "--as", OPERATOR_SA, "-n", "default", check=False
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr
