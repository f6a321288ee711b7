"""kopf's session over real HTTP on loopback: at most `limit` non-watch requests reach the
server at once, the rest wait their turn in the client; a watch never waits for a turn;
a request cancelled while it waits, or one that fails, leaves every turn to the others."""

from __future__ import annotations

import asyncio

import aiohttp
import kopf
from aiohttp import web

from devtools.processes import free_port
from mljob_operator.kopf_session import RequestTurns, session_for
from tests.unit.polling import until

LIMIT = 3


class Server:
    """Answers every request only once released; counts what it holds at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.watches = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.query.get("watch") == "true":
            self.watches += 1
            return web.Response(text="{}")
        if request.path == "/broken":
            raise web.HTTPInternalServerError()
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.Response(text="{}")


async def _scenario() -> None:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    turns = RequestTurns(LIMIT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(trace_configs=[turns.trace()]) as session:

            async def call(path: str) -> int:
                async with session.get(base + path) as answer:
                    return answer.status

            calls = [asyncio.ensure_future(call(f"/jobs/{i}")) for i in range(10)]
            await until(lambda: server.in_flight == LIMIT and turns.waiting == 10 - LIMIT, "3+7")
            assert server.in_flight == LIMIT

            assert await call("/jobs?watch=true") == 200, "a watch takes no turn"
            assert server.watches == 1

            calls[-1].cancel()
            await until(lambda: turns.waiting == 10 - LIMIT - 1, "the cancelled call to leave")

            server.release.set()
            assert await asyncio.gather(*calls[:-1]) == [200] * 9
            assert server.most == LIMIT
            assert await call("/broken") == 500
            assert (turns.held, turns.waiting) == (0, 0)
    finally:
        server.release.set()  # a failed check must not leave the server waiting
        await runner.cleanup()


def test_non_watch_requests_take_turns_and_watches_do_not() -> None:
    asyncio.run(_scenario())


async def _session_of_kopf() -> None:
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", token="t", default_namespace="ns")
    made = session_for(info, limit=2)
    try:
        assert made.server == info.server
        assert made.default_namespace == "ns"
        assert made.aiohttp_session.headers["Authorization"] == "Bearer t"
        assert len(made.aiohttp_session.trace_configs) == 1
    finally:
        await made.aiohttp_session.close()


def test_the_session_signs_in_as_kopf_would() -> None:
    asyncio.run(_session_of_kopf())
