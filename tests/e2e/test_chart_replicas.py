"""The chart's replicas: more than one needs the PostgreSQL store from a Secret and one
certificate for all (the template fails naming what is missing otherwise); with them the
Deployment runs leased (the URL from the Secret, the pod's name and namespace as replica
id and Lease namespace, a rolling update, no volume claim) with a Role for Leases in the
release namespace only; the default render (one replica on SQLite) has no Lease
permission at all. Checked by a server-side dry run on the real apiserver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane
from mljob_operator.settings import MAX_LEASE_S, MAX_SHARDS, MIN_LEASE_S

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


OUT_OF_RANGE = (
    ("replicaCount", 0),
    ("store.shards", 0),
    ("store.shards", MAX_SHARDS + 1),
    ("store.leaseDurationSeconds", int(MIN_LEASE_S) - 1),
    ("store.leaseDurationSeconds", int(MAX_LEASE_S) + 1),
)


@pytest.mark.parametrize(("key", "value"), OUT_OF_RANGE)
def test_values_the_operator_would_refuse_at_start_are_refused_by_the_chart(
    control_plane: ControlPlane, namespace: str, key: str, value: int
) -> None:
    """The chart's schema has the operator's own bounds (settings), so a bad value fails
    `helm template`/`install` naming it instead of a pod that crash-loops."""
    result = _render(control_plane, namespace, *LEASED, f"{key}={value}", check=False)
    assert result.returncode != 0
    assert f"/{key.replace('.', '/')}" in result.stderr
    assert "schema" in result.stderr


def test_the_bounds_themselves_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["store"]
    shards, lease = schema["properties"]["shards"], schema["properties"]["leaseDurationSeconds"]
    assert (shards["minimum"], shards["maximum"]) == (1, MAX_SHARDS)
    assert (lease["minimum"], lease["maximum"]) == (MIN_LEASE_S, MAX_LEASE_S)
    for values in (
        ("store.shards=1", f"store.leaseDurationSeconds={int(MIN_LEASE_S)}"),
        (f"store.shards={MAX_SHARDS}", f"store.leaseDurationSeconds={int(MAX_LEASE_S)}"),
    ):
        rendered = _objects(_render(control_plane, namespace, *LEASED, *values).stdout)
        env = {
            e["name"]: e.get("value")
            for e in rendered[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
        }
        assert env["MLJOB_REPLICAS_SHARDS"] == values[0].split("=")[1]
        assert env["MLJOB_LEASE_DURATION"] == values[1].split("=")[1]
