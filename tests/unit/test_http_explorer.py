"""The explorer page's server side in-process: the static page without a token and with
its Content-Security-Policy, and `GET /v1/namespaces/{ns}/mljobs` (its `list` check, the
namespace's MLJobs this operator reconciles with their status, the max score from the
store). The page itself runs in a real
Chromium in tests/e2e/test_explorer_ui.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from mljob_operator.api import CloseRecord, JobState, MLJobStatus
from mljob_operator.http.auth import Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.openapi import openapi_document
from mljob_operator.http.server import DataApi
from mljob_operator.runtime import JobRuntime
from mljob_operator.store import open_store
from tests.unit.test_http_server import NoJobs
from tests.unit.test_runtime import SPEC, data

GRANTS = {
    "viewer": {("list", ""), ("get", "results")},
    "lister": {("list", "")},
    "stranger": set(),
}
"""(verb, subresource) each user holds namespace-wide; "one-job" reads results of busy."""


class Reviews:
    async def review_token(self, token: str) -> dict[str, Any]:
        if token in {*GRANTS, "one-job"}:
            return {"authenticated": True, "user": {"username": token}}
        return {"authenticated": False}

    async def review_access(self, spec: dict[str, Any]) -> bool:
        attrs = spec["resourceAttributes"]
        asked = (attrs["verb"], attrs["subresource"])
        if spec["user"] == "one-job":
            return asked == ("list", "") or (
                asked == ("get", "results") and attrs["name"] == "busy"
            )
        return asked in GRANTS[spec["user"]] and (asked != ("list", "") or attrs["name"] == "")


class Jobs:
    """The operator's job directory: which jobs it reconciles."""

    def __init__(self, known: set[str]) -> None:
        self.known = known

    def exists(self, namespace: str, name: str) -> bool:
        return f"{namespace}/{name}" in self.known

    def state(self, namespace: str, name: str) -> str | None:
        return None

    def fed_by_datafeed(self, namespace: str, name: str) -> bool:
        return False

    def wake(self, job_id: str) -> None:
        pass


class Apiserver(NoJobs):
    """MLJob objects as the apiserver lists them."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.objects.get(namespace, [])


CLOSED = MLJobStatus(
    state=JobState.CLOSED,
    closed=True,
    last_close=CloseRecord(completed_at="2026-01-01T00:00:00Z", snapshot_id="s1"),
)


def mljob(name: str, status: MLJobStatus | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status and status.to_json_dict()}


def test_page_loads_without_a_token_and_list_is_guarded(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        await runtime.load("ns/busy", SPEC, accepting=True)
        await runtime.post_data("ns/busy", data(30))
        apiserver = Apiserver(
            {
                "ns": [
                    mljob("busy", MLJobStatus(state=JobState.OPENED)),
                    mljob("archived", CLOSED),
                    mljob("elsewhere", CLOSED),  # reconciled by another operator
                    mljob("new", None),
                ],
                "other": [mljob("hidden", CLOSED)],
            }
        )
        known = {"ns/busy", "ns/archived", "ns/new", "other/hidden"}
        api = DataApi(
            runtime,
            Authorizer(Reviews()),
            StateRequests(apiserver),
            Jobs(known),
            max_body_bytes=1024,
        )
        async with TestClient(TestServer(api.app())) as client:
            page = await client.get("/ui/")
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            assert '<script src="app.js"' in await page.text()
            script = await client.get("/ui/app.js")
            assert (script.status, script.content_type) == (200, "text/javascript")
            assert "Authorization" in await script.text()
            assert (await client.get("/ui/app.css")).content_type == "text/css"
            assert (await client.get("/ui/../server.py")).status == 404
            assert (await client.get("/ui/nope.js")).status == 404
            moved = await client.get("/ui", allow_redirects=False)
            assert (moved.status, moved.headers["Location"]) == (308, "/ui/")

            jobs = "/v1/namespaces/ns/mljobs"
            assert (await client.get(jobs)).status == 401
            denied = await client.get(jobs, headers={"Authorization": "Bearer stranger"})
            assert denied.status == 403
            message = (await denied.json())["error"]["message"]
            assert message == (
                'stranger cannot list MLJobs: needs "list" on "mljobs" in API group '
                '"ml.mljob.dev" in namespace ns'
            )
            listed = await client.get(jobs, headers={"Authorization": "Bearer viewer"})
            assert listed.status == 200
            body = await listed.json()
            lister = await client.get(jobs, headers={"Authorization": "Bearer lister"})
            assert lister.status == 200
            unscored = (await lister.json())["jobs"]
            one = await client.get(jobs, headers={"Authorization": "Bearer one-job"})
            partly = {j["name"]: j for j in (await one.json())["jobs"]}
        runtime.close()
        assert [(j["name"], j["maxAnomalyScore"], j["bucketCount"]) for j in unscored] == [
            ("archived", None, None),
            ("busy", None, None),
            ("new", None, None),
        ], "who may not read results sees no figure of them"
        assert unscored[0]["lastClose"]["snapshotId"] == "s1", "but the status, as kubectl would"
        assert partly["busy"]["maxAnomalyScore"] == body["jobs"][1]["maxAnomalyScore"]
        assert partly["archived"]["bucketCount"] is None
        assert body["count"] == 3
        archived, busy, new = body["jobs"]
        assert (new["name"], new["state"], new["maxAnomalyScore"]) == ("new", None, None)
        assert (archived["name"], archived["state"], archived["closed"]) == (
            "archived",
            "closed",
            True,
        )
        assert archived["lastClose"]["snapshotId"] == "s1"
        assert (archived["maxAnomalyScore"], archived["bucketCount"]) == (None, 0)
        assert (busy["name"], busy["state"], busy["closed"]) == ("busy", "opened", False)
        assert busy["bucketCount"] > 0
        assert 0 <= busy["maxAnomalyScore"] <= 100

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_the_listing_is_in_the_openapi_document() -> None:
    op = openapi_document(1024)["paths"]["/v1/namespaces/{namespace}/mljobs"]["get"]
    assert op["operationId"] == "listJobs"
    assert "Needs `list` on `mljobs` in API group" in op["description"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobList"
    }
