"""The data API's certificate is reloaded when its files change (a Secret volume updated in
place), checked over real HTTPS connections on loopback: the served certificate before and
after, a pair that does not load is refused, and the check is rate-limited."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mljob_operator.http.tls import ReloadingContext, self_signed

DEADLINE_S = 10.0
Pair = tuple[bytes, bytes]


def der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def install(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write the pair the way a Secret volume changes: new files renamed over the old."""
    paths = directory / "tls.crt", directory / "tls.key"
    for path, content in zip(paths, (cert_pem, key_pem), strict=True):
        staged = path.with_suffix(".new")
        staged.write_bytes(content)
        os.replace(staged, path)
    return paths


async def served(port: int, trust: bytes | None = None) -> bytes:
    """The DER certificate the server presents (verified against `trust` when given)."""
    client = ssl.create_default_context()
    if trust is None:
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    else:
        client.load_verify_locations(cadata=trust.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True)
        assert cert is not None
        return bytes(cert)
    finally:
        writer.close()
        await writer.wait_closed()


async def eventually_served(port: int, wanted: bytes) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while (got := await served(port)) != wanted:
        assert time.monotonic() < deadline, "the new certificate was never served"
        await asyncio.sleep(0.02)
    assert got == wanted


def serving(reloading: ReloadingContext, body: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=reloading.listener)
        try:
            await body(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


@pytest.fixture
def pairs() -> tuple[Pair, Pair, Pair]:
    names = ("localhost", "127.0.0.1")
    return self_signed(names), self_signed(names), self_signed(names)


def test_a_replaced_pair_is_served_from_the_next_handshake(
    tmp_path: Path, pairs: tuple[Pair, Pair, Pair]
) -> None:
    (cert_a, key_a), (cert_b, key_b), _ = pairs
    reloading = ReloadingContext(*install(tmp_path, cert_a, key_a), check_every_s=0)

    async def body(port: int) -> None:
        assert await served(port, trust=cert_a) == der(cert_a)
        install(tmp_path, cert_b, key_b)
        await eventually_served(port, der(cert_b))
        assert await served(port, trust=cert_b) == der(cert_b)
        with pytest.raises(ssl.SSLCertVerificationError):
            await served(port, trust=cert_a)

    serving(reloading, body)
    assert reloading.reloads == 1


def test_a_pair_that_does_not_load_is_refused_until_it_is_fixed(
    tmp_path: Path, pairs: tuple[Pair, Pair, Pair], caplog: pytest.LogCaptureFixture
) -> None:
    (cert_a, key_a), (cert_b, key_b), _ = pairs
    reloading = ReloadingContext(*install(tmp_path, cert_a, key_a), check_every_s=0)

    async def body(port: int) -> None:
        install(tmp_path, cert_b, key_a)  # the certificate renewed, the key not yet
        assert await served(port) == der(cert_a)
        assert "refused, serving the previous one" in caplog.text
        install(tmp_path, cert_b, key_b)
        await eventually_served(port, der(cert_b))

    serving(reloading, body)
    assert reloading.reloads == 1


def test_the_files_are_checked_at_most_once_per_interval(
    tmp_path: Path, pairs: tuple[Pair, Pair, Pair]
) -> None:
    (cert_a, key_a), (cert_b, key_b), (cert_c, key_c) = pairs
    now = [100.0]
    reloading = ReloadingContext(
        *install(tmp_path, cert_a, key_a), check_every_s=5, clock=lambda: now[0]
    )

    async def body(port: int) -> None:
        install(tmp_path, cert_b, key_b)
        now[0] += 4.9
        assert await served(port) == der(cert_a)
        now[0] += 0.1
        assert await served(port) == der(cert_b)
        install(tmp_path, cert_c, key_c)
        assert reloading.check()  # an explicit check is not rate-limited
        assert await served(port) == der(cert_c)

    serving(reloading, body)
    assert reloading.reloads == 2
