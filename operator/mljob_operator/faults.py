"""Fault injection for crash-safety tests (documented; off unless the env var is set).

`MLJOB_FAULT_KILL_AT=<point>` makes the operator SIGKILL itself when it reaches that
point, so an end-to-end test can prove that a close interrupted anywhere finishes after a
restart with exactly one snapshot. Points: `before:<step>` (engine step not started),
`after:<step>` (engine step done, status not yet written) and `recorded:<step>` (status
written), for every close step and for `beginClose`.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


class FaultInjector:
    def __init__(self, kill_at: str | None) -> None:
        self.kill_at = kill_at

    def checkpoint(self, point: str) -> None:
        if self.kill_at is not None and point == self.kill_at:
            log.warning("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)
