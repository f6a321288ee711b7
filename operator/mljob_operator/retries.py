"""Bounded retries of a failing engine action, with backoff.

A transient engine or store error (a full disk freed a moment later, a locked file) should
not fail a job, and a permanent one must not retry forever: after `attempts` failures in
a row the job fails with a reason and the error's message.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_BACKOFF_S = (0.5, 2.0, 5.0)


class EngineRetries:
    def __init__(self, backoff_s: Sequence[float] = DEFAULT_BACKOFF_S) -> None:
        self.backoff_s = tuple(backoff_s)
        self.failures = 0

    def failed(self) -> float | None:
        """Count a failure: seconds to wait before retrying, or None when the retries are
        spent (the count starts again)."""
        self.failures += 1
        if self.failures > len(self.backoff_s):
            self.failures = 0
            return None
        return self.backoff_s[self.failures - 1]

    def succeeded(self) -> None:
        self.failures = 0
