"""The datafeed loop: plan a window, fetch it, post it to the engine, advance, repeat.

It runs as its own task on kopf's loop, beside the job's reconcile loop, so a slow source
never delays a close or a spec change. Its caller injects the engine side (`post`,
`advance`, how far the job's data goes) and is told of progress through `on_change`; the
progress itself is a plain object the caller turns into status. `stop()` waits for a post
already handed to the engine, so a restarted feed always sees what that post committed.

Credentials (the Secret and ConfigMap keys a source's authentication names) are read when
the feed starts, again before the retry after any failed pull (so a Secret created or
rotated after a failure is used at the next retry), and otherwise once they are
`CREDENTIALS_MAX_AGE_S` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from mljob_operator.datafeed import credentials, http_source, prometheus_source
from mljob_operator.datafeed.credentials import RequestAuth
from mljob_operator.datafeed.destinations import GuardedResolver
from mljob_operator.datafeed.planner import (
    FeedConfig,
    HttpQuery,
    Window,
    plan,
    resume_point,
    retry_delay_s,
)
from mljob_operator.datafeed.sources import FeedError, Pull, SourceAccess

log = logging.getLogger(__name__)

CREDENTIALS_MAX_AGE_S = 300.0


class JobStopped(Exception):
    """The job no longer takes data (it is closing): the feed ends quietly."""


@dataclass
class Progress:
    searched_until: int | None = None
    last_pull_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    last_error_reason: str | None = None
    running: bool = False
    records: int = 0
    """Records posted by this process (a figure for logs and tests, not persisted)."""


class FeedTarget(Protocol):
    """The job a feed pulls into. `post` and `advance` raise JobStopped when the job takes
    no more data, FeedError for a refusal worth retrying."""

    async def post(self, body: bytes) -> None: ...

    async def advance(self, end_ms: int) -> None: ...

    def analysed_until_ms(self) -> int | None:
        """Epoch ms before which the job takes no more data."""


class FeedRunner:
    def __init__(
        self,
        name: str,
        config: FeedConfig,
        progress: Progress,
        *,
        target: FeedTarget,
        clock_ms: Callable[[], int],
        on_change: Callable[[], None],
        on_error: Callable[[str], None],
        access: SourceAccess | None = None,
    ) -> None:
        self.name, self.config, self.progress = name, config, progress
        self._target = target
        self._clock_ms, self._on_change, self._on_error = clock_ms, on_change, on_error
        self._access = access or SourceAccess()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._auth: tuple[RequestAuth, float] | None = None
        """The credentials last read and when (loop time)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"datafeed {self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            with contextlib.suppress(Exception):
                await inflight

    async def _run(self) -> None:
        p, cfg = self.progress, self.config
        p.running = True
        try:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._access.policy))
            async with aiohttp.ClientSession(connector=connector) as session:
                self._on_change()
                failures = 0
                while True:
                    now = self._clock_ms()
                    analysed = self._target.analysed_until_ms()
                    cursor = resume_point(cfg, p.searched_until, analysed, now)
                    if cursor != p.searched_until:
                        p.searched_until = cursor
                        self._on_change()
                    step = plan(cfg, cursor, now)
                    if step.end_reached:
                        log.info("datafeed %s reached its end (%d records)", self.name, p.records)
                        return
                    if step.window is None:
                        assert step.wake_at_ms is not None
                        await asyncio.sleep((step.wake_at_ms - now) / 1000)
                        continue
                    try:
                        p.records += await self._pull(session, step.window)
                    except FeedError as err:
                        failures += 1
                        self._failed(str(err), err.reason)
                        await asyncio.sleep(retry_delay_s(failures))
                        continue
                    except JobStopped:
                        raise
                    except Exception as err:
                        log.exception("datafeed %s: unexpected error", self.name)
                        failures += 1
                        self._failed(f"unexpected {type(err).__name__}: {err}")
                        await asyncio.sleep(retry_delay_s(failures))
                        continue
                    failures = 0
                    p.searched_until, p.last_pull_ms = step.window.end_ms, self._clock_ms()
                    p.last_error = p.last_error_reason = None
                    self._on_change()
        except JobStopped:
            return
        finally:
            p.running = False
            self._on_change()

    def _failed(self, message: str, reason: str = FeedError.reason) -> None:
        log.warning("datafeed %s: %s", self.name, message)
        self._auth = None
        p = self.progress
        p.last_error, p.last_error_ms = message, self._clock_ms()
        p.last_error_reason = reason
        self._on_error(message)
        self._on_change()

    async def _pull(self, session: aiohttp.ClientSession, window: Window) -> int:
        cfg, source = self.config, self.config.source
        auth = await self._request_auth()
        pull = Pull(window, cfg.time_field, cfg.time_format, self._access, auth)
        if isinstance(source, HttpQuery):
            body, count = await http_source.fetch(session, source, pull)
        else:
            body, count = await prometheus_source.fetch(session, source, pull)
        if count:
            await self._shielded(self._target.post(body))
        await self._shielded(self._target.advance(window.end_ms))
        return count

    async def _request_auth(self) -> RequestAuth:
        now = asyncio.get_running_loop().time()
        if self._auth is None or now - self._auth[1] >= CREDENTIALS_MAX_AGE_S:
            auth = await credentials.resolve(self.config.source.client, self._access.read_key)
            self._auth = (auth, now)
        return self._auth[0]

    async def _shielded(self, work: Awaitable[None]) -> None:
        """Engine writes finish even if the feed is stopped meanwhile (`stop` awaits them)."""
        self._inflight = asyncio.ensure_future(work)
        try:
            await asyncio.shield(self._inflight)
        finally:
            if self._inflight.done():
                self._inflight = None
