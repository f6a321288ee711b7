"""The user ClusterRoles grant exactly the data-API permissions the API module names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mljob_operator.api import permissions
from mljob_operator.api.permissions import Permission

USER_ROLES = Path(__file__).resolve().parents[2] / "manifests" / "rbac" / "user-roles.yaml"
ALL = {
    permissions.POST_DATA,
    permissions.READ_RESULTS,
    permissions.READ_SNAPSHOTS,
    permissions.OPEN_CLOSE,
    permissions.FORCE_CLOSE,
}


def roles() -> dict[str, list[dict[str, Any]]]:
    return {d["metadata"]["name"]: d["rules"] for d in yaml.safe_load_all(USER_ROLES.read_text())}


def grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        ("mljob-viewer", set(permissions.VIEWER_PERMISSIONS)),
        ("mljob-editor", set(permissions.EDITOR_PERMISSIONS)),
        ("mljob-admin", set(permissions.ADMIN_PERMISSIONS)),
    ],
)
def test_roles_grant_their_permissions_and_no_more(role: str, granted: set[Permission]) -> None:
    rules = roles()[role]
    for perm in ALL:
        resource = f"mljobs/{perm.subresource}"
        assert grants(rules, "ml.mljob.dev", resource, perm.verb) == (perm in granted), perm


def test_only_admin_may_force_close() -> None:
    assert permissions.FORCE_CLOSE in permissions.ADMIN_PERMISSIONS
    assert permissions.FORCE_CLOSE not in permissions.EDITOR_PERMISSIONS
    found = {
        name
        for name, rules in roles().items()
        if grants(rules, "ml.mljob.dev", "mljobs/forceclose", "create")
    }
    assert found == {"mljob-admin"}


def test_viewer_cannot_write_mljobs() -> None:
    rules = roles()["mljob-viewer"]
    for verb in ("create", "update", "patch", "delete"):
        assert not grants(rules, "ml.mljob.dev", "mljobs", verb)
