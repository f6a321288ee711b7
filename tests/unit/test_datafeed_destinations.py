"""Where a datafeed may pull from: link-local addresses and the apiserver are refused unless
allow-listed, redirects are not followed, and no error quotes what a server answered.
Real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mljob_operator.datafeed import (
    DestinationPolicy,
    HttpQuery,
    PrometheusQuery,
    Window,
    http_source,
    prometheus_source,
)
from mljob_operator.datafeed.destinations import GuardedResolver
from mljob_operator.datafeed.sources import FeedError, Pull, SourceAccess

WINDOW = Window(0, 60_000)
SECRET = "s3cr3t-token-from-an-internal-service"


@pytest.mark.parametrize(
    ("host", "ip", "port", "refused"),
    [
        ("metadata", "169.254.169.254", 80, "link-local"),
        ("x", "fe80::1", 80, "link-local"),
        ("api", "10.0.0.1", 6443, "apiserver"),
        ("api", "10.0.0.1", 8080, None),
        ("prometheus", "10.0.0.7", 9090, None),
        ("localhost", "127.0.0.1", 9090, None),
    ],
)
def test_policy(host: str, ip: str, port: int, refused: str | None) -> None:
    policy = DestinationPolicy.build(apiserver=(("10.0.0.1", 6443),))
    found = policy.refusal(host, ip, port)
    if refused is None:
        assert found is None
    else:
        assert found is not None
        assert refused in found
        assert "MLJOB_DATAFEED_ALLOW" in found


def test_the_allow_list_admits_by_name_or_network() -> None:
    policy = DestinationPolicy.build(
        apiserver=(("10.0.0.1", 6443),), allow=("169.254.0.0/16", "api.internal")
    )
    assert policy.refusal("metadata", "169.254.169.254", 80) is None
    assert policy.refusal("api.internal", "10.0.0.1", 6443) is None
    assert policy.refusal("other", "10.0.0.1", 6443) is not None


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def secret(request: web.Request) -> web.Response:
        return web.Response(status=500, text=SECRET)

    async def not_prometheus(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "errorType": SECRET, "error": SECRET})

    async def prometheus_error(request: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error\nat char 5"}
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/secret", secret)
    app.router.add_post("/np/api/v1/query_range", not_prometheus)
    app.router.add_post("/prom/api/v1/query_range", prometheus_error)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def pull_error(url: str, policy: DestinationPolicy | None = None, prom: bool = False) -> str:
    access = SourceAccess(1 << 20, policy or DestinationPolicy())
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(access.policy))
    async with aiohttp.ClientSession(connector=connector) as session:
        pull = (
            prometheus_source.fetch(
                session, PrometheusQuery(url, "up", 1000, "value"), Pull(WINDOW, access=access)
            )
            if prom
            else http_source.fetch(session, HttpQuery(url), Pull(WINDOW, access=access))
        )
        with pytest.raises(FeedError) as caught:
            await pull
    return str(caught.value)


def run(work: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(work, 30))


def test_redirects_are_not_followed() -> None:
    async def test() -> None:
        async with server() as base:
            error = await pull_error(base + "/redirect")
        assert "HTTP 302" in error
        assert "redirects are not followed" in error
        assert "169.254" not in error

    run(test())


def test_what_a_server_answered_is_never_echoed() -> None:
    async def test() -> None:
        async with server() as base:
            plain = await pull_error(base + "/secret")
            not_prom = await pull_error(base + "/np", prom=True)
            prom = await pull_error(base + "/prom", prom=True)
        assert plain.endswith("HTTP 500")
        assert SECRET not in plain
        assert SECRET not in not_prom
        assert "not a Prometheus API answer" in not_prom
        assert "bad_data: parse error at char 5" in prom, "Prometheus's own error, one line"

    run(test())


def test_refused_destinations_by_address_and_by_name() -> None:
    async def test() -> None:
        async with server() as base:
            port = int(base.rsplit(":", 1)[1])
            apiserver = DestinationPolicy.build(apiserver=(("127.0.0.1", port),))
            by_ip = await pull_error(base + "/secret", apiserver)
            by_name = await pull_error(f"http://localhost:{port}/secret", apiserver)
            allowed = DestinationPolicy.build(
                apiserver=(("127.0.0.1", port),), allow=("127.0.0.1/32", "localhost")
            )
            admitted = await pull_error(base + "/secret", allowed)
            metadata = await pull_error("http://169.254.169.254/latest/meta-data/")
        assert "refused" in by_ip
        assert "apiserver" in by_ip
        assert "refused" in by_name, by_name
        assert admitted.endswith("HTTP 500"), "allow-listed: the request was made"
        assert "link-local" in metadata

    run(test())
