"""The datafeed runner against a real HTTP source on loopback (aiohttp), with the engine
side replaced by recording callables: every record posted once, in order, errors retried
and reported, and a restart resuming after what the job already has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from mljob_operator.datafeed import FeedConfig, HttpQuery
from mljob_operator.datafeed.runner import FeedRunner, Progress

T0 = 1_700_000_000_000
END = T0 + 600_000


def records(start: int, end: int) -> list[dict[str, Any]]:
    """One record every 10 s, all time."""
    first = -(-start // 10_000) * 10_000
    return [{"time": t // 1000} for t in range(first, end, 10_000)]


@asynccontextmanager
async def source(fail_first: int = 0) -> AsyncIterator[tuple[str, list[tuple[int, int]]]]:
    asked: list[tuple[int, int]] = []

    async def handle(request: web.Request) -> web.Response:
        start, end = int(request.query["start"]), int(request.query["end"])
        asked.append((start, end))
        if len(asked) <= fail_first:
            return web.Response(status=503, text="not now")
        body = b"\n".join(orjson.dumps(r) for r in records(start, end))
        return web.Response(body=body, content_type="application/x-ndjson")

    app = web.Application()
    app.router.add_get("/data", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/data", asked
    finally:
        await runner.cleanup()


class Engine:
    def __init__(self) -> None:
        self.posted: list[int] = []
        self.advanced: list[int] = []

    async def post(self, body: bytes) -> None:
        self.posted += [r["time"] * 1000 for r in map(orjson.loads, body.splitlines())]

    async def advance(self, end_ms: int) -> None:
        self.advanced.append(end_ms)

    def analysed_until_ms(self) -> int | None:
        return self.posted[-1] + 1 if self.posted else None


def config(url: str) -> FeedConfig:
    return FeedConfig(
        source=HttpQuery(url),
        start_ms=T0,
        end_ms=END,
        frequency_ms=60_000,
        query_delay_ms=0,
        chunk_ms=120_000,
        time_field="time",
        time_format="epoch",
    )


async def run_feed(
    url: str, engine: Engine, progress: Progress, errors: list[str] | None = None
) -> None:
    done = asyncio.Event()

    def changed() -> None:
        if not progress.running:
            done.set()

    feed = FeedRunner(
        "ns/job",
        config(url),
        progress,
        target=engine,
        clock_ms=lambda: END + 3_600_000,
        on_change=changed,
        on_error=(errors if errors is not None else []).append,
    )
    feed.start()
    await asyncio.wait_for(done.wait(), timeout=30)
    await feed.stop()


def run(coro: Callable[[], Any]) -> None:
    asyncio.run(coro())


def test_history_is_posted_once_in_chunks_up_to_the_end() -> None:
    async def go() -> None:
        async with source() as (url, asked):
            engine, progress = Engine(), Progress()
            await run_feed(url, engine, progress)
        assert engine.posted == [r["time"] * 1000 for r in records(T0, END)]
        assert asked == [(T0 + i * 120_000, T0 + (i + 1) * 120_000) for i in range(5)]
        assert engine.advanced == [end for _, end in asked]
        assert progress.searched_until == END
        assert progress.records == 60
        assert not progress.running

    run(go)


def test_errors_are_reported_retried_and_cleared() -> None:
    async def go() -> None:
        async with source(fail_first=1) as (url, asked):
            engine, progress, errors = Engine(), Progress(), []
            await run_feed(url, engine, progress, errors)
        assert len(errors) == 1
        assert errors[0].endswith("/data: HTTP 503")
        assert "not now" not in errors[0], "what the server said is not echoed"
        assert asked[0] == asked[1]
        assert progress.last_error is None
        assert progress.last_error_ms is not None
        assert engine.posted == [r["time"] * 1000 for r in records(T0, END)]

    run(go)


def test_a_restart_resumes_after_what_the_job_has_even_if_progress_was_lost() -> None:
    async def go() -> None:
        async with source() as (url, asked):
            engine = Engine()
            engine.posted = [r["time"] * 1000 for r in records(T0, T0 + 250_000)]
            progress = Progress(searched_until=T0 + 120_000)
            await run_feed(url, engine, progress)
        assert asked[0][0] == T0 + 240_001
        assert engine.posted == [r["time"] * 1000 for r in records(T0, END)]

    run(go)
