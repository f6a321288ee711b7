"""Prometheus matrices and HTTP answers turned into the records a job takes."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mljob_operator.datafeed import Window
from mljob_operator.datafeed.http_source import with_window, within
from mljob_operator.datafeed.prometheus_source import eval_range, matrix_records
from mljob_operator.datafeed.sources import FeedError, format_time, request

T = 1_700_000_000
W = Window(T * 1000, (T + 180) * 1000)

MATRIX = [
    {
        "metric": {"__name__": "rpm", "host": "a"},
        "values": [[T, "10"], [T + 60, "11.5"], [T + 120, "NaN"], [T + 180, "99"]],
    },
    {"metric": {"__name__": "rpm", "host": "b", "value": "label"}, "values": [[T + 60, "+Inf"]]},
    {"metric": {"host": "c"}, "values": [[T + 30.5, "7"]]},
]


def test_matrix_samples_become_records_with_labels_ordered_by_time() -> None:
    records = matrix_records(MATRIX, W, "time", "epoch", "value")
    assert records == [
        {"__name__": "rpm", "host": "a", "value": 10.0, "time": T},
        {"host": "c", "value": 7.0, "time": T + 30.5},
        {"__name__": "rpm", "host": "a", "value": 11.5, "time": T + 60},
    ]


@pytest.mark.parametrize(
    ("time_format", "expected"),
    [("epoch", T), ("epoch_ms", T * 1000), ("iso8601", "2023-11-14T22:13:20Z")],
)
def test_records_carry_the_jobs_time_format(time_format: str, expected: object) -> None:
    records = matrix_records(MATRIX[:1], W, "@timestamp", time_format, "rpm")
    assert records[0]["@timestamp"] == expected
    assert records[0]["rpm"] == 10.0


def test_format_time_keeps_milliseconds() -> None:
    assert format_time(1_500, "epoch") == 1.5
    assert format_time(1_500, "iso8601") == "1970-01-01T00:00:01.500000Z"


@pytest.mark.parametrize(
    ("window", "step", "expected"),
    [
        (Window(60_000, 180_000), 60_000, (60_000, 120_000)),
        (Window(60_001, 180_000), 60_000, (120_000, 120_000)),
        (Window(60_001, 180_001), 60_000, (120_000, 180_000)),
        (Window(60_001, 119_999), 60_000, None),
    ],
)
def test_evaluation_times_are_step_multiples_inside_the_window(
    window: Window, step: int, expected: tuple[int, int] | None
) -> None:
    assert eval_range(window, step) == expected


def test_split_windows_yield_the_same_samples_as_one() -> None:
    whole = matrix_records(MATRIX, Window(T * 1000, (T + 240) * 1000), "t", "epoch_ms", "v")
    halves = [
        *matrix_records(MATRIX, Window(T * 1000, (T + 60) * 1000 + 1), "t", "epoch_ms", "v"),
        *matrix_records(
            MATRIX, Window((T + 60) * 1000 + 1, (T + 240) * 1000), "t", "epoch_ms", "v"
        ),
    ]
    assert sorted(r["t"] for r in halves) == sorted(r["t"] for r in whole)


def test_http_answer_is_cut_to_the_window() -> None:
    body = b"\n".join(
        orjson.dumps(r)
        for r in [
            {"time": T - 1, "n": 0},
            {"time": T, "n": 1},
            {"time": "not a time", "n": 2},
            {"time": T + 179, "n": 3},
            {"time": T + 180, "n": 4},
        ]
    )
    kept, count = within(body, W, "time", "epoch")
    assert count == 3
    assert [orjson.loads(line)["n"] for line in kept.splitlines()] == [1, 2, 3]


def test_http_answer_inside_the_window_passes_through_unchanged() -> None:
    body = orjson.dumps([{"ts": T * 1000 + 5}, {"ts": T * 1000 + 6}])
    assert within(body, W, "ts", "epoch_ms") == (body, 2)
    assert within(b"  \n", W, "ts", "epoch_ms") == (b"", 0)


def test_http_answer_that_is_not_json_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="neither NDJSON nor a JSON array"):
        within(b"<html>oops</html>", W, "time", "epoch")


def test_window_parameters_replace_the_urls_own() -> None:
    url, params = with_window("http://s.test/data?tenant=x&start=1", Window(5, 9))
    assert url == "http://s.test/data"
    assert params == {"tenant": "x", "start": "5", "end": "9"}


def test_an_answer_arriving_in_pieces_is_read_whole() -> None:
    """A large answer comes in several TCP reads; the source must read to the end."""
    pieces = [b'{"part": "%d", "pad": "%s"},' % (i, b"x" * 50_000) for i in range(6)]

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1 + sum(len(p) for p in pieces) + 3
        await resp.prepare(request)
        await resp.write(b"[")
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.02)  # make the pieces arrive apart (not synchronisation)
        await resp.write(b"{}]")
        await resp.write_eof()
        return resp

    async def main() -> tuple[int, bytes]:
        app = web.Application()
        app.router.add_get("/", slow)
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            return await request(session, "GET", str(server.make_url("/")), max_bytes=10**6)

    status, body = asyncio.run(main())
    assert status == 200
    assert len(orjson.loads(body)) == len(pieces) + 1


def test_an_answer_over_the_limit_is_refused() -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", big)
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            await request(session, "GET", str(server.make_url("/")), max_bytes=1000)

    with pytest.raises(FeedError, match="larger than 1000 bytes"):
        asyncio.run(main())
