"""What one caller may cost the operator: bytes being ingested, long-poll waiters, failed
sign-ins. Past a bound the answer is 429 with Retry-After, before any work is done.

One operator serves every team's jobs, so a single client streaming huge bodies, parking
thousands of close requests or guessing tokens (each guess is a TokenReview against the
apiserver) must be stopped at the door rather than slow everyone else down.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from cachetools import TTLCache

from mljob_operator.http.errors import ApiError


class TooManyRequests(ApiError):
    status, reason = 429, "TooManyRequests"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, {"Retry-After": str(max(1, math.ceil(retry_after_s)))})


class IngestBudget:
    """Bytes of request bodies being read or analysed at once, across all jobs."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_flight = 0

    @contextlib.contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        if self.in_flight and self.in_flight + size > self.max_bytes:
            raise TooManyRequests(
                f"the operator is analysing {self.in_flight} bytes of data already (budget "
                f"{self.max_bytes}, MLJOB_INGEST_BUDGET); retry shortly",
                1,
            )
        self.in_flight += size
        try:
            yield
        finally:
            self.in_flight -= size


class WaiterLimit:
    """Requests of one caller waiting for a state (open, close) at once."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self.waiting: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        count = self.waiting.get(caller, 0)
        if count >= self.per_caller:
            raise TooManyRequests(
                f"{caller} has {count} open or close requests waiting already (at most "
                f"{self.per_caller}); wait for them, or use timeout=0s and watch status",
                5,
            )
        self.waiting[caller] = count + 1
        try:
            yield
        finally:
            left = self.waiting[caller] - 1
            if left:
                self.waiting[caller] = left
            else:
                del self.waiting[caller]


class SignInFailures:
    """Rejected tokens per client address in a sliding minute; past `per_minute` the
    client is refused without asking the apiserver (a TokenReview is not free)."""

    WINDOW_S = 60.0

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, maxsize: int = 4096
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: TTLCache[str, list[float]] = TTLCache(
            maxsize, ttl=self.WINDOW_S, timer=clock
        )

    def _recent(self, client: str) -> list[float]:
        now = self.clock()
        return [t for t in self._failures.get(client, []) if now - t < self.WINDOW_S]

    def check(self, client: str) -> None:
        recent = self._recent(client)
        if len(recent) >= self.per_minute:
            wait = self.WINDOW_S - (self.clock() - recent[0])
            raise TooManyRequests(
                f"too many rejected tokens from {client}; retry in {math.ceil(wait)}s", wait
            )

    def failed(self, client: str) -> None:
        self._failures[client] = [*self._recent(client), self.clock()]
