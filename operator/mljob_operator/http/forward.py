"""Forwarding a job's call to the replica that holds it (leased mode), so clients keep one
Service address whichever replica answers.

Calls that need the job's engine (data, flush, stats, snapshot changes: the routes
marked `holder` in the route table) go to the holder's address, published on its shard
Lease; GETs of results or snapshots are served by any replica from the shared store,
and open and close by any replica too (they patch the spec through the apiserver and
wait on the status every replica watches, as a close of several jobs always did), so no
long wait is ever forwarded.

A call is forwarded only from inside its route's guard (`server.DataApi`): after this
replica has authenticated and authorized the caller and, for data, reserved the ingest
budget, so an unauthenticated client can make it buffer nothing and cannot spend the
holder's failed sign-in allowance under this replica's address. The body is streamed,
never read here. The holder checks the bearer token again; a call is forwarded at most
once (`X-MLJob-Forwarded-By`): one arriving at a replica that no longer holds the job
(or a job lost while it is answered) is a 503 with Retry-After, never a 409 saying the
job is closed, and two replicas that briefly disagree about a shard never loop. The
holder's certificate is checked against the one this replica serves (one Secret for all
replicas), not against a host name: replicas reach each other by pod IP; when the served
pair is reloaded (a renewed certificate) that trust is built again from it.

The holder's address comes from a Lease annotation, which anyone who may write Leases in
the operator's namespace can set, so it is used only as a literal `IP:port` (no host
name, user info or path), and only over TLS: with `MLJOB_TLS=off` the caller's token
would cross the network in clear, so nothing is forwarded (503 saying so). At most
`MAX_IN_FLIGHT` forwarded calls wait on holders at once (429 past it).
"""

from __future__ import annotations

import ssl
from typing import Protocol

import aiohttp
from aiohttp import web

from mljob_operator.http.errors import Unavailable
from mljob_operator.http.limits import TooManyRequests
from mljob_operator.http.tls import ReloadingContext
from mljob_operator.settings import literal_address as peer_address

FORWARDED_BY = "X-MLJob-Forwarded-By"
PASSED_HEADERS = ("Authorization", "Content-Type", "Content-Length", "Accept")
RETURNED_HEADERS = ("Content-Type", "Retry-After")
RETRY_AFTER_S = 2
ADDRESS_NOTE = "annotation ml.mljob.dev/address on its shard Lease"
TIMEOUT_S = 300.0
"""A forwarded call's whole time (data, flush, stats, snapshot changes; never a wait
for open or close, which are not forwarded)."""
MAX_IN_FLIGHT = 64


class Holders(Protocol):
    def held_here(self, namespace: str, name: str) -> bool:
        """Whether this replica answers for the job (it holds it, or the job is unknown
        and the answer is a 404 anyway)."""

    def holder_of(self, namespace: str, name: str) -> str | None:
        """`host:port` of the other replica holding the job (None: nobody right now)."""


class Forwarder:
    def __init__(
        self,
        holders: Holders,
        me: str,
        ssl_context: ssl.SSLContext | None,
        max_in_flight: int = MAX_IN_FLIGHT,
        served: ReloadingContext | None = None,
    ) -> None:
        self.holders, self.me, self.ssl_context = holders, me, ssl_context
        self.served, self._trusted = served, None if served is None else served.reloads
        self.max_in_flight, self.in_flight = max_in_flight, 0
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def peer_context(served_cert: str) -> ssl.SSLContext:
        """Trust exactly the certificate (chain) this replica serves, any host name; a
        leaf issued by a CA is trusted as such (partial chain), no CA file needed."""
        context = ssl.create_default_context(cafile=served_cert)
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def held_here(self, namespace: str, name: str) -> bool:
        return self.holders.held_here(namespace, name)

    def target(self, request: web.Request) -> str | None:
        """Where this call of a `holder` route (the route table says which) goes: None to
        answer it here."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if self.holders.held_here(namespace, name):
            return None
        if request.headers.get(FORWARDED_BY):
            raise self.moved(namespace, name)
        holder = self.holders.holder_of(namespace, name)
        if holder is None:
            raise Unavailable(
                f"no replica holds MLJob {namespace}/{name} right now (its shard is being"
                f" taken over); retry in {RETRY_AFTER_S}s",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        address = peer_address(holder)
        if address is None:
            raise Unavailable(
                f"MLJob {namespace}/{name} is held by another replica whose published"
                f" address ({ADDRESS_NOTE}) is not an IP:port; not forwarded. Set"
                " MLJOB_ADVERTISE_ADDR (or MLJOB_POD_IP) on the replicas."
            )
        if self.ssl_context is None:
            raise Unavailable(
                f"MLJob {namespace}/{name} is held by another replica, and calls are not"
                " forwarded between replicas with MLJOB_TLS=off (the bearer token would"
                " cross the network in clear); serve the data API over TLS."
            )
        return address

    @staticmethod
    def moved(namespace: str, name: str) -> Unavailable:
        """This replica no longer holds the job (a forwarded call arriving just after
        the shard moved, or a shard lost while answering): retry, never a 409."""
        return Unavailable(
            f"this replica no longer holds MLJob {namespace}/{name} (its shard is moving to"
            f" another replica); retry in {RETRY_AFTER_S}s",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    async def forward(self, request: web.Request, target: str) -> web.Response:
        """The holder's answer to this (already authorized) call; its body is streamed."""
        if self.in_flight >= self.max_in_flight:
            raise TooManyRequests(
                f"{self.in_flight} calls are being forwarded to other replicas already (at"
                f" most {self.max_in_flight}); retry shortly",
                RETRY_AFTER_S,
            )
        self.in_flight += 1
        try:
            return await self._forward(request, target)
        finally:
            self.in_flight -= 1

    def _peer_trust(self) -> ssl.SSLContext | bool:
        """The peer context, built again once the served pair was reloaded (a renewed
        certificate is the one the other replicas serve too)."""
        if self.served is not None:
            self.served.check_if_due()
            if self.served.reloads != self._trusted:
                self._trusted = self.served.reloads
                self.ssl_context = self.peer_context(str(self.served.cert))
        return self.ssl_context or True  # target() refuses without TLS

    async def _forward(self, request: web.Request, target: str) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        headers = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
        headers[FORWARDED_BY] = self.me
        try:
            async with self._session.request(
                request.method,
                f"https://{target}{request.rel_url}",
                data=request.content if request.body_exists else None,
                headers=headers,
                ssl=self._peer_trust(),
            ) as answer:
                payload = await answer.read()
                kept = {h: answer.headers[h] for h in RETURNED_HEADERS if h in answer.headers}
                return web.Response(status=answer.status, body=payload, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise Unavailable(
                f"the replica holding this MLJob ({target}) did not answer ({err}); it is"
                f" taken over within the lease duration if it is gone. Retry in"
                f" {RETRY_AFTER_S}s.",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
