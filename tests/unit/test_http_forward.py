"""Which data API calls go to the job's holder, and a forwarded call over real HTTP on
loopback: only an authenticated, authorized call within the ingest budget is sent on; it
carries the caller's token and comes back with the holder's answer; an unreachable
holder, or none while a shard is taken over, is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from devtools.processes import free_port
from mljob_operator.http.auth import Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.forward import FORWARDED_BY, Forwarder, peer_address
from mljob_operator.http.limits import IngestBudget, WaiterLimit
from mljob_operator.http.routes import JOB as JOB_PATH
from mljob_operator.http.routes import ROUTES
from mljob_operator.http.server import ApiLimits, DataApi
from mljob_operator.http.tls import ReloadingContext, generated_pair
from mljob_operator.runtime import JobRuntime
from mljob_operator.store import open_store
from tests.unit.test_http_server import Jobs, NoJobs, Reviews

JOB = "/v1/namespaces/ns/mljobs/web"


def needs_holder(method: str, rest: str) -> bool:
    """The route table's word for a call of a job (`Route.holder`)."""
    (route,) = [r for r in ROUTES if r.method == method and r.path == f"{JOB_PATH}/{rest}"]
    return route.holder


def test_engine_calls_need_the_holder_and_store_reads_do_not() -> None:
    assert needs_holder("POST", "data")
    assert needs_holder("GET", "stats")
    assert needs_holder("DELETE", "modelsnapshots/{snapshotId}")
    assert not needs_holder("GET", "results/buckets")
    assert not needs_holder("GET", "modelsnapshots")
    assert not needs_holder("POST", "open")  # through the apiserver, waited on here
    assert [r for r in ROUTES if r.operation_id == "closeJobs" and r.holder] == []


class Holders:
    """ns/web is held by the replica at `address` (None: by nobody right now)."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    def held_here(self, namespace: str, name: str) -> bool:
        return (namespace, name) != ("ns", "web")

    def holder_of(self, namespace: str, name: str) -> str | None:
        return self.address


async def _serve(
    app: web.Application, port: int, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    return runner


def _pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A served certificate, and the peer context of a replica serving the same one."""
    cert, key = generated_pair(directory)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    return served, Forwarder.peer_context(str(cert))


def test_only_a_literal_ip_and_port_is_a_forward_target() -> None:
    assert peer_address("10.0.0.7:8443") == "10.0.0.7:8443"
    assert peer_address("[fd00::7]:8443") == "[fd00::7]:8443"
    for bad in (
        "evil.example:443",
        "user@10.0.0.7:8443",
        "10.0.0.7:8443/path",
        "10.0.0.7",
        "10.0.0.7:0",
        "10.0.0.7:70000",
        "fd00::7:8443",
        "10.0.0.7:8443#x",
        "",
    ):
        assert peer_address(bad) is None, bad


def _front(tmp_path: Path, forwarder: Forwarder, budget: IngestBudget) -> DataApi:
    """This replica's data API: ns/web exists here, its shard is held by another."""
    return DataApi(
        JobRuntime(open_store(tmp_path)),
        Authorizer(Reviews()),
        StateRequests(NoJobs()),
        Jobs({("ns", "web")}),
        max_body_bytes=1024,
        limits=ApiLimits(budget, WaiterLimit(4)),
        forwarder=forwarder,
    )


async def _forwarding(tmp_path: Path) -> None:
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

    holder_port, front_port, dead_port = free_port(), free_port(), free_port()
    back = web.Application()
    back.router.add_post(f"{JOB}/data", holder)
    served, peers = _pair(tmp_path / "tls")
    forwarder = Forwarder(Holders(f"127.0.0.1:{holder_port}"), "replica-a", peers)
    budget = IngestBudget(64)
    api = _front(tmp_path, forwarder, budget)
    runners = [await _serve(back, holder_port, served), await _serve(api.app(), front_port)]
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{front_port}{JOB}"
            auth = {"Authorization": "Bearer editor"}
            for headers in ({}, {"Authorization": "Bearer nobody"}):
                async with client.post(f"{url}/data", data=b'{"time":1}', headers=headers) as r:
                    assert r.status == 401  # authenticated here, before anything is sent on
            async with client.post(
                f"{url}/data", data=b"{}", headers={"Authorization": "Bearer viewer"}
            ) as r:
                assert r.status == 403
            assert seen == []
            async with client.post(f"{url}/data", data=b'{"time":1}', headers=auth) as r:
                assert (r.status, await r.json()) == (202, {"processedRecordCount": 3})
            assert seen == [("Bearer editor", "replica-a", b'{"time":1}')]
            assert budget.in_flight == 0
            with budget.reserve(60):  # other posts hold the ingest budget: refused here
                async with client.post(f"{url}/data", data=b'{"time":2}', headers=auth) as r:
                    assert (r.status, r.headers["Retry-After"]) == (429, "1")
            assert len(seen) == 1
            async with client.get(f"{url}/results/buckets", headers=auth) as r:
                assert (r.status, await r.json()) == (200, {"count": 0, "buckets": []})
            moved = {**auth, FORWARDED_BY: "replica-b"}  # sent here, but the shard moved
            async with client.post(f"{url}/data", data=b"{}", headers=moved) as r:
                assert (r.status, r.headers["Retry-After"]) == (503, "2")
                assert "no longer holds" in (await r.json())["error"]["message"]
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
        api.runtime.close()


async def _not_forwarded(tmp_path: Path) -> list[tuple[int, str]]:
    """A published address that is not a literal IP:port, and a replica serving without
    TLS: nothing is sent, the answer says why."""
    reached: list[str] = []

    async def holder(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response({}, status=202)

    back = web.Application()
    back.router.add_post(f"{JOB}/data", holder)
    served, peers = _pair(tmp_path / "tls")
    holder_port, front_port = free_port(), free_port()
    forwarder = Forwarder(Holders(f"user@localhost:{holder_port}"), "a", peers)
    api = _front(tmp_path, forwarder, IngestBudget(1 << 20))
    runners = [await _serve(back, holder_port, served), await _serve(api.app(), front_port)]
    answers = []
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{front_port}{JOB}/data"
            auth = {"Authorization": "Bearer editor"}
            for address, tls in ((f"user@localhost:{holder_port}", peers), (None, None)):
                forwarder.holders = Holders(address or f"127.0.0.1:{holder_port}")
                forwarder.ssl_context = tls
                async with client.post(url, data=b"{}", headers=auth) as r:
                    answers.append((r.status, (await r.json())["error"]["message"]))
    finally:
        await forwarder.close()
        for runner in runners:
            await runner.cleanup()
        api.runtime.close()
    assert reached == []
    return answers


def test_no_call_goes_to_a_host_name_or_without_tls(tmp_path: Path) -> None:
    (bad_address, no_tls) = asyncio.run(_not_forwarded(tmp_path))
    assert bad_address[0] == 503
    assert "not an IP:port" in bad_address[1]
    assert no_tls[0] == 503
    assert "MLJOB_TLS=off" in no_tls[1]


def test_a_call_is_forwarded_only_once_authorized_and_within_the_ingest_budget(
    tmp_path: Path,
) -> None:
    asyncio.run(_forwarding(tmp_path))


async def _over_tls(tmp_path: Path) -> tuple[int, int]:
    async def holder(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=202)

    cert, key = generated_pair(tmp_path / "shared")
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
        for n, trusted in enumerate((cert, generated_pair(tmp_path / "other")[0])):
            forwarder = Forwarder(
                Holders(f"127.0.0.1:{port}"), "a", Forwarder.peer_context(str(trusted))
            )
            api = _front(tmp_path / f"store-{n}", forwarder, IngestBudget(1 << 20))
            front_port = free_port()
            front_runner = await _serve(api.app(), front_port)
            try:
                async with aiohttp.ClientSession() as client:
                    url = f"http://127.0.0.1:{front_port}{JOB}/data"
                    auth = {"Authorization": "Bearer editor"}
                    async with client.post(url, data=b"{}", headers=auth) as answer:
                        codes.append(answer.status)
            finally:
                await forwarder.close()
                await front_runner.cleanup()
                api.runtime.close()
    finally:
        await runner.cleanup()
    return codes[0], codes[1]


class LostWhileAnswering:
    """ns/web is held here when the call comes in, and lost before it is answered."""

    def __init__(self) -> None:
        self.asked = 0

    def held_here(self, namespace: str, name: str) -> bool:
        self.asked += 1
        return self.asked == 1

    def holder_of(self, namespace: str, name: str) -> str | None:
        return None


async def _lost_while_answering(tmp_path: Path) -> tuple[int, str | None, str]:
    forwarder = Forwarder(LostWhileAnswering(), "replica-a", _pair(tmp_path / "tls")[1])
    api = _front(tmp_path, forwarder, IngestBudget(1 << 20))
    port = free_port()
    runner = await _serve(api.app(), port)
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{port}{JOB}/data"
            auth = {"Authorization": "Bearer editor"}
            async with client.post(url, data=b'{"time":1}', headers=auth) as r:
                body = await r.json()
                return r.status, r.headers.get("Retry-After"), body["error"]["reason"]
    finally:
        await forwarder.close()
        await runner.cleanup()
        api.runtime.close()


def test_a_job_lost_while_answering_is_a_503_never_a_409(tmp_path: Path) -> None:
    assert asyncio.run(_lost_while_answering(tmp_path)) == (503, "2", "ServiceUnavailable")


def test_the_holder_must_serve_the_certificate_this_replica_serves(tmp_path: Path) -> None:
    shared, foreign = asyncio.run(_over_tls(tmp_path))
    assert shared == 202
    assert foreign == 503  # another pair: refused, never sent the token


async def _bounded(tmp_path: Path) -> tuple[int, int]:
    """One forwarded call may wait at once here: the second is a 429, not another
    parked connection; the first still gets its answer."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({"flushed": True})

    back = web.Application()
    back.router.add_post(f"{JOB}/flush", slow)
    served, peers = _pair(tmp_path / "tls")
    holder_port, front_port = free_port(), free_port()
    forwarder = Forwarder(Holders(f"127.0.0.1:{holder_port}"), "a", peers, max_in_flight=1)
    api = _front(tmp_path, forwarder, IngestBudget(1 << 20))
    runners = [await _serve(back, holder_port, served), await _serve(api.app(), front_port)]
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{front_port}{JOB}/flush"
            auth = {"Authorization": "Bearer editor"}

            async def call() -> int:
                async with client.post(url, headers=auth) as r:
                    return r.status

            first = asyncio.ensure_future(call())
            await entered.wait()
            second = await call()
            release.set()
            return await first, second
    finally:
        await forwarder.close()
        for runner in runners:
            await runner.cleanup()
        api.runtime.close()


def test_forwarded_calls_in_flight_are_bounded(tmp_path: Path) -> None:
    assert asyncio.run(_bounded(tmp_path)) == (200, 429)


async def _renewed(tmp_path: Path) -> list[int]:
    """Both replicas' certificate is renewed in place (one Secret): this replica's trust
    follows its own served pair, so forwarding goes on without a restart."""

    async def holder(request: web.Request) -> web.Response:
        return web.json_response({"flushed": True})

    cert, key = generated_pair(tmp_path / "tls")
    served = ReloadingContext(cert, key, check_every_s=0.0)
    holder_port, front_port = free_port(), free_port()
    forwarder = Forwarder(
        Holders(f"127.0.0.1:{holder_port}"),
        "a",
        Forwarder.peer_context(str(cert)),
        served=served,
    )
    api = _front(tmp_path, forwarder, IngestBudget(1 << 20))
    front = await _serve(api.app(), front_port)
    codes = []
    try:
        for n in range(2):
            if n:  # a renewed pair replaces the files; the holder serves it from now on
                renewed = generated_pair(tmp_path / "renewed")
                cert.write_bytes(renewed[0].read_bytes())
                key.write_bytes(renewed[1].read_bytes())
            back = web.Application()
            back.router.add_post(f"{JOB}/flush", holder)
            runner = await _serve(back, holder_port, _pair(cert.parent)[0])
            try:
                async with aiohttp.ClientSession() as client:
                    url = f"http://127.0.0.1:{front_port}{JOB}/flush"
                    auth = {"Authorization": "Bearer editor"}
                    async with client.post(url, headers=auth) as r:
                        codes.append(r.status)
            finally:
                await runner.cleanup()
    finally:
        await forwarder.close()
        await front.cleanup()
        api.runtime.close()
    return codes


def test_peer_trust_follows_a_renewed_served_certificate(tmp_path: Path) -> None:
    assert asyncio.run(_renewed(tmp_path)) == [200, 200]
