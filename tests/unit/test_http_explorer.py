"""The explorer page's server side in-process: the static page without a token and with
its Content-Security-Policy, and `GET /v1/namespaces/{ns}/mljobs` (its `list` check, the
namespace's MLJobs this operator reconciles with their status, the max score from the
store). The page itself runs in a real
Chromium in tests/e2e/test_explorer_ui.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from mljob_operator.api import CloseRecord, JobState, MLJobStatus
from mljob_operator.engine.results import BucketResult
from mljob_operator.http.auth import MANY_REVIEWS, Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.openapi import openapi_document
from mljob_operator.http.params import MAX_LIST_LIMIT
from mljob_operator.http.server import DataApi
from mljob_operator.kube import KubeError
from mljob_operator.runtime import JobRuntime
from mljob_operator.store import Store, WriteBatch, open_store
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

    async def list_jobs_page(
        self, namespace: str, limit: int, continue_: str | None
    ) -> dict[str, Any]:
        if continue_ == "garbage":
            raise KubeError(400, "continue key is not valid: illegal base64 data at input byte 4")
        if continue_ == "compacted":
            raise KubeError(410, "The provided continue parameter is too old")
        return await super().list_jobs_page(namespace, limit, continue_)


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


class CountingStore:
    """The store, counting the calls made on it by method."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.inner, name)


class SlowReviews(Reviews):
    """Every SubjectAccessReview takes a while; counts them and the most at once."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self.in_flight = 0
        self.most = 0

    async def review_access(self, spec: dict[str, Any]) -> bool:
        name = spec["resourceAttributes"]["name"]
        self.asked[name] += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return await super().review_access(spec)
        finally:
            self.in_flight -= 1


def listing_api(
    tmp_path: Path, names: list[str], reviews: Reviews
) -> tuple[DataApi, CountingStore]:
    store = CountingStore(open_store(tmp_path))
    for i, name in enumerate(names):
        if i % 3 == 0:  # every third job has results: scores 0..i, the last interim
            buckets = [
                BucketResult(60_000 * k, 60, float(k), float(k), 0.1, k == i, 5)
                for k in range(i + 1)
            ]
            store.inner.commit(f"ns/{name}", WriteBatch(buckets=buckets))
    apiserver = Apiserver(
        {"ns": [mljob(name, MLJobStatus(state=JobState.OPENED)) for name in names]}
    )
    known = {f"ns/{name}" for name in names if name != "job-05"}  # another operator's
    runtime = JobRuntime(store)  # type: ignore[arg-type]
    api = DataApi(runtime, Authorizer(reviews), StateRequests(apiserver), Jobs(known), 1024)
    return api, store


NAMES = [f"job-{i:02d}" for i in range(23)]


def test_the_listing_pages_as_the_apiserver_does(tmp_path: Path) -> None:
    """limit and continue: every held job once, in name order, each page's figures from
    one grouped store query; past the maximum a 400 naming the limit."""

    async def main() -> None:
        api, store = listing_api(tmp_path, NAMES, Reviews())
        viewer = {"Authorization": "Bearer viewer"}
        seen: list[dict[str, Any]] = []
        pages = []
        async with TestClient(TestServer(api.app())) as client:
            token: str | None = None
            while True:
                store.calls.clear()
                query = {"limit": "10"} | ({"continue": token} if token else {})
                answer = await client.get("/v1/namespaces/ns/mljobs", params=query, headers=viewer)
                assert answer.status == 200, await answer.text()
                body = await answer.json()
                assert store.calls == {"bucket_summaries": 1}, "one store query a page"
                pages.append((body["count"], body["remainingItemCount"]))
                seen += body["jobs"]
                token = body["continue"]
                if token is None:
                    break
            default = await (await client.get("/v1/namespaces/ns/mljobs", headers=viewer)).json()
            errors = {}
            for query in (
                {"limit": str(MAX_LIST_LIMIT + 1)},
                {"limit": "0"},
                {"continue": "garbage"},
                {"continue": "compacted"},
            ):
                answer = await client.get("/v1/namespaces/ns/mljobs", params=query, headers=viewer)
                errors[next(iter(query.values()))] = (answer.status, (await answer.json())["error"])
            largest = await client.get(
                "/v1/namespaces/ns/mljobs", params={"limit": str(MAX_LIST_LIMIT)}, headers=viewer
            )
            assert largest.status == 200
        api.runtime.close()
        assert pages == [(9, 13), (10, 3), (3, None)], "job-05 is another operator's"
        assert [j["name"] for j in seen] == [n for n in NAMES if n != "job-05"]
        assert [j["name"] for j in default["jobs"]] == [j["name"] for j in seen]
        assert default["continue"] is None
        figures = {j["name"]: (j["bucketCount"], j["maxAnomalyScore"]) for j in seen}
        assert figures["job-00"] == (1, 0.0)
        assert figures["job-21"] == (22, 21.0), "the highest score, interim included"
        assert figures["job-01"] == (0, None)
        status, error = errors[str(MAX_LIST_LIMIT + 1)]
        assert (status, error["message"]) == (400, "limit must be between 1 and 500, got 501")
        assert errors["0"][0] == 400
        status, error = errors["garbage"]
        assert (status, error["reason"]) == (400, "BadRequest")
        assert "continue key is not valid" in error["message"]
        status, error = errors["compacted"]
        assert (status, error["reason"]) == (410, "Expired")
        assert "list again without it" in error["message"]

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_per_job_reviews_are_for_the_page_and_bounded(tmp_path: Path) -> None:
    """A caller without namespace-wide results rights costs one SubjectAccessReview a job
    of the page, at most MANY_REVIEWS at once over all callers; a caller with them, one."""

    async def main() -> None:
        reviews = SlowReviews()
        api, store = listing_api(tmp_path, NAMES, reviews)
        async with TestClient(TestServer(api.app())) as client:

            async def listing(token: str, query: dict[str, str]) -> dict[str, Any]:
                answer = await client.get(
                    "/v1/namespaces/ns/mljobs",
                    params=query,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status == 200, await answer.text()
                return dict(await answer.json())

            first, again = await asyncio.gather(
                listing("one-job", {"limit": "8"}), listing("one-job", {"limit": "8"})
            )
            per_job = {name: n for name, n in reviews.asked.items() if name}
            reviews.asked.clear()
            store.calls.clear()
            await listing("viewer", {"limit": "8"})
            calls = dict(store.calls)
        api.runtime.close()
        page = [j["name"] for j in first["jobs"]]
        assert page == [n for n in NAMES[:8] if n != "job-05"]
        assert again == first
        assert per_job == dict.fromkeys(page, 1), "each job of the page asked about once"
        assert 1 < reviews.most <= MANY_REVIEWS
        assert all(j["bucketCount"] is None for j in first["jobs"]), "one-job reads only busy"
        assert set(reviews.asked) == {""}, "namespace-wide rights: no per-job review"
        assert calls == {"bucket_summaries": 1}

    asyncio.run(asyncio.wait_for(main(), timeout=30))
