"""Datafeed authentication: the spec's fields and their validation, Secret keys turned
into request headers and a TLS context, and requests that carry them to a real aiohttp
server on loopback (plain HTTP and TLS with a CA, serverName and a client certificate
generated here). No value is ever in an error message."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from mljob_operator import conditions
from mljob_operator.api import DatafeedStatus, JobState, MLJobSpec, MLJobStatus, Reason
from mljob_operator.api.v1alpha1 import DesiredState
from mljob_operator.crdgen import build_crd
from mljob_operator.datafeed import (
    ClientConfig,
    CredentialsInvalid,
    CredentialsNotFound,
    FeedConfig,
    HttpQuery,
    KeyRef,
    PrometheusQuery,
    Window,
    http_source,
    prometheus_source,
)
from mljob_operator.datafeed.credentials import SECRET, resolve
from mljob_operator.datafeed.runner import FeedRunner, Progress
from mljob_operator.datafeed.sources import FeedError, Pull, SourceAccess, request
from mljob_operator.datafeed_supervisor import client_config, feed_config, key_reader
from mljob_operator.kube import JobGone, KubeError
from tests.tls_certs import CertificateAuthority
from tests.unit.test_datafeed_runner import END, T0, Engine, records

ANALYSIS = {"bucketSpan": "1m", "detectors": [{"function": "count"}]}
TOKEN = "s3cr3t-token"


def spec(**source: Any) -> MLJobSpec:
    src = {"url": "https://prom:9090", "query": "up", **source}
    return MLJobSpec.model_validate({"analysisConfig": ANALYSIS, "datafeed": {"prometheus": src}})


def secret(name: str, key: str) -> dict[str, str]:
    return {"name": name, "key": key}


# ---------------------------------------------------------------------------- models


def test_every_field_parses_into_the_runner_config() -> None:
    parsed = spec(
        authorization={"credentials": secret("prom-auth", "token")},
        headers={"X-Scope-OrgID": "team-a"},
        tlsConfig={
            "ca": {"configMap": secret("prom-ca", "ca.crt")},
            "cert": {"secret": secret("client", "tls.crt")},
            "keySecret": secret("client", "tls.key"),
            "serverName": "prometheus.monitoring.svc",
        },
    )
    config = feed_config(parsed)
    assert config is not None
    assert isinstance(config.source, PrometheusQuery)
    assert config.source.client == ClientConfig(
        authorization=("Bearer", KeyRef("Secret", "prom-auth", "token")),
        headers=(("X-Scope-OrgID", "team-a"),),
        ca=KeyRef("ConfigMap", "prom-ca", "ca.crt"),
        cert=KeyRef("Secret", "client", "tls.crt"),
        key=KeyRef("Secret", "client", "tls.key"),
        server_name="prometheus.monitoring.svc",
    )
    basic = MLJobSpec.model_validate(
        {
            "analysisConfig": ANALYSIS,
            "datafeed": {
                "http": {
                    "url": "http://src/data",
                    "basicAuth": {"username": secret("b", "u"), "password": secret("b", "p")},
                }
            },
        }
    )
    assert basic.datafeed is not None
    assert basic.datafeed.http is not None
    assert client_config(basic.datafeed.http).basic_auth == (
        KeyRef("Secret", "b", "u"),
        KeyRef("Secret", "b", "p"),
    )
    assert client_config(basic.datafeed.http).tls is False


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {
                "authorization": {"credentials": secret("a", "t")},
                "basicAuth": {"username": secret("a", "u"), "password": secret("a", "p")},
            },
            "authorization and basicAuth are mutually exclusive",
        ),
        (
            {"authorization": {"type": "basic", "credentials": secret("a", "t")}},
            "Basic is not supported: use basicAuth",
        ),
        ({"authorization": {"type": "Bearer"}}, "credentials"),
        ({"headers": {"Host": "evil"}}, "may not be Authorization"),
        ({"headers": {"authorization": "Bearer x"}}, "may not be Authorization"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "hop-by-hop"),
        ({"headers": {"Connection": "close"}}, "hop-by-hop"),
        ({"headers": {"X Bad": "v"}}, "HTTP tokens"),
        ({"headers": {"X-" + "a" * 127: "v"}}, "HTTP tokens"),
        ({"headers": {"X-Tenant": "a\r\nHost: evil"}}, "should match pattern"),
        ({"headers": {"X-Tenant": "a" * 4097}}, "at most 4096"),
        ({"headers": {f"X-H{i}": "v" for i in range(17)}}, "at most 16"),
        ({"tlsConfig": {"ca": {}}}, "exactly one of secret and configMap"),
        (
            {"tlsConfig": {"cert": {"secret": secret("c", "tls.crt")}}},
            "cert and tlsConfig.keySecret go together",
        ),
        ({"authorization": {"credentials": secret("Not_A_Name", "t")}}, "should match pattern"),
    ],
)
def test_invalid_authentication_is_refused_with_a_clear_error(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**source)


def test_tls_config_needs_an_https_url() -> None:
    with pytest.raises(ValidationError, match="tlsConfig needs an https:// url"):
        MLJobSpec.model_validate(
            {
                "analysisConfig": ANALYSIS,
                "datafeed": {"http": {"url": "http://src", "tlsConfig": {"serverName": "x"}}},
            }
        )


def test_the_crd_carries_the_same_rules() -> None:
    text = orjson.dumps(build_crd()).decode()
    for message in (
        "authorization and basicAuth are mutually exclusive",
        "authorization.type Basic is not supported: use basicAuth",
        "tlsConfig needs an https:// url",
        "tlsConfig.cert and tlsConfig.keySecret go together",
        "exactly one of secret and configMap must be set",
        "names must be HTTP tokens",
    ):
        assert text.count(message) >= 2, f"{message!r}: in both sources"


# ---------------------------------------------------------------------------- credentials


def reader(values: Mapping[KeyRef, bytes]) -> Any:
    async def read(ref: KeyRef) -> bytes:
        if ref not in values:
            raise CredentialsNotFound(f"{ref} not found")
        return values[ref]

    return read


TOKEN_REF = KeyRef(SECRET, "auth", "token")
USER_REF, PASSWORD_REF = KeyRef(SECRET, "basic", "user"), KeyRef(SECRET, "basic", "pass")


def test_bearer_credentials_are_trimmed_and_headers_kept() -> None:
    config = ClientConfig(authorization=("Bearer", TOKEN_REF), headers=(("X-Scope-OrgID", "a"),))
    auth = asyncio.run(resolve(config, reader({TOKEN_REF: TOKEN.encode() + b"\n"})))
    assert dict(auth.headers) == {"Authorization": f"Bearer {TOKEN}", "X-Scope-OrgID": "a"}
    assert auth.ssl_context is None
    assert TOKEN not in repr(auth)
    custom = ClientConfig(authorization=("Token", TOKEN_REF))
    auth = asyncio.run(resolve(custom, reader({TOKEN_REF: TOKEN.encode()})))
    assert auth.headers["Authorization"] == f"Token {TOKEN}"


def test_basic_auth_is_encoded_as_utf8() -> None:
    config = ClientConfig(basic_auth=(USER_REF, PASSWORD_REF))
    values = {USER_REF: b"mimir ", PASSWORD_REF: "pässword".encode()}
    auth = asyncio.run(resolve(config, reader(values)))
    expected = base64.b64encode("mimir:pässword".encode()).decode()
    assert auth.headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ({}, CredentialsNotFound, "Secret 'basic' key 'user' not found"),
        ({USER_REF: b"a:b", PASSWORD_REF: b"p"}, CredentialsInvalid, "cannot contain ':'"),
        ({USER_REF: b"u", PASSWORD_REF: b"p\r\nX: y"}, CredentialsInvalid, "control characters"),
        ({USER_REF: b"u", PASSWORD_REF: b"\xff\xfe"}, CredentialsInvalid, "not UTF-8"),
        ({USER_REF: b"u", PASSWORD_REF: b"  \n"}, CredentialsInvalid, "empty"),
    ],
)
def test_unusable_credentials_name_the_key_never_the_value(
    values: dict[KeyRef, bytes], error: type[FeedError], message: str
) -> None:
    config = ClientConfig(basic_auth=(USER_REF, PASSWORD_REF))
    with pytest.raises(error, match=message) as caught:
        asyncio.run(resolve(config, reader(values)))
    for value in values.values():
        if len(value) > 2:
            assert value.decode(errors="ignore") not in str(caught.value)
    assert caught.value.reason in ("CredentialsNotFound", "CredentialsInvalid")


def test_without_a_reader_a_referenced_secret_is_not_found() -> None:
    with pytest.raises(CredentialsNotFound, match="cannot read credentials"):
        asyncio.run(resolve(ClientConfig(authorization=("Bearer", TOKEN_REF)), None))
    assert asyncio.run(resolve(ClientConfig(headers=(("X-A", "b"),)), None)).headers == {"X-A": "b"}


class Objects:
    """Secrets and ConfigMaps by (kind, namespace, name), errors as the kube client's."""

    def __init__(self, objects: dict[tuple[str, str, str], dict[str, bytes]]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, str, str]] = []
        self.fail: KubeError | None = None

    async def read_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes]:
        self.asked.append((kind, namespace, name))
        if self.fail is not None:
            raise self.fail
        if (kind, namespace, name) not in self.objects:
            raise JobGone(404, "not found")
        return self.objects[kind, namespace, name]


def test_the_key_reader_reads_the_jobs_namespace_only_and_words_errors() -> None:
    objects = Objects({("Secret", "team-a", "auth"): {"token": b"t"}})
    reader = key_reader(objects, "team-a")

    def read(ref: KeyRef) -> Coroutine[Any, Any, bytes]:
        async def go() -> bytes:
            return await reader(ref)

        return go()

    assert asyncio.run(read(TOKEN_REF)) == b"t"
    assert objects.asked == [("Secret", "team-a", "auth")]
    with pytest.raises(CredentialsNotFound, match="Secret team-a/auth has no key 'other'"):
        asyncio.run(read(KeyRef(SECRET, "auth", "other")))
    with pytest.raises(CredentialsNotFound, match="Secret team-a/basic not found"):
        asyncio.run(read(USER_REF))
    objects.fail = KubeError(403, "forbidden")
    with pytest.raises(CredentialsNotFound, match=r"may not read it \(RBAC: get secrets\)"):
        asyncio.run(read(TOKEN_REF))
    objects.fail = KubeError(503, "Kubernetes API unreachable")
    with pytest.raises(FeedError, match="could not be read: HTTP 503") as caught:
        asyncio.run(read(TOKEN_REF))
    assert caught.value.reason == "DatafeedError", "an apiserver outage is no credentials problem"


def test_ready_carries_the_credentials_reason() -> None:
    status = MLJobStatus(
        state=JobState.OPENED,
        datafeed=DatafeedStatus(
            last_error="Secret ns/auth not found", last_error_reason="CredentialsNotFound"
        ),
    )
    verdicts = conditions._verdicts(status, DesiredState.OPENED, None)
    ready = next(v for t, v in verdicts.items() if t == "Ready")
    assert ready.reason == Reason.CREDENTIALS_NOT_FOUND
    assert "Secret ns/auth not found" in ready.message


# ---------------------------------------------------------------------------- requests


@asynccontextmanager
async def server(
    tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """Answers `records` for start/end when the bearer token is right, 401 otherwise; a
    Prometheus-like POST /api/v1/query_range answers an empty matrix."""
    seen: list[dict[str, str]] = []

    async def data(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="who are you")
        start, end = int(request.query["start"]), int(request.query["end"])
        body = b"\n".join(orjson.dumps(r) for r in records(start, end))
        return web.Response(body=body, content_type="application/x-ndjson")

    async def query_range(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="who are you")
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    app = web.Application()
    app.router.add_get("/data", data)
    app.router.add_post("/api/v1/query_range", query_range)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


WINDOW = Window(T0, T0 + 60_000)


def test_both_sources_send_the_credentials_and_headers() -> None:
    config = ClientConfig(authorization=("Bearer", TOKEN_REF), headers=(("X-Scope-OrgID", "a"),))

    async def go() -> None:
        auth = await resolve(config, reader({TOKEN_REF: TOKEN.encode()}))
        async with server() as (url, seen), aiohttp.ClientSession() as session:
            _, count = await http_source.fetch(
                session, HttpQuery(url + "/data"), Pull(WINDOW, auth=auth)
            )
            assert count == len(records(WINDOW.start_ms, WINDOW.end_ms))
            prom = PrometheusQuery(url, "up", 60_000, "value")
            assert await prometheus_source.fetch(session, prom, Pull(WINDOW, auth=auth)) == (
                b"",
                0,
            )
            for headers in seen:
                assert headers["Authorization"] == f"Bearer {TOKEN}"
                assert headers["X-Scope-OrgID"] == "a"

            with pytest.raises(FeedError, match="HTTP 401, the source refused") as caught:
                await http_source.fetch(session, HttpQuery(url + "/data"), Pull(WINDOW))
            assert "who are you" not in str(caught.value)
            with pytest.raises(FeedError, match="HTTP 401, the source refused"):
                await prometheus_source.fetch(session, prom, Pull(WINDOW))

    asyncio.run(go())


def test_tls_with_a_ca_server_name_and_client_certificate(tmp_path: Path) -> None:
    ca, other = CertificateAuthority(), CertificateAuthority("someone else")
    server_pair = ca.issue("prometheus.monitoring.svc")
    client_pair = ca.issue("mljob-operator", client=True)
    CA_REF, CERT_REF, KEY_REF = (
        KeyRef("ConfigMap", "ca", "ca.crt"),
        KeyRef(SECRET, "client", "tls.crt"),
        KeyRef(SECRET, "client", "tls.key"),
    )
    values = {
        TOKEN_REF: TOKEN.encode(),
        CA_REF: ca.cert_pem,
        CERT_REF: client_pair.cert_pem,
        KEY_REF: client_pair.key_pem,
        KeyRef(SECRET, "other", "ca.crt"): other.cert_pem,
        KeyRef(SECRET, "junk", "ca.crt"): b"not a certificate",
    }
    full = ClientConfig(
        authorization=("Bearer", TOKEN_REF),
        ca=CA_REF,
        cert=CERT_REF,
        key=KEY_REF,
        server_name="prometheus.monitoring.svc",
    )
    tls = server_pair.server_context(tmp_path / "server", client_ca=ca.cert_pem)

    async def get(session: aiohttp.ClientSession, url: str, config: ClientConfig) -> int:
        auth = await resolve(config, reader(values))
        status, _ = await request(session, "GET", url, params={"start": "0", "end": "1"}, auth=auth)
        return status

    async def go() -> None:
        async with server(tls) as (url, _), aiohttp.ClientSession() as session:
            assert await get(session, url + "/data", full) == 200
            without_name = ClientConfig(
                authorization=full.authorization, ca=CA_REF, cert=CERT_REF, key=KEY_REF
            )
            with pytest.raises(FeedError, match=r"127\.0\.0\.1"):
                await get(session, url + "/data", without_name)
            wrong_ca = ClientConfig(
                ca=KeyRef(SECRET, "other", "ca.crt"),
                cert=CERT_REF,
                key=KEY_REF,
                server_name=full.server_name,
            )
            with pytest.raises(FeedError, match="certificate verify failed"):
                await get(session, url + "/data", wrong_ca)
            no_client_cert = ClientConfig(ca=CA_REF, server_name=full.server_name)
            with pytest.raises(FeedError):
                await get(session, url + "/data", no_client_cert)
            skip = ClientConfig(
                authorization=full.authorization,
                cert=CERT_REF,
                key=KEY_REF,
                insecure_skip_verify=True,
            )
            assert await get(session, url + "/data", skip) == 200

    asyncio.run(go())
    with pytest.raises(CredentialsInvalid, match="not PEM CA certificates"):
        asyncio.run(resolve(ClientConfig(ca=KeyRef(SECRET, "junk", "ca.crt")), reader(values)))
    swapped = ClientConfig(ca=CA_REF, cert=KEY_REF, key=CERT_REF)
    with pytest.raises(CredentialsInvalid, match="not a PEM certificate and its key") as caught:
        asyncio.run(resolve(swapped, reader(values)))
    assert b"PRIVATE KEY" not in str(caught.value).encode()


def test_the_runner_reads_credentials_again_after_a_failure() -> None:
    """The first read finds no Secret; the feed retries, reads again and pulls everything."""
    present: dict[KeyRef, bytes] = {}
    reads: list[KeyRef] = []

    async def read(ref: KeyRef) -> bytes:
        reads.append(ref)
        if len(reads) == 1:
            raise CredentialsNotFound("Secret ns/auth not found")
        present[ref] = TOKEN.encode()
        return present[ref]

    async def go() -> None:
        async with server() as (url, _):
            progress, engine = Progress(), Engine()
            errors: list[tuple[str, str | None]] = []
            done = asyncio.Event()
            client = ClientConfig(authorization=("Bearer", TOKEN_REF))
            feed = FeedRunner(
                "ns/job",
                FeedConfig(
                    HttpQuery(url + "/data", client), T0, END, 60_000, 0, 600_000, "time", "epoch"
                ),
                progress,
                target=engine,
                clock_ms=lambda: END + 3_600_000,
                on_change=lambda: None if progress.running else done.set(),
                on_error=lambda message: errors.append((message, progress.last_error_reason)),
                access=SourceAccess(read_key=read),
            )
            feed.start()
            await asyncio.wait_for(done.wait(), timeout=30)
            await feed.stop()
            assert errors == [("Secret ns/auth not found", "CredentialsNotFound")]
            assert progress.last_error is None
            assert progress.last_error_reason is None
            assert engine.posted == [r["time"] * 1000 for r in records(T0, END)]
            assert reads == [TOKEN_REF, TOKEN_REF], "read again after the failure, then kept"

    asyncio.run(go())
