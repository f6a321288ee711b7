"""Subresource-style permissions the operator's HTTP API checks with SubjectAccessReview.

The data API is served by the operator, not the apiserver, so RBAC cannot see its paths;
the API asks the apiserver "may this user <verb> mljobs/<subresource>?" instead. These
pairs are the contract between that check and the `mljob-admin`/`mljob-editor`/
`mljob-viewer` ClusterRoles in manifests/ and the chart (a unit test ties them together).
"""

from __future__ import annotations

from typing import NamedTuple


class Permission(NamedTuple):
    """A verb on a subresource of `mljobs` in group ml.mljob.dev."""

    subresource: str
    verb: str


POST_DATA = Permission("data", "create")
"""`POST .../{name}/data` and `POST .../{name}/flush`."""
READ_RESULTS = Permission("results", "get")
"""`GET .../{name}/results/buckets`, `.../results/records` and `.../stats`."""
READ_SNAPSHOTS = Permission("snapshots", "get")
"""`GET .../{name}/modelsnapshots`."""
OPEN_CLOSE = Permission("close", "create")
"""`POST .../{name}/open` and `POST .../{names}/close` without force."""
FORCE_CLOSE = Permission("forceclose", "create")
"""`POST .../{names}/close?force=true`; only `mljob-admin` holds it."""

VIEWER_PERMISSIONS = (READ_RESULTS, READ_SNAPSHOTS)
EDITOR_PERMISSIONS = (*VIEWER_PERMISSIONS, POST_DATA, OPEN_CLOSE)
ADMIN_PERMISSIONS = (*EDITOR_PERMISSIONS, FORCE_CLOSE)

LIST_JOBS = Permission("", "list")
"""`GET /v1/namespaces/{ns}/mljobs`: `list` on `mljobs` itself (no subresource, no name),
which every user role holds through its read access to the objects."""
