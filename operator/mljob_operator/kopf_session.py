"""kopf's HTTP session, with the requests it has in flight at once bounded.

kopf's own session has no connection limit, and its per-object workers patch
concurrently: in a storm of 1,000 created jobs (one finalizer patch each) it had 140
connections to the apiserver open at once. Each is a TLS handshake on both sides and,
in asyncio, a 256 KiB read buffer that the allocator keeps after the connection closes
(about 35 MB of the operator's resident memory after such a storm).

So the login below is kopf's usual one (in-cluster ServiceAccount, else kubeconfig),
returned as kopf's public `AiohttpSession` whose session lets at most `MAX_IN_FLIGHT`
requests wait for an answer at a time; more wait their turn in the operator. Watches
are exempt: each holds its request for as long as it streams (one per watched
namespace), and one waiting for another's turn would starve the operator of events.
"""

from __future__ import annotations

import asyncio
import warnings
from types import SimpleNamespace
from typing import Any

import aiohttp
import kopf

MAX_IN_FLIGHT = 16
"""Non-watch requests of kopf's in flight at once (finalizer patches, Events)."""


class RequestTurns:
    """At most `limit` non-watch requests of a session in flight: each waits for a turn
    before it is sent and gives it back once answered or failed (also when cancelled)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.held = 0
        self._turns = asyncio.Semaphore(limit)

    async def _start(self, _: Any, ctx: SimpleNamespace, params: Any) -> None:
        ctx.holds_turn = False
        if params.url.query.get("watch") in ("true", "1"):
            return
        self.waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self.waiting -= 1
        ctx.holds_turn = True
        self.held += 1

    async def _done(self, _: Any, ctx: SimpleNamespace, __: Any) -> None:
        if getattr(ctx, "holds_turn", False):
            ctx.holds_turn = False
            self.held -= 1
            self._turns.release()

    def trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._start)
        trace.on_request_end.append(self._done)
        trace.on_request_exception.append(self._done)
        trace.freeze()
        return trace


def session_for(info: kopf.ConnectionInfo, limit: int = MAX_IN_FLIGHT) -> kopf.AiohttpSession:
    """The session kopf would make for `info`, with its requests bounded."""
    with warnings.catch_warnings():  # kopf's own helper warns about basic auth, as kopf does
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=[RequestTurns(limit).trace()],
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(**kwargs)
    return None if info is None else session_for(info)
