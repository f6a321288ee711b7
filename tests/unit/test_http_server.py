"""The aiohttp app in-process: error shapes, check order, OpenAPI coverage, TLS material.

The apiserver's reviews are answered by a stand-in here; the real ones are exercised end
to end in tests/e2e/test_api_*.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from mljob_operator.http.auth import Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.openapi import openapi_document
from mljob_operator.http.server import DataApi
from mljob_operator.http.tls import generated_pair, server_context
from mljob_operator.runtime import JobRuntime
from mljob_operator.settings import OperatorSettings
from mljob_operator.store import SQLiteStore, open_store
from mljob_operator.store.fencing import FencedError
from mljob_operator.store.tx import Tx
from tests.unit.test_runtime import SPEC, FlakyStore, closed_with_snapshot, data

JOB = "/v1/namespaces/ns/mljobs/web-1"
TOKENS = {"viewer": {"results", "snapshots"}, "editor": {"results", "snapshots", "data", "close"}}


class Reviews:
    async def review_token(self, token: str) -> dict[str, Any]:
        if token in TOKENS:
            return {"authenticated": True, "user": {"username": token}}
        return {"authenticated": False}

    async def review_access(self, spec: dict[str, Any]) -> bool:
        return spec["resourceAttributes"]["subresource"] in TOKENS[spec["user"]]


class NoJobs:
    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        raise AssertionError("not reached")

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "web-1"}}]

    async def list_jobs_page(
        self, namespace: str, limit: int, continue_: str | None
    ) -> dict[str, Any]:
        """`list_jobs` paged as the apiserver pages it: by name, the token saying where
        the next page starts."""
        items = sorted(await self.list_jobs(namespace), key=lambda j: j["metadata"]["name"])
        start = int(continue_ or 0)
        rest = len(items) - start - limit
        more = {"continue": str(start + limit), "remainingItemCount": rest} if rest > 0 else {}
        return {"items": items[start : start + limit], "metadata": more}

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not reached")


class Jobs:
    """The operator's job directory, for jobs that exist and are closed."""

    def __init__(
        self, known: set[tuple[str, str]], datafeed_jobs: frozenset[str] = frozenset()
    ) -> None:
        self.known = known
        self.datafeed_jobs = datafeed_jobs

    def exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.known

    def state(self, namespace: str, name: str) -> str | None:
        return "closed" if (namespace, name) in self.known else None

    def fed_by_datafeed(self, namespace: str, name: str) -> bool:
        return name in self.datafeed_jobs

    def wake(self, job_id: str) -> None:
        pass


Call = Callable[..., Awaitable[tuple[int, Any]]]


def data_api(runtime: JobRuntime, jobs: Jobs, max_body_bytes: int = 1024) -> DataApi:
    """The data API over `runtime`, with the test's token reviews and no MLJob writes."""
    return DataApi(
        runtime,
        Authorizer(Reviews()),
        StateRequests(NoJobs()),
        jobs,
        max_body_bytes=max_body_bytes,
    )


def with_client(tmp_path: Path, test: Callable[[Call], Awaitable[None]]) -> None:
    async def main() -> None:
        runtime = JobRuntime(open_store(tmp_path))
        api = data_api(runtime, Jobs({("ns", "web-1"), ("ns", "feed-1")}, frozenset({"feed-1"})))
        async with TestClient(TestServer(api.app())) as client:

            async def call(
                method: str, path: str, token: str | None = None, **kwargs: Any
            ) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                resp = await client.request(method, path, headers=headers, **kwargs)
                assert resp.content_type == "application/json"
                return resp.status, await resp.json()

            await test(call)
        runtime.close()

    asyncio.run(main())


def test_check_order_and_json_errors(tmp_path: Path) -> None:
    async def test(call: Call) -> None:
        code, body = await call("POST", JOB + "/data", data=b'{"time": 1}')
        assert code == 401
        assert body["error"]["reason"] == "Unauthorized"
        assert (await call("POST", JOB + "/data", "nobody", data=b"{}"))[0] == 401
        code, body = await call("POST", JOB + "/data", "viewer", data=b"{}")
        assert code == 403
        assert '"create" on "mljobs/data"' in body["error"]["message"]
        code, body = await call("POST", "/v1/namespaces/ns/mljobs/nope/data", "editor", data=b"{}")
        assert (code, body["error"]["reason"]) == (404, "NotFound")
        code, body = await call("POST", JOB + "/data", "editor", data=b'{"time": 1}')
        assert code == 409
        assert "closed" in body["error"]["message"]
        code, body = await call("GET", JOB + "/results/buckets", "viewer")
        assert (code, body) == (200, {"count": 0, "buckets": []})
        code, body = await call("GET", JOB + "/results/buckets?size=x", "viewer")
        assert code == 400
        assert "size" in body["error"]["message"]
        code, body = await call("GET", "/nowhere")
        assert code == 404
        code, body = await call("PUT", JOB + "/data", "editor")
        assert code == 405

    with_client(tmp_path, test)


def test_data_and_flush_of_a_datafeed_job_are_refused(tmp_path: Path) -> None:
    async def test(call: Call) -> None:
        feed = "/v1/namespaces/ns/mljobs/feed-1"
        for path, body in ((feed + "/flush?calcInterim=true", b""), (feed + "/data", b"{}")):
            code, answer = await call("POST", path, "editor", data=body)
            assert code == 409, path
            assert "datafeed" in answer["error"]["message"]

    with_client(tmp_path, test)


def test_close_by_pattern_checks_existence_and_allow_no_match(tmp_path: Path) -> None:
    async def test(call: Call) -> None:
        code, body = await call("POST", "/v1/namespaces/ns/mljobs/api-*/close", "editor")
        assert (code, body) == (200, {"closed": True})
        path = "/v1/namespaces/ns/mljobs/api-*/close?allowNoMatch=false"
        code, body = await call("POST", path, "editor")
        assert code == 404
        assert "api-*" in body["error"]["message"]
        code, body = await call("POST", "/v1/namespaces/ns/mljobs/web-1/close", "viewer")
        assert code == 403
        code, body = await call("POST", "/v1/namespaces/ns/mljobs/web-1/close?timeout=1y", "editor")
        assert code == 400

    with_client(tmp_path, test)


def test_body_limit_is_413(tmp_path: Path) -> None:
    async def test(call: Call) -> None:
        code, body = await call("POST", JOB + "/data", "editor", data=b"x" * 2048)
        assert code in (409, 413)
        path = JOB + "/modelsnapshots/s1/_update"
        code, body = await call("POST", path, "editor", data=b" " * 2048)
        assert code == 413
        assert body["error"]["reason"] == "RequestEntityTooLarge"
        code, body = await call("POST", path, "editor", data=b'{"retain": "yes"}')
        assert code == 400
        code, body = await call("POST", path, "editor", data=b'{"retain": true')
        assert code == 400
        code, body = await call("POST", path, "editor", json={"retain": True})
        assert code == 404

    with_client(tmp_path, test)


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }


def test_openapi_describes_every_route(tmp_path: Path) -> None:
    runtime = JobRuntime(open_store(tmp_path))
    api = data_api(runtime, Jobs(set()))
    doc = openapi_document(1024)
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    served = _routes(api.app())
    page = {(m, p) for m, p in served if p == "/ui" or p.startswith("/ui/")}
    assert page == {("get", "/ui"), ("get", "/ui/"), ("get", "/ui/{asset}")}, "the HTML page"
    assert documented == served - page
    params = doc["components"]["parameters"]
    for path, ops in doc["paths"].items():
        for op in ops.values():
            declared = {
                params[p["$ref"].rsplit("/", 1)[1]]["name"] if "$ref" in p else p["name"]
                for p in op.get("parameters", [])
                if "$ref" in p or p["in"] == "path"
            }
            in_path = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            assert in_path <= declared, (path, in_path, declared)
            for code, response in op["responses"].items():
                assert response["description"], (path, code)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"]), "every reference resolves"
    assert {"BucketPage", "AnomalyRecord", "DataCounts", "Error", "JobStats"} <= refs
    runtime.close()


def test_generated_certificate_is_reused_and_serves(tmp_path: Path) -> None:
    cert, key = generated_pair(tmp_path / "tls", ("mljob.example.svc",))
    assert key.stat().st_mode & 0o077 == 0
    first = cert.read_bytes()
    assert generated_pair(tmp_path / "tls", ("mljob.example.svc",))[0].read_bytes() == first
    sans = (
        x509.load_pem_x509_certificate(first)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert "mljob.example.svc" in sans.get_values_for_type(x509.DNSName)
    assert isinstance(server_context(cert, key), ssl.SSLContext)
    client = ssl.create_default_context(cafile=str(cert))
    assert client.verify_mode == ssl.CERT_REQUIRED
    renewed = generated_pair(tmp_path / "tls", ("other.example",))[0].read_bytes()
    assert renewed != first


@pytest.mark.parametrize("value", ["off", "false", "0"])
def test_tls_can_be_turned_off(value: str) -> None:
    settings = OperatorSettings.from_env({"MLJOB_TLS": value})
    assert settings.tls_enabled is False
    assert OperatorSettings.from_env({}).tls_enabled is True


def test_a_store_that_refuses_writes_answers_503_with_retry_after(tmp_path: Path) -> None:
    async def main() -> None:
        store = FlakyStore(tmp_path / "flaky.sqlite")
        runtime = JobRuntime(store)
        await runtime.load("ns/web-1", SPEC, accepting=True)
        api = data_api(runtime, Jobs({("ns", "web-1")}), max_body_bytes=1 << 20)
        headers = {"Authorization": "Bearer editor"}
        async with TestClient(TestServer(api.app())) as client:
            store.full = True
            resp = await client.post(JOB + "/data", data=data(5), headers=headers)
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"
            body = await resp.json()
            assert "nothing of this request was stored" in body["error"]["message"]
            store.full = False
            resp = await client.post(JOB + "/data", data=data(5), headers=headers)
            assert resp.status == 202
            assert (await resp.json())["processedRecordCount"] == 10
        runtime.close()

    asyncio.run(main())


class LostShardStore(SQLiteStore):
    """A real SQLite store whose guard refuses every write of a job while `lost` is set,
    as the fenced PostgreSQL store does once another replica took the job's shard."""

    lost = False

    def _guard(self, tx: Tx, job_id: str) -> None:
        if self.lost:
            raise FencedError(f"job {job_id}: shard 3 was taken over by b; write refused")


def test_a_snapshot_change_refused_by_the_fence_answers_503_with_retry_after(
    tmp_path: Path,
) -> None:
    """Retain, revert and delete refused because the shard moved are a 503 with
    Retry-After, as data and flush are (a retry reaches the new holder), never a 400."""

    async def main() -> None:
        store = LostShardStore(tmp_path / "fenced.sqlite")
        runtime = JobRuntime(store)
        await runtime.load("ns/web-1", SPEC, accepting=True)
        await runtime.post_data("ns/web-1", data(5))
        snapshot_id = await closed_with_snapshot(runtime, "ns/web-1")
        api = data_api(runtime, Jobs({("ns", "web-1")}), max_body_bytes=1 << 20)
        headers = {"Authorization": "Bearer editor"}
        snapshot = f"{JOB}/modelsnapshots/{snapshot_id}"
        calls = (
            ("POST", snapshot + "/_update", {"retain": True}),
            ("POST", snapshot + "/_revert", None),
            ("DELETE", snapshot, None),
        )
        async with TestClient(TestServer(api.app())) as client:
            store.lost = True
            for method, path, body in calls:
                resp = await client.request(method, path, json=body, headers=headers)
                answer = await resp.json()
                assert resp.status == 503, (path, answer)
                assert resp.headers["Retry-After"] == "5"
                assert answer["error"]["reason"] == "ServiceUnavailable"
                assert "taken over by b" in answer["error"]["message"]
            store.lost = False
            resp = await client.post(snapshot + "/_update", json={"retain": True}, headers=headers)
            assert resp.status == 200
        kept = store.get_snapshot("ns/web-1", snapshot_id)
        assert kept is not None
        assert kept.retain
        runtime.close()

    asyncio.run(main())
