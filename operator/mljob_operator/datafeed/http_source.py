"""Pull records from an HTTP endpoint: `GET url?start=<ms>&end=<ms>` answering NDJSON or
a JSON array, passed to the engine as they are.

Records outside `[start, end)` are dropped here, by the job's time field: an endpoint that
ignores the parameters (a static file, a coarse API) still gives each record to the job
exactly once. Records whose time cannot be read are passed on, so the job's
`invalidDateCount` shows the problem.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import numpy as np

from mljob_operator.datafeed.planner import HttpQuery, Window
from mljob_operator.datafeed.sources import FeedError, Pull, ndjson, refused
from mljob_operator.engine.errors import DataFormatError
from mljob_operator.engine.ingest import column, parse_records, parse_times


def within(body: bytes, window: Window, time_field: str, time_format: str) -> tuple[bytes, int]:
    """The body restricted to the window, and its record count."""
    try:
        records = parse_records(body)
    except DataFormatError as err:
        raise FeedError(f"the answer is neither NDJSON nor a JSON array: {err}") from None
    if not records:
        return b"", 0
    times, valid = parse_times(column(records, time_field), time_format)
    keep = ~valid | ((times >= window.start_ms) & (times < window.end_ms))
    if bool(keep.all()):
        return body, len(records)
    kept = [records[i] for i in np.flatnonzero(keep).tolist()]
    return (ndjson(kept) if kept else b""), len(kept)


def with_window(url: str, window: Window) -> tuple[str, dict[str, str]]:
    """The URL without start/end, and the query parameters to send (the URL's own kept)."""
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query) if k not in ("start", "end")}
    params.update(start=str(window.start_ms), end=str(window.end_ms))
    return urlunsplit(parts._replace(query="")), params


async def fetch(session: aiohttp.ClientSession, source: HttpQuery, pull: Pull) -> tuple[bytes, int]:
    url, params = with_window(source.url, pull.window)
    status, body = await pull.request(session, "GET", url, params=params)
    if status >= 300:
        raise FeedError(refused("GET", source.url, status))
    return within(body, pull.window, pull.time_field, pull.time_format)
