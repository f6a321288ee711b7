"""Datafeed authentication against a REAL Prometheus (the Debian binary, six hours of a
gauge backfilled by promtool) behind a loopback proxy (aiohttp, in this test) that answers
401 unless a request carries valid credentials (a bearer token or basic auth) and the
tenant header `X-Scope-OrgID: team-a`, on plain HTTP and on HTTPS with a certificate of a
CA generated here. The same proxy serves an HTTP source. Credentials live in real Secrets
and ConfigMaps read by the operator through its namespaced RBAC; a missing Secret is
reported as CredentialsNotFound and the feed heals once it is created. No credential ever
shows up in status, events or the operator's log."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OPERATOR_USER, OperatorProcess
from devtools.prometheus import Prometheus, openmetrics
from tests.e2e.jobs import condition, events, get, mljob, status, wait_for
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
"""The proxy is asyncio's TLS server in this process: when the operator gives up a TLS
handshake half-way (its CA or server name not yet what the proxy serves), CPython 3.11
leaves that accepted socket to the garbage collector, whose ResourceWarning then lands in
whichever test runs (seen once in CI). Only that warning is ignored, in this module."""

BASE = 1_699_999_800  # epoch seconds on a 5-minute boundary
MINUTES = 6 * 60
METRIC = "queue_depth"
TOKEN = "tok-7f3a9c1e5b"
USER, PASSWORD = "mimir-reader", "pw-2b8d4e6f0a"
TENANT = "team-a"
SERVER_NAME = "prometheus.monitoring.test"
CREDENTIALS_ROLE = "mljob-operator-datafeed-credentials"
SECRETS = (TOKEN, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def samples() -> list[tuple[dict[str, str], int, float]]:
    return [
        ({"queue": "q1"}, BASE + m * 60, round(50 + 10 * math.sin(m / 30), 3))
        for m in range(MINUTES)
    ]


class AuthProxy:
    """Loopback proxy in front of Prometheus (and an HTTP source at /events) that demands
    credentials and the tenant header; `requests` records (path, authorized)."""

    def __init__(self, upstream: str, tls: ssl.SSLContext) -> None:
        self.upstream, self.tls = upstream, tls
        self.accepted = {
            f"Bearer {TOKEN}",
            "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        }
        self.requests: list[tuple[str, bool]] = []
        self.http_url = self.https_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorized = (
            request.headers.get("Authorization") in self.accepted
            and request.headers.get("X-Scope-OrgID") == TENANT
        )
        self.requests.append((request.path, authorized))
        if not authorized:
            return web.Response(status=401, text="credentials required")
        if request.path == "/events":
            start, end = int(request.query["start"]), int(request.query["end"])
            lines = [
                json.dumps({"time": t, "value": v, "queue": "q1"})
                for _labels, t, v in samples()
                if start <= t * 1000 < end
            ]
            return web.Response(text="\n".join(lines), content_type="application/x-ndjson")
        assert self._client is not None
        async with self._client.request(
            request.method,
            self.upstream + request.path,
            params=request.query,
            data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "text/plain")},
        ) as upstream:
            body = await upstream.read()
            return web.Response(
                status=upstream.status, body=body, content_type=upstream.content_type
            )

    async def _start(self) -> None:
        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        plain = web.TCPSite(self._runner, "127.0.0.1", 0)
        await plain.start()
        secure = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await secure.start()
        ports = [addr[1] for addr in self._runner.addresses]
        self.http_url, self.https_url = (
            f"http://127.0.0.1:{ports[0]}",
            f"https://127.0.0.1:{ports[1]}",
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def __enter__(self) -> AuthProxy:
        self._thread.start()
        assert self._ready.wait(30), "the proxy did not start"
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def since(self, mark: int) -> list[tuple[str, bool]]:
        return list(self.requests[mark:])


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    with Prometheus(openmetrics(METRIC, samples(), "Queue depth.")) as prom:
        yield prom


@pytest.fixture(scope="module")
def proxy(
    prometheus: Prometheus, ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthProxy]:
    tls = ca.issue(SERVER_NAME).server_context(tmp_path_factory.mktemp("proxy-tls"))
    with AuthProxy(prometheus.url, tls) as running:
        yield running


def apply(cp: ControlPlane, ns: str, *objects: dict[str, Any]) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(listing))


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def grant_credentials(cp: ControlPlane, ns: str) -> None:
    """The per-namespace RoleBinding the README asks for; returns once RBAC honours it."""
    cp.kubectl(
        "create",
        "rolebinding",
        CREDENTIALS_ROLE,
        "-n",
        ns,
        f"--clusterrole={CREDENTIALS_ROLE}",
        "--serviceaccount=mljob-system:mljob-operator",
    )
    wait_for(
        lambda: (
            cp.kubectl(
                "auth", "can-i", "get", "secrets", "-n", ns, f"--as={OPERATOR_USER}", check=False
            ).stdout.strip()
            == "yes"
        ),
        "RBAC to honour the credentials RoleBinding",
    )


def iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def feed_job(name: str, source: str, **settings: Any) -> str:
    src = {"query": METRIC, "step": "1m", **settings} if source == "prometheus" else settings
    return mljob(
        name,
        analysisConfig={
            "bucketSpan": "5m",
            "detectors": [{"function": "high_mean", "fieldName": "value", "byFieldName": "queue"}],
        },
        datafeed={source: src, "start": iso(BASE), "end": iso(BASE + MINUTES * 60)},
    )


def bearer(secret_name: str = "prom-token") -> dict[str, Any]:
    return {
        "authorization": {"credentials": {"name": secret_name, "key": "token"}},
        "headers": {"X-Scope-OrgID": TENANT},
    }


def wait_closed(cp: ControlPlane, ns: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def closed() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if condition(st, "Closed").get("status") == "True" else None

    try:
        return wait_for(closed, f"{name} to close", timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {json.dumps(status(cp, ns, name))}") from None


def assert_all_analysed(st: dict[str, Any]) -> None:
    assert condition(st, "Closed")["reason"] == "DatafeedEnded", st
    assert st["dataCounts"]["processedRecordCount"] == MINUTES, st["dataCounts"]
    assert st["datafeed"]["searchedUntil"] == (BASE + MINUTES * 60) * 1000
    assert "lastError" not in st["datafeed"]


def assert_no_credentials_leak(
    cp: ControlPlane, ns: str, name: str, operator: OperatorProcess
) -> None:
    shown = json.dumps(get(cp, ns, name)) + json.dumps(events(cp, ns, name))
    shown += operator.log_path.read_text(errors="replace")
    for value in SECRETS:
        assert value not in shown


def test_the_proxy_refuses_requests_without_credentials(proxy: AuthProxy) -> None:
    """The proxy is honest: without the token, or without the tenant header, it is 401."""
    url = f"{proxy.http_url}/api/v1/query?query=up"
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"X-Scope-OrgID": TENANT}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 401
    ok = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {TOKEN}", "X-Scope-OrgID": TENANT}
    )
    with urllib.request.urlopen(ok, timeout=10) as answer:
        assert json.loads(answer.read())["status"] == "success"


def test_bearer_token_and_tenant_header_reach_prometheus(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, proxy: AuthProxy
) -> None:
    cp, ns, name = control_plane, namespace, "bearer"
    grant_credentials(cp, ns)
    apply(cp, ns, secret("prom-token", token=TOKEN + "\n"))
    mark = len(proxy.requests)
    cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=feed_job(name, "prometheus", url=proxy.http_url, **bearer()),
    )
    st = wait_closed(cp, ns, name)
    assert_all_analysed(st)
    seen = proxy.since(mark)
    assert seen, "the feed went through the proxy"
    assert all(ok for _, ok in seen), seen
    assert {path for path, _ in seen} == {"/api/v1/query_range"}
    assert_no_credentials_leak(cp, ns, name, operator)


def test_basic_auth_over_tls_with_a_ca_from_a_secret(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    proxy: AuthProxy,
    ca: CertificateAuthority,
) -> None:
    """The proxy's certificate names SERVER_NAME, not 127.0.0.1: serverName is needed, and
    the CA comes from the Secret (no system authority knows it)."""
    cp, ns, name = control_plane, namespace, "basic-tls"
    grant_credentials(cp, ns)
    apply(
        cp,
        ns,
        secret("prom-basic", username=USER, password=PASSWORD, **{"ca.crt": ca.cert_pem.decode()}),
    )
    mark = len(proxy.requests)
    auth = {
        "basicAuth": {
            "username": {"name": "prom-basic", "key": "username"},
            "password": {"name": "prom-basic", "key": "password"},
        },
        "headers": {"X-Scope-OrgID": TENANT},
        "tlsConfig": {
            "ca": {"secret": {"name": "prom-basic", "key": "ca.crt"}},
            "serverName": SERVER_NAME,
        },
    }
    cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=feed_job(name, "prometheus", url=proxy.https_url, **auth),
    )
    st = wait_closed(cp, ns, name)
    assert_all_analysed(st)
    seen = proxy.since(mark)
    assert seen, "the feed went through the proxy"
    assert all(ok for _, ok in seen), seen
    assert_no_credentials_leak(cp, ns, name, operator)


def test_http_source_with_a_bearer_token_and_a_ca_from_a_config_map(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    proxy: AuthProxy,
    ca: CertificateAuthority,
) -> None:
    cp, ns, name = control_plane, namespace, "http-tls"
    grant_credentials(cp, ns)
    apply(
        cp,
        ns,
        secret("prom-token", token=TOKEN),
        config_map("proxy-ca", **{"ca.crt": ca.cert_pem.decode()}),
    )
    mark = len(proxy.requests)
    settings = {
        **bearer(),
        "url": f"{proxy.https_url}/events",
        "tlsConfig": {
            "ca": {"configMap": {"name": "proxy-ca", "key": "ca.crt"}},
            "serverName": SERVER_NAME,
        },
    }
    cp.kubectl("apply", "-n", ns, "-f", "-", input=feed_job(name, "http", **settings))
    st = wait_closed(cp, ns, name)
    assert_all_analysed(st)
    seen = proxy.since(mark)
    assert {path for path, _ in seen} == {"/events"}
    assert all(ok for _, ok in seen), seen
    assert_no_credentials_leak(cp, ns, name, operator)


def test_a_missing_secret_is_reported_and_the_feed_heals_once_it_exists(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    proxy: AuthProxy,
    prometheus: Prometheus,
) -> None:
    """The job stays open and not failed, with Ready reason CredentialsNotFound and a
    Warning event naming the Secret; another job of the namespace goes on meanwhile; once
    the Secret is created, the next retry reads it and the feed runs to its end."""
    cp, ns, name = control_plane, namespace, "no-secret"
    grant_credentials(cp, ns)
    cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=feed_job(name, "prometheus", url=proxy.http_url, **bearer("later")),
    )

    def failing() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if (st.get("datafeed") or {}).get("lastErrorReason") else None

    st = wait_for(failing, "the credentials error in status")
    assert st["state"] == "opened"
    assert st["datafeed"]["lastErrorReason"] == "CredentialsNotFound"
    assert f"Secret {ns}/later not found" in st["datafeed"]["lastError"]
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CredentialsNotFound")
    assert f"Secret {ns}/later not found" in ready["message"]
    assert condition(st, "Failed")["status"] == "False"
    warning = wait_for(
        lambda: [e for e in events(cp, ns, name) if e["reason"] == "CredentialsNotFound"],
        "a CredentialsNotFound event",
    )[0]
    assert warning["type"] == "Warning"
    assert f"Secret {ns}/later not found" in warning["message"]

    other = "no-auth-neighbour"
    cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=feed_job(other, "prometheus", url=prometheus.url)
    )
    assert_all_analysed(wait_closed(cp, ns, other))
    assert "lastErrorReason" in status(cp, ns, name)["datafeed"], "still waiting for its Secret"

    apply(cp, ns, secret("later", token=TOKEN))
    st = wait_closed(cp, ns, name)
    assert_all_analysed(st)
    assert "lastErrorReason" not in st["datafeed"]
    assert condition(st, "Ready")["status"] == "True"
    assert_no_credentials_leak(cp, ns, name, operator)


def test_without_the_rolebinding_the_operator_says_what_rbac_it_lacks(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, proxy: AuthProxy
) -> None:
    """The operator may read no Secret in a namespace that did not bind the role, even
    one that exists."""
    cp, ns, name = control_plane, namespace, "no-rbac"
    apply(cp, ns, secret("prom-token", token=TOKEN))
    cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=feed_job(name, "prometheus", url=proxy.http_url, **bearer()),
    )

    def failing() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if (st.get("datafeed") or {}).get("lastErrorReason") else None

    feed = wait_for(failing, "the credentials error in status")["datafeed"]
    assert feed["lastErrorReason"] == "CredentialsNotFound"
    assert "may not read it (RBAC: get secrets)" in feed["lastError"]
    assert CREDENTIALS_ROLE in feed["lastError"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {
                **bearer(),
                "basicAuth": {
                    "username": {"name": "s", "key": "u"},
                    "password": {"name": "s", "key": "p"},
                },
            },
            "authorization and basicAuth are mutually exclusive",
        ),
        (
            {"headers": {"Host": "evil"}},
            "may not be Authorization (use authorization or basicAuth), Host",
        ),
        ({"headers": {"Proxy-Authorization": "x"}}, "hop-by-hop"),
        ({"tlsConfig": {"serverName": "x"}}, "tlsConfig needs an https:// url"),
    ],
)
def test_the_apiserver_refuses_invalid_authentication(
    mljob_crd: ControlPlane, namespace: str, source: dict[str, Any], message: str
) -> None:
    manifest = feed_job("invalid", "prometheus", url="http://prometheus:9090", **source)
    refused = mljob_crd.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr
