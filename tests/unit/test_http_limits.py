"""What one caller may cost: the ingest budget, long-poll waiters per user, rejected tokens
per client, and a waiter cancelled when its client goes away. In-process aiohttp, real
TCP on loopback, a stand-in for the apiserver's reviews."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from mljob_operator.http.auth import Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.limits import IngestBudget, SignInFailures, WaiterLimit
from mljob_operator.http.server import ApiLimits, DataApi, start_server
from mljob_operator.runtime import JobRuntime
from mljob_operator.store import open_store
from tests.unit.test_http_server import JOB, Jobs, Reviews
from tests.unit.test_runtime import SPEC, data

CLOSE = "/v1/namespaces/ns/mljobs/web-1/close?timeout=1h"


class CountingReviews(Reviews):
    def __init__(self) -> None:
        self.token_reviews = 0

    async def review_token(self, token: str) -> dict[str, Any]:
        self.token_reviews += 1
        return await super().review_token(token)


class NeverClosed:
    """A job that exists and never reaches the asked state; counts the waits in progress."""

    def __init__(self) -> None:
        self.reads = 0
        self.cancelled = asyncio.Event()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"metadata": {"name": name, "generation": 2}, "status": {"state": "opened"}}

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "web-1"}}]

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "generation": 2}}


def serve(
    tmp_path: Path, limits: ApiLimits, kube: Any, sign_ins: SignInFailures | None = None
) -> tuple[JobRuntime, CountingReviews, DataApi]:
    runtime = JobRuntime(open_store(tmp_path))
    reviews = CountingReviews()
    api = DataApi(
        runtime,
        Authorizer(reviews, sign_in_failures=sign_ins),
        StateRequests(kube, poll_s=0.01),
        Jobs({("ns", "web-1")}),
        max_body_bytes=1024,
        limits=limits,
    )
    return runtime, reviews, api


async def started(api: DataApi) -> tuple[Any, str]:
    runner = await start_server(api.app(), "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def limits(budget: int = 1 << 20, waiters: int = 2) -> ApiLimits:
    return ApiLimits(IngestBudget(budget), WaiterLimit(waiters))


def test_past_the_ingest_budget_a_post_gets_429_with_retry_after(tmp_path: Path) -> None:
    async def test() -> None:
        runtime, _, api = serve(tmp_path, limits(budget=1000), NeverClosed())
        await runtime.load("ns/web-1", SPEC, accepting=True)
        runner, base = await started(api)
        headers = {"Authorization": "Bearer editor"}
        body = data(4)
        assert 100 < len(body) < 1000, len(body)
        async with aiohttp.ClientSession() as http:
            with api.limits.ingest.reserve(900):
                async with http.post(base + JOB + "/data", data=body, headers=headers) as r:
                    assert r.status == 429
                    assert r.headers["Retry-After"] == "1"
                    assert "MLJOB_INGEST_BUDGET" in (await r.json())["error"]["message"]
            async with http.post(base + JOB + "/data", data=body, headers=headers) as r:
                assert r.status == 202, "within the budget the data is taken"
                assert (await r.json())["processedRecordCount"] == 8
        assert api.limits.ingest.in_flight == 0
        await runner.cleanup()
        runtime.close()

    asyncio.run(asyncio.wait_for(test(), 30))


def test_waiters_per_user_are_bounded_and_a_disconnect_cancels_the_wait(tmp_path: Path) -> None:
    async def test() -> None:
        kube = NeverClosed()
        runtime, _, api = serve(tmp_path, limits(waiters=1), kube)
        runner, base = await started(api)
        headers = {"Authorization": "Bearer editor"}
        async with aiohttp.ClientSession() as http:
            first = asyncio.ensure_future(http.post(base + CLOSE, headers=headers))
            deadline = asyncio.get_running_loop().time() + 10
            while api.limits.waiters.waiting.get("editor", 0) == 0:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            async with http.post(base + CLOSE, headers=headers) as second:
                assert second.status == 429
                assert "waiting already" in (await second.json())["error"]["message"]
            first.cancel()
        deadline = asyncio.get_running_loop().time() + 10
        while api.limits.waiters.waiting:
            assert asyncio.get_running_loop().time() < deadline, "the waiter was not cancelled"
            await asyncio.sleep(0.01)
        reads = kube.reads
        await asyncio.sleep(0.1)
        assert kube.reads == reads, "nothing polls for a client that went away"
        await runner.cleanup()
        runtime.close()

    asyncio.run(asyncio.wait_for(test(), 30))


def test_rejected_tokens_are_refused_without_a_review_past_the_rate(tmp_path: Path) -> None:
    async def test() -> None:
        now = [0.0]
        sign_ins = SignInFailures(2, clock=lambda: now[0])
        runtime, reviews, api = serve(tmp_path, limits(), NeverClosed(), sign_ins)
        runner, base = await started(api)
        async with aiohttp.ClientSession() as http:
            codes = []
            for i in range(4):
                bad = {"Authorization": f"Bearer guess-{i}"}
                async with http.get(base + JOB + "/stats", headers=bad) as r:
                    codes.append(r.status)
            assert codes == [401, 401, 429, 429]
            assert reviews.token_reviews == 2, "no TokenReview once the client is refused"
            ok = {"Authorization": "Bearer viewer"}
            async with http.get(base + JOB + "/stats", headers=ok) as r:
                assert r.status == 429, "the client address is refused, whatever the token"
            now[0] += 61
            async with http.get(base + JOB + "/stats", headers=ok) as r:
                assert r.status == 200
        await runner.cleanup()
        runtime.close()

    asyncio.run(asyncio.wait_for(test(), 30))
