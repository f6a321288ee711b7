"""What the Prometheus and HTTP sources share: one error type, the request with its
limits, and records written in the job's time format.

Every failure to get usable data (unreachable, timeout, HTTP error, bad query, malformed
body, too large) becomes a `FeedError` whose message says what and where, because it is
shown verbatim in `status.datafeed.lastError` and in a Warning event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)


class FeedError(Exception):
    """A pull failed; the message is for users."""


READ_CHUNK_BYTES = 256 * 1024


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> tuple[int, bytes]:
    """The status and body of one request, read up to `max_bytes`."""
    try:
        async with session.request(
            method, url, params=params, data=data, timeout=REQUEST_TIMEOUT
        ) as resp:
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise FeedError(_too_large(url, max_bytes))
            # StreamReader.read(n) returns what has arrived so far, not n bytes: read to EOF
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError(_too_large(url, max_bytes))
                chunks.append(chunk)
            return resp.status, b"".join(chunks)
    except TimeoutError:
        raise FeedError(f"{method} {url}: no answer within {REQUEST_TIMEOUT.total:.0f}s") from None
    except asyncio.CancelledError:
        raise
    except aiohttp.ClientError as err:
        raise FeedError(f"{method} {url}: {type(err).__name__}: {err}") from None


def _too_large(url: str, max_bytes: int) -> str:
    return (
        f"{url}: the answer is larger than {max_bytes} bytes; set a smaller spec.datafeed.chunkSpan"
    )


def snippet(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def format_time(ms: int, time_format: str) -> Any:
    """A time in the job's `dataDescription.timeFormat`."""
    if time_format == "epoch_ms":
        return ms
    if time_format == "iso8601":
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)
