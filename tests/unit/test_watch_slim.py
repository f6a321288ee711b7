"""kopf releases the body of a job no daemon runs for (watch_slim.install_body_release)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kopf._cogs.structs import bodies
from kopf._core.engines import daemons
from kopf._core.reactor import processing

from mljob_operator.watch_slim import install_body_release, releasing


def _memory(running: bool) -> daemons.DaemonsMemory:
    memory = daemons.DaemonsMemory()
    memory.live_fresh_body = bodies.Body({"metadata": {"name": "j"}})
    if running:
        memory.running_daemons["reconcile"] = object()  # type: ignore[assignment]
    return memory


@pytest.mark.parametrize("running", [False, True])
def test_a_body_is_released_only_when_no_daemon_runs(running: bool) -> None:
    async def original(**kwargs: Any) -> str:
        return "done"

    async def scenario() -> daemons.DaemonsMemory:
        memory = _memory(running)
        assert await releasing(original, lambda kwargs: kwargs["memory"])(memory=memory) == "done"
        return memory

    assert (asyncio.run(scenario()).live_fresh_body is None) is not running


def test_a_failing_call_releases_too() -> None:
    async def original(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    async def scenario() -> daemons.DaemonsMemory:
        memory = _memory(running=False)
        with pytest.raises(RuntimeError):
            await releasing(original, lambda kwargs: kwargs["memory"])(memory=memory)
        return memory

    assert asyncio.run(scenario()).live_fresh_body is None


def test_installed_once_on_the_kopf_functions_that_exist() -> None:
    runner, spawning = daemons._runner, processing.process_spawning_cause
    try:
        assert install_body_release()
        assert install_body_release()
        assert daemons._runner.__wrapped__ is runner  # type: ignore[attr-defined]
        wrapped_spawning = processing.process_spawning_cause
        assert wrapped_spawning.__wrapped__ is spawning  # type: ignore[attr-defined]
    finally:
        daemons._runner, processing.process_spawning_cause = runner, spawning
