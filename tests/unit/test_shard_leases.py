"""The Lease loop against an in-memory Lease API with the apiserver's optimistic
concurrency (a create of an existing name and a replace at a stale resourceVersion get
409), on a fake clock."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from mljob_operator.kube import KubeError
from mljob_operator.shard_leases import (
    ADDRESS_ANNOTATION,
    LEASE_LABEL,
    Replica,
    ShardLeases,
    member_lease_name,
)


class FakeLeases:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self._versions = itertools.count(1)

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert selector == LEASE_LABEL
        return copy.deepcopy(list(self.items.values()))

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        name = lease["metadata"]["name"]
        if name in self.items:
            raise KubeError(409, "already exists")
        return self._store(lease)

    async def replace_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        current = self.items[lease["metadata"]["name"]]
        if lease["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        return self._store(lease)

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        current = self.items.get(name)
        if current is None:
            raise KubeError(404, "not found")
        if current["metadata"]["resourceVersion"] != resource_version:
            raise KubeError(409, "precondition failed")
        del self.items[name]

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.items[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def holders(self) -> dict[str, str | None]:
        return {
            name: item["spec"]["holderIdentity"]
            for name, item in self.items.items()
            if name.startswith("mljob-shard-")
        }


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _replica(api: FakeLeases, clock: Clock, me: str, lost: list[int]) -> ShardLeases:
    epochs = itertools.count(1)

    async def take(shard: int, timeout_s: float) -> int:
        return next(epochs)

    return ShardLeases(
        api,
        Replica("mljob-system", me, 16, f"{me}.pods:8080"),
        take_epoch=take,
        on_lost=lost.append,
        monotonic=clock,
    )


def test_two_replicas_split_the_shards_and_a_silent_one_is_taken_over() -> None:
    asyncio.run(_two_replicas())


async def _two_replicas() -> None:
    api, clock = FakeLeases(), Clock()
    lost_a: list[int] = []
    lost_b: list[int] = []
    a, b = _replica(api, clock, "a", lost_a), _replica(api, clock, "b", lost_b)
    for _ in range(6):
        await a.tick()
        await b.tick()
        clock.now += 5
    assert len(a.held()) == len(b.held()) == 8
    assert a.held().isdisjoint(b.held())
    assert set(api.holders().values()) == {"a", "b"}
    assert b.holder_address(_uid_in(b, a.held())) == "a.pods:8080"
    assert a.holder_address(_uid_in(a, a.held())) is None

    silent_since = clock.now
    b_shards = b.held()
    while set(api.holders().values()) != {"a"}:
        await a.tick()
        clock.now += 1
    assert clock.now - silent_since <= 15 + 5 + 1  # the lease duration and a tick
    assert len(a.held()) == 16
    assert not b.held()  # b stopped trusting them before a could take them
    await b.tick()  # b wakes up: it drops what it lost, and writes nothing for them
    assert set(lost_b) >= b_shards
    assert not b.held()
    assert set(api.holders().values()) == {"a"}
    for _ in range(2):  # then a hands half back, and b takes it
        clock.now += 5
        await a.tick()
        await b.tick()
    assert len(a.held()) == len(b.held()) == 8


def _uid_in(replica: ShardLeases, shards: set[int]) -> str:
    return next(u for u in (f"uid-{i}" for i in range(1000)) if replica.shard(u) in shards)


def test_stop_hands_every_shard_back() -> None:
    asyncio.run(_stop())


async def _stop() -> None:
    api, clock = FakeLeases(), Clock()
    lost: list[int] = []
    a = _replica(api, clock, "a", lost)
    await a.tick()
    assert len(a.held()) == 16
    assert api.items["mljob-shard-3"]["metadata"]["annotations"] == {
        ADDRESS_ANNOTATION: "a.pods:8080"
    }
    await a.stop()
    assert set(api.holders().values()) == {None}
    assert sorted(lost) == list(range(16))
    assert member_lease_name("a") not in api.items  # gone with it, not left behind


def test_an_epoch_that_cannot_be_taken_hands_the_lease_back_without_stalling_the_loop() -> None:
    asyncio.run(_stuck_take())


async def _stuck_take() -> None:
    """The store never answers (a paused replica's commit holds the epoch row): the tick
    still ends within a renewal period, holding nothing and holding no Lease."""
    api, lost = FakeLeases(), []
    asked: list[float] = []

    async def stuck(shard: int, timeout_s: float) -> int:
        asked.append(timeout_s)
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    a = ShardLeases(
        api,
        Replica("mljob-system", "a", 16, "a.pods:8080", duration_s=3.0),
        take_epoch=stuck,
        on_lost=lost.append,
        monotonic=Clock(),
    )
    await asyncio.wait_for(a.tick(), timeout=10)
    assert not a.held()
    assert asked
    assert all(0 < t <= 0.5 for t in asked)  # the store's own bound is tighter
    assert set(api.holders().values()) == {None}  # every Lease it wrote was handed back


def test_the_published_duration_is_never_shorter_than_the_one_trusted() -> None:
    asyncio.run(_published())


async def _published() -> None:
    """Others judge expiry by the Lease's whole seconds; a fractional duration is rounded
    up, so nobody takes a shard while this replica still trusts its hold."""
    api = FakeLeases()
    a = ShardLeases(
        api,
        Replica("mljob-system", "a", 2, "a.pods:8080", duration_s=3.4),
        take_epoch=_epochs(),
        on_lost=lambda shard: None,
        monotonic=Clock(),
    )
    await a.tick()
    published = {i["spec"]["leaseDurationSeconds"] for i in api.items.values()}
    assert published == {4}
    assert a.ownership.duration_s <= 4


def _epochs() -> Callable[[int, float], Awaitable[int]]:
    counter = itertools.count(1)

    async def take(shard: int, timeout_s: float) -> int:
        return next(counter)

    return take


def test_a_long_expired_member_lease_is_collected() -> None:
    asyncio.run(_collect())


async def _collect() -> None:
    """A replica that died without stopping leaves its membership Lease; the others
    delete it once it has been expired for a while (never a live one)."""
    api, clock = FakeLeases(), Clock()
    a, b = _replica(api, clock, "a", []), _replica(api, clock, "b", [])
    await a.tick()
    await b.tick()
    members = {member_lease_name("a"), member_lease_name("b")}
    assert members <= set(api.items)
    clock.now += 15 * 2  # b is gone: expired, but not for long yet
    await a.tick()
    assert members <= set(api.items)
    while member_lease_name("b") in api.items:
        assert clock.now < 1000 + 15 * 20, "never collected"
        clock.now += 5
        await a.tick()
    assert member_lease_name("a") in api.items


def test_member_lease_names_are_valid_and_distinct() -> None:
    assert member_lease_name("mljob-operator-7d9f-x2") == "mljob-replica-mljob-operator-7d9f-x2"
    odd = member_lease_name("Node_1.Example")
    assert odd.startswith("mljob-replica-node-1-example-")
    assert odd != member_lease_name("node-1-example")
