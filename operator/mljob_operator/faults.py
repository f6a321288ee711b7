"""Fault injection for crash-safety tests (documented; off unless the env var is set).

`MLJOB_FAULT_KILL_AT=<point>` makes the operator SIGKILL itself when it reaches that
point, so an end-to-end test can prove that a close interrupted anywhere finishes after a
restart with exactly one snapshot. Points: `before:<step>` (engine step not started),
`after:<step>` (engine step done, status not yet written) and `recorded:<step>` (status
written), for every close step and for `beginClose`.

`MLJOB_FAULT_FAIL_AT=<step>` makes that engine step raise instead, every time, so tests
can watch bounded retries end in a `failed` job.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised where MLJOB_FAULT_FAIL_AT says."""


class FaultInjector:
    def __init__(self, kill_at: str | None, fail_at: str | None = None) -> None:
        self.kill_at = kill_at
        self.fail_at = fail_at

    def maybe_fail(self, step: str) -> None:
        if self.fail_at is not None and step == self.fail_at:
            raise InjectedFault(f"injected failure in {step}")

    def checkpoint(self, point: str) -> None:
        if self.kill_at is not None and point == self.kill_at:
            log.warning("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)
