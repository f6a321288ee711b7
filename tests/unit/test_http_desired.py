"""Open/close over HTTP wait on the controller's own status when the process holds it: no
request to the apiserver per job and tick; jobs it does not hold are read instead."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest

from mljob_operator.api import JobState
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.errors import Conflict


class Apiserver:
    def __init__(self) -> None:
        self.reads = 0
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return {"metadata": {"name": name}, "status": {"state": "closed"}}

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        return []

    async def list_jobs_page(
        self, namespace: str, limit: int, continue_: str | None
    ) -> dict[str, Any]:
        return {"items": [], "metadata": {}}

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((name, patch))
        return {"metadata": {"name": name, "generation": 7}}


class Controllers:
    """Statuses held in memory; `set` changes one and wakes its waiters."""

    def __init__(self, statuses: dict[str, dict[str, Any]]) -> None:
        self.statuses = statuses
        self.changed = asyncio.Event()

    def status_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.statuses.get(name)

    async def status_changed(self, namespace: str, name: str, timeout_s: float) -> None:
        event = self.changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def set(self, name: str, status: dict[str, Any]) -> None:
        self.statuses[name] = status
        self.changed.set()
        self.changed = asyncio.Event()


def test_a_close_waits_on_the_controllers_status_without_reading_the_apiserver() -> None:
    async def test() -> None:
        api = Apiserver()
        held = Controllers({f"j{i}": {"state": "opened"} for i in range(100)})
        requests = StateRequests(api, poll_s=60, statuses=held)
        names = sorted(held.statuses)
        waiting = asyncio.ensure_future(
            requests.apply("ns", names, JobState.CLOSED, timedelta(seconds=30))
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        for name in names:
            held.set(name, {"state": "closed"})
        await asyncio.wait_for(waiting, 5)
        assert len(api.patches) == 100
        assert api.reads == 0, "no GET per job: the controllers' statuses were waited on"

    asyncio.run(test())


def test_a_refusal_held_in_memory_ends_the_wait() -> None:
    async def test() -> None:
        refused = {
            "state": "failed",
            "conditions": [
                {
                    "type": "Closed",
                    "reason": "CloseRefused",
                    "message": "use force",
                    "observedGeneration": 7,
                }
            ],
        }
        requests = StateRequests(Apiserver(), statuses=Controllers({"j": refused}))
        with pytest.raises(Conflict, match="use force"):
            await requests.apply("ns", ["j"], JobState.CLOSED, timedelta(seconds=5))

    asyncio.run(test())


def test_a_job_not_held_here_is_read_from_the_apiserver() -> None:
    async def test() -> None:
        api = Apiserver()
        requests = StateRequests(api, poll_s=0.01, statuses=Controllers({}))
        await requests.apply("ns", ["elsewhere"], JobState.CLOSED, timedelta(seconds=5))
        assert api.reads == 1

    asyncio.run(test())
