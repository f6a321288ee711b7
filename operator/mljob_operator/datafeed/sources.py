"""What the Prometheus and HTTP sources share: one error type, the request with its
limits, and records written in the job's time format.

Every failure to get usable data (unreachable, timeout, HTTP error, bad query, malformed
body, too large, a refused destination) becomes a `FeedError` whose message says what and
where, because it is shown verbatim in `status.datafeed.lastError` and in a Warning event.
It never quotes what the server answered: the URL is user-typed and the operator fetches
it from inside the cluster, so status must not become a way to read other services.
Redirects are not followed, for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from mljob_operator.datafeed.destinations import DestinationPolicy, DestinationRefused

if TYPE_CHECKING:
    from mljob_operator.datafeed.credentials import KeyReader, RequestAuth
    from mljob_operator.datafeed.planner import Window

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)


class FeedError(Exception):
    """A pull failed; the message is for users."""

    reason = "DatafeedError"
    """The condition and event reason it is reported with."""


@dataclass(frozen=True)
class SourceAccess:
    """What a datafeed may fetch: how much per answer, and from where."""

    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    read_key: KeyReader | None = None
    """Reads the Secret and ConfigMap keys a source's authentication names, in the job's
    namespace only; None: a source that names one fails with CredentialsNotFound."""


@dataclass(frozen=True)
class Pull:
    """One fetch of a source: the window, the time field and format the job's records are
    written in, what may be fetched, and the credentials to send."""

    window: Window
    time_field: str = "time"
    time_format: str = "epoch"
    access: SourceAccess = field(default_factory=SourceAccess)
    auth: RequestAuth | None = None

    async def request(
        self, session: aiohttp.ClientSession, method: str, url: str, **body: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """`request` within this pull's limits and with its credentials."""
        return await request(
            session,
            method,
            url,
            max_bytes=self.access.max_bytes,
            policy=self.access.policy,
            auth=self.auth,
            **body,
        )


READ_CHUNK_BYTES = 256 * 1024


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    policy: DestinationPolicy | None = None,
    auth: RequestAuth | None = None,
) -> tuple[int, bytes]:
    """The status and body of one request, read up to `max_bytes`; a redirect is an error."""
    try:
        target = URL(url)
        if policy is not None and target.host is not None:
            policy.check(target.host, target.port or 0)
        async with session.request(
            method,
            url,
            params=params,
            data=data,
            headers=dict(auth.headers) if auth is not None else None,
            ssl=auth.ssl_context if auth is not None and auth.ssl_context is not None else True,
            server_hostname=auth.server_hostname if auth is not None else None,
            timeout=REQUEST_TIMEOUT,
            allow_redirects=False,
        ) as resp:
            if 300 <= resp.status < 400:
                raise FeedError(
                    f"{method} {url}: HTTP {resp.status}, a redirect; redirects are not "
                    "followed: give the final URL"
                )
            return resp.status, await _read(resp, url, max_bytes)
    except TimeoutError:
        raise FeedError(f"{method} {url}: no answer within {REQUEST_TIMEOUT.total:.0f}s") from None
    except asyncio.CancelledError:
        raise
    except DestinationRefused as err:
        raise FeedError(f"{method} {url}: refused: {err}") from None
    except aiohttp.ClientConnectorError as err:
        if isinstance(err.os_error, DestinationRefused):
            raise FeedError(f"{method} {url}: refused: {err.os_error}") from None
        raise FeedError(f"{method} {url}: {err}") from None
    except (aiohttp.ClientError, ValueError) as err:
        raise FeedError(f"{method} {url}: {type(err).__name__}: {err}") from None


async def _read(resp: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    """The whole body, or FeedError past `max_bytes` (announced or streamed)."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FeedError(_too_large(url, max_bytes))
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to EOF
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise FeedError(_too_large(url, max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def refused(method: str, url: str, status: int) -> str:
    """The error for an HTTP error status, saying so when it refused the credentials."""
    if status in (401, 403):
        return (
            f"{method} {url}: HTTP {status}, the source refused the request: check the "
            "datafeed's authorization, basicAuth or headers and the Secrets they name"
        )
    return f"{method} {url}: HTTP {status}"


def _too_large(url: str, max_bytes: int) -> str:
    return (
        f"{url}: the answer is larger than {max_bytes} bytes; set a smaller spec.datafeed.chunkSpan"
    )


def one_line(text: str, limit: int = 200) -> str:
    """A short, printable, single-line form of a structured error field."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


def format_time(ms: int, time_format: str) -> Any:
    """A time in the job's `dataDescription.timeFormat`."""
    if time_format == "epoch_ms":
        return ms
    if time_format == "iso8601":
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)
