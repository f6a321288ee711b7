"""The chart's replicas: more than one needs the PostgreSQL store from a Secret and one
certificate for all (the template fails naming what is missing otherwise); with them the
Deployment runs leased (the URL from the Secret, the pod's name and namespace as replica
id and Lease namespace, a rolling update, no volume claim) with a Role for Leases in the
release namespace only; the default render (one replica on SQLite) has no Lease
permission at all. Checked by a server-side dry run on the real apiserver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devtools.controlplane import ControlPlane

CHART = Path(__file__).resolve().parents[2] / "charts" / "mljob-operator"
RELEASE = "mljob-operator"
LEASED = ("replicaCount=3", "store.urlSecret.name=mljob-db-app", "tls.existingSecret=mljob-tls")


def _render(cp: ControlPlane, namespace: str, *values: str, check: bool = True) -> Any:
    sets = [arg for value in values for arg in ("--set", value)]
    return cp.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "crds.install=false",
        "--set",
        "rbac.userRoles=false",
        "--set",
        "admission.forceClosePolicy=false",
        *sets,
        check=check,
    )


def _objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(text) if o}


def test_replicas_without_the_postgresql_store_or_a_shared_certificate_are_refused(
    control_plane: ControlPlane, namespace: str
) -> None:
    result = _render(control_plane, namespace, "replicaCount=2", check=False)
    assert result.returncode != 0
    assert "replicaCount > 1 needs the PostgreSQL store" in result.stderr
    assert "store.urlSecret.name" in result.stderr
    result = _render(control_plane, namespace, *LEASED[:2], check=False)
    assert result.returncode != 0
    assert "needs one certificate for every replica" in result.stderr


def test_the_leased_deployment_and_its_lease_role(
    control_plane: ControlPlane, namespace: str
) -> None:
    text = _render(control_plane, namespace, *LEASED).stdout
    rendered = _objects(text)
    deployment = rendered[("Deployment", RELEASE)]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MLJOB_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mljob-db-app",
        "key": "uri",
    }
    assert env["MLJOB_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MLJOB_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["MLJOB_REPLICAS_SHARDS"]["value"] == "16"
    assert not any(("PersistentVolumeClaim", n) in rendered for n in (RELEASE, f"{RELEASE}-data"))
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    role = rendered[("Role", f"{RELEASE}-leases")]
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "create", "update", "delete"],
        }
    ]
    done = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text
    )
    assert done.stdout.count("(server dry run)") == len(rendered), done.stdout


def test_one_replica_on_sqlite_gets_no_lease_permission(
    control_plane: ControlPlane, namespace: str
) -> None:
    rendered = _objects(_render(control_plane, namespace).stdout)
    assert not [key for key in rendered if key[0] in ("Role", "RoleBinding")]
    env = {
        e["name"]
        for e in rendered[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert not env & {"MLJOB_STORE_URL", "MLJOB_REPLICAS_SHARDS", "MLJOB_NAMESPACE"}
