"""Which data API calls go to the job's holder, and a forwarded call over real HTTP on
loopback: it carries the caller's token and comes back with the holder's answer; an
unreachable holder, or none while a shard is taken over, is a 503 with Retry-After; a
call is forwarded at most once."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from devtools.processes import free_port
from mljob_operator.http.errors import errors_as_json
from mljob_operator.http.forward import FORWARDED_BY, Forwarder, needs_holder
from mljob_operator.http.tls import generated_pair

JOB = "/v1/namespaces/ns/mljobs/web"


def test_engine_calls_need_the_holder_and_store_reads_do_not() -> None:
    assert needs_holder("POST", "data")
    assert needs_holder("POST", "close")
    assert needs_holder("GET", "stats")
    assert needs_holder("DELETE", "modelsnapshots/123")
    assert not needs_holder("GET", "results/buckets")
    assert not needs_holder("GET", "modelsnapshots")


class Holders:
    """ns/web is held by the replica at `address` (None: by nobody right now)."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    def held_here(self, namespace: str, name: str) -> bool:
        return (namespace, name) != ("ns", "web")

    def holder_of(self, namespace: str, name: str) -> str | None:
        return self.address


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _forwarding() -> None:
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def holder(request: web.Request) -> web.Response:
        seen.append(
            (
                request.headers.get("Authorization"),
                request.headers.get(FORWARDED_BY),
                await request.read(),
            )
        )
        return web.json_response({"processedRecordCount": 3}, status=202)

    async def local(request: web.Request) -> web.Response:
        return web.json_response({"answered": "here"})

    holder_port, front_port, dead_port = free_port(), free_port(), free_port()
    back = web.Application()
    back.router.add_post(f"{JOB}/data", holder)
    forwarder = Forwarder(Holders(f"127.0.0.1:{holder_port}"), "replica-a", None)
    front = web.Application(middlewares=[errors_as_json(1 << 20)])
    front.middlewares.append(forwarder.middleware)
    front.router.add_post(f"{JOB}/data", local)
    front.router.add_get(f"{JOB}/results/buckets", local)
    runners = [await _serve(back, holder_port), await _serve(front, front_port)]
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{front_port}{JOB}"
            auth = {"Authorization": "Bearer t0ken"}
            async with client.post(f"{url}/data", data=b'{"time":1}', headers=auth) as r:
                assert (r.status, await r.json()) == (202, {"processedRecordCount": 3})
            assert seen == [("Bearer t0ken", "replica-a", b'{"time":1}')]
            async with client.get(f"{url}/results/buckets", headers=auth) as r:
                assert await r.json() == {"answered": "here"}
            again = {**auth, FORWARDED_BY: "replica-b"}
            async with client.post(f"{url}/data", data=b"{}", headers=again) as r:
                assert await r.json() == {"answered": "here"}
            forwarder.holders = Holders(f"127.0.0.1:{dead_port}")
            async with client.post(f"{url}/data", data=b"{}", headers=auth) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "2"
                assert "did not answer" in (await r.json())["error"]["message"]
            forwarder.holders = Holders(None)  # expired, not yet taken over
            async with client.post(f"{url}/data", data=b"{}", headers=auth) as r:
                assert r.status == 503
                assert "no replica holds MLJob ns/web" in (await r.json())["error"]["message"]
    finally:
        await forwarder.close()
        for runner in runners:
            await runner.cleanup()


def test_a_call_is_forwarded_to_the_holder_once() -> None:
    asyncio.run(_forwarding())


async def _over_tls(shared: Path, other: Path) -> tuple[int, int]:
    async def holder(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=202)

    cert, key = generated_pair(shared)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    port = free_port()
    back = web.Application()
    back.router.add_post(f"{JOB}/data", holder)
    runner = web.AppRunner(back)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=served).start()
    codes = []
    try:
        for trusted in (cert, generated_pair(other)[0]):
            forwarder = Forwarder(
                Holders(f"127.0.0.1:{port}"), "a", Forwarder.peer_context(str(trusted))
            )
            front = web.Application(middlewares=[errors_as_json(1 << 20)])
            front.middlewares.append(forwarder.middleware)
            front_port = free_port()
            front_runner = await _serve(front, front_port)
            try:
                async with aiohttp.ClientSession() as client:
                    url = f"http://127.0.0.1:{front_port}{JOB}/data"
                    async with client.post(url, data=b"{}") as answer:
                        codes.append(answer.status)
            finally:
                await forwarder.close()
                await front_runner.cleanup()
    finally:
        await runner.cleanup()
    return codes[0], codes[1]


def test_the_holder_must_serve_the_certificate_this_replica_serves(tmp_path: Path) -> None:
    shared, foreign = asyncio.run(_over_tls(tmp_path / "shared", tmp_path / "other"))
    assert shared == 202
    assert foreign == 503  # another pair: refused, never sent the token
