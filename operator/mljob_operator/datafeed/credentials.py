"""How a datafeed authenticates to its source: the spec's `authorization`, `basicAuth`,
`headers` and `tlsConfig` (as plain data, `ClientConfig`) turned into request headers and
a TLS context, with Secret and ConfigMap keys read through an injected `KeyReader`.

The reader is bound to the job's namespace by the caller, so a job can only use keys of
its own namespace. Nothing here logs, stores or quotes a value: errors name the object
and the key, never what it holds, because they end up in status and events. A client key
is handed to OpenSSL through an anonymous in-memory file (memfd) where the platform has
one, so it never touches a disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mljob_operator.datafeed.sources import FeedError

SECRET, CONFIG_MAP = "Secret", "ConfigMap"


@dataclass(frozen=True)
class KeyRef:
    kind: str
    """SECRET or CONFIG_MAP."""
    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} key {self.key!r}"


@dataclass(frozen=True)
class ClientConfig:
    """What the spec asks for; compared to decide whether a changed spec restarts a feed."""

    authorization: tuple[str, KeyRef] | None = None
    """(type, credentials)."""
    basic_auth: tuple[KeyRef, KeyRef] | None = None
    """(username, password)."""
    headers: tuple[tuple[str, str], ...] = ()
    ca: KeyRef | None = None
    cert: KeyRef | None = None
    key: KeyRef | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert or self.server_name or self.insecure_skip_verify)


class CredentialsNotFound(FeedError):
    """A referenced Secret, ConfigMap or key does not exist (or may not be read)."""

    reason = "CredentialsNotFound"


class CredentialsInvalid(FeedError):
    """A referenced value cannot be used (control characters in a header, not PEM)."""

    reason = "CredentialsInvalid"


KeyReader = Callable[[KeyRef], Awaitable[bytes]]
"""The value of one key in the job's namespace; raises CredentialsNotFound (or FeedError
for a failure worth retrying, such as an unreachable apiserver)."""


@dataclass(frozen=True)
class RequestAuth:
    """What every request of a feed carries."""

    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ssl_context: ssl.SSLContext | None = None
    """None: aiohttp's default verification against the system's authorities."""
    server_hostname: str | None = None

    def __repr__(self) -> str:
        return f"RequestAuth(headers={sorted(self.headers)}, tls={self.ssl_context is not None})"


NO_AUTH = RequestAuth()


async def resolve(config: ClientConfig, read: KeyReader | None) -> RequestAuth:
    """Read every key `config` names (afresh: nothing is cached here) and build the
    headers and TLS context of the feed's requests."""

    async def value(ref: KeyRef) -> bytes:
        if read is None:
            raise CredentialsNotFound(f"{ref}: this operator cannot read credentials")
        return await read(ref)

    headers = dict(config.headers)
    if config.authorization is not None:
        kind, ref = config.authorization
        headers["Authorization"] = f"{kind} {_header_text(await value(ref), ref)}"
    elif config.basic_auth is not None:
        user_ref, password_ref = config.basic_auth
        user = _header_text(await value(user_ref), user_ref)
        password = _header_text(await value(password_ref), password_ref)
        if ":" in user:
            raise CredentialsInvalid(f"{user_ref}: a basic-auth user name cannot contain ':'")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    context = None
    if config.tls:
        ca = await value(config.ca) if config.ca else None
        pair = None
        if config.cert is not None and config.key is not None:
            pair = (await value(config.cert), await value(config.key))
        context = await asyncio.to_thread(_ssl_context, config, ca, pair)
    return RequestAuth(MappingProxyType(headers), context, config.server_name)


def _header_text(raw: bytes, ref: KeyRef) -> str:
    """A credential as header text: UTF-8, surrounding whitespace trimmed (a Secret made
    with `echo` ends in a newline), no control characters."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsInvalid(f"{ref}: the value is not UTF-8 text") from None
    if not text:
        raise CredentialsInvalid(f"{ref}: the value is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise CredentialsInvalid(f"{ref}: the value has control characters")
    return text


def _ssl_context(
    config: ClientConfig, ca: bytes | None, pair: tuple[bytes, bytes] | None
) -> ssl.SSLContext:
    if ca is None:
        context = ssl.create_default_context()
    else:
        assert config.ca is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts only `ca`
        try:
            context.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise CredentialsInvalid(f"{config.ca}: not PEM CA certificates") from None
    if pair is not None:
        assert config.cert is not None
        assert config.key is not None
        with _memory_file(pair[0]) as cert_path, _memory_file(pair[1]) as key_path:
            try:
                context.load_cert_chain(cert_path, key_path)
            except (ssl.SSLError, ValueError):
                raise CredentialsInvalid(
                    f"{config.cert} and {config.key}: not a PEM certificate and its key"
                ) from None
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from: an anonymous memory file, or else a private
    temporary file removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mljob-datafeed", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="mljob-tls-") as tmp:  # pragma: no cover
        path = os.path.join(tmp, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
            out.write(data)
        yield path
