"""A 403 on kopf's watch is retried for a grace period, then raised as kopf would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kopf._cogs.clients import errors, watching

from mljob_operator import watch_tolerance
from mljob_operator.watch_slim import without_managed_fields
from mljob_operator.watch_tolerance import ForbiddenGrace, tolerant


class Forbidden(Exception):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stream(outcomes: list[str]) -> Any:
    """A fake kopf stream: each call takes the next outcome, 'ok' yields, 'no' refuses."""

    async def continuous_watch(**_: Any) -> AsyncIterator[str]:
        if outcomes.pop(0) == "no":
            raise Forbidden("mljobs is forbidden")
        yield "LISTED"

    return continuous_watch


async def drain(watch: Any, **kwargs: Any) -> list[str]:
    return [item async for item in watch(**kwargs)]


def test_refusals_are_retried_with_backoff_and_access_resets_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(watch_tolerance.asyncio, "sleep", sleep)
    clock = Clock()
    outcomes = ["no", "no", "no", "no", "ok", "no"]
    watch = tolerant(stream(outcomes), Forbidden, grace_s=60, clock=clock)

    async def scenario() -> None:
        for _ in range(4):
            assert await drain(watch, namespace="a") == []
            clock.now += 10
        assert await drain(watch, namespace="a") == ["LISTED"]
        clock.now += 1000  # long after the first refusal: access in between reset it
        assert await drain(watch, namespace="a") == []

    asyncio.run(scenario())
    assert slept == [1.0, 2.0, 5.0, 5.0, 1.0]


def test_a_refusal_that_outlasts_the_grace_is_raised() -> None:
    clock = Clock()
    watch = tolerant(stream(["no", "no"]), Forbidden, grace_s=0, clock=clock)

    async def scenario() -> None:
        clock.now = 0
        assert await drain(watch) == []  # the first refusal starts the grace (of 0 s)
        clock.now = 1
        await drain(watch)

    with pytest.raises(Forbidden):
        asyncio.run(scenario())


def test_each_namespace_has_its_own_grace() -> None:
    clock = Clock()
    outcomes = ["no", "ok", "no"]
    watch = tolerant(stream(outcomes), Forbidden, grace_s=5, clock=clock)

    async def scenario() -> None:
        assert await drain(watch, namespace="denied") == []
        clock.now = 10
        assert await drain(watch, namespace="fine") == ["LISTED"]
        await drain(watch, namespace="denied")

    with pytest.raises(Forbidden):
        asyncio.run(scenario())


def test_install_wraps_kopfs_stream_once(monkeypatch: pytest.MonkeyPatch) -> None:
    original = watching.continuous_watch
    monkeypatch.setattr(watching, "continuous_watch", original)
    assert watch_tolerance.install()
    wrapped = watching.continuous_watch
    assert wrapped is not original
    assert watch_tolerance.install()
    assert watching.continuous_watch is wrapped, "installed once"
    assert issubclass(errors.APIForbiddenError, Exception)


def test_grace_counts_from_the_first_refusal() -> None:
    clock = Clock()
    grace = ForbiddenGrace(30, clock)
    assert grace.refused() == 1.0
    clock.now = 31
    assert grace.refused() is None
    grace.granted()
    assert grace.refused() == 1.0


def test_events_reach_kopf_without_managed_fields() -> None:
    event = {
        "type": "MODIFIED",
        "object": {
            "metadata": {"name": "a", "managedFields": [{"manager": "kopf", "fieldsV1": {}}]},
            "status": {"state": "closed"},
        },
    }

    async def events(**_: Any) -> AsyncIterator[Any]:
        yield event
        yield "a bookmark"

    watch = tolerant(events, Forbidden, transform=without_managed_fields)

    async def read() -> list[Any]:
        return [item async for item in watch(resource="mljobs", namespace=None)]

    first, second = asyncio.run(read())
    assert first["object"] == {"metadata": {"name": "a"}, "status": {"state": "closed"}}
    assert second == "a bookmark"
