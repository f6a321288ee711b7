"""Shard balancing and ownership, driven by a fake clock and simulated Leases."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from mljob_operator.shards import (
    DEFAULT_LEASE_S,
    LeaseSeen,
    Ownership,
    fair_share,
    live_members,
    plan,
    shard_of,
)


def test_shard_of_is_stable_and_spreads() -> None:
    assert shard_of("3f2b1c9e-0000-4000-8000-000000000001", 16) == shard_of(
        "3f2b1c9e-0000-4000-8000-000000000001", 16
    )
    assert shard_of("abc", 16) == 10  # a fixed value: the mapping must never change
    counts = Counter(shard_of(str(uuid.UUID(int=i * 7919)), 16) for i in range(1600))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 2 * min(counts.values())


@pytest.mark.parametrize(
    ("shards", "replicas", "share"), [(16, 1, 16), (16, 2, 8), (16, 3, 6), (16, 5, 4), (3, 5, 1)]
)
def test_fair_share_is_the_ceiling(shards: int, replicas: int, share: int) -> None:
    assert fair_share(shards, replicas) == share


def test_a_lone_replica_takes_every_free_shard() -> None:
    got = plan("a", 4, {}, {"a"}, now=0.0)
    assert sorted(got.acquire) == [0, 1, 2, 3]
    assert got.renew == got.release == ()


def test_live_shards_of_others_are_left_alone_and_expired_ones_taken() -> None:
    leases = {
        0: LeaseSeen("b", first_seen=10.0),
        1: LeaseSeen("b", first_seen=0.0),  # not renewed for 15 s: expired at 15
        2: LeaseSeen(None, first_seen=10.0),  # released
    }
    got = plan("a", 4, leases, {"a"}, now=16.0)
    assert sorted(got.acquire) == [1, 2, 3]


def test_shards_past_the_fair_share_are_released_when_a_replica_joins() -> None:
    leases = {s: LeaseSeen("a", first_seen=0.0) for s in range(4)}
    got = plan("a", 4, leases, {"a", "b"}, now=1.0, mine=range(4))
    assert got.renew == (0, 1)
    assert got.release == (2, 3)
    assert got.acquire == ()


def test_a_lease_naming_me_that_i_no_longer_trust_waits_for_expiry() -> None:
    leases = {0: LeaseSeen("a", first_seen=0.0)}
    early = plan("a", 1, leases, {"a"}, now=5.0)
    assert early.acquire == early.renew == ()
    assert plan("a", 1, leases, {"a"}, now=15.0).acquire == (0,)


def test_members_are_the_live_membership_leases_and_me() -> None:
    members = [LeaseSeen("b", first_seen=0.0), LeaseSeen("c", first_seen=10.0)]
    assert live_members("a", members, now=20.0) == {"a", "c"}


def test_ownership_stops_before_anyone_else_may_take_over() -> None:
    own = Ownership(duration_s=15.0)
    own.acquired(3, sent_at=100.0, epoch=7)
    assert own.holds(3, 111.9)
    assert not own.holds(3, 112.0)  # 15 s minus the 3 s margin
    assert own.epoch(3) == 7
    own.renewed(3, sent_at=110.0)
    assert own.held(121.0) == {3}
    assert own.expire(122.5) == {3}
    assert own.epoch(3) is None


@dataclass
class Cluster:
    """Leases as the apiserver would hold them, replicas ticking against them, one clock.
    A write succeeds only if the Lease did not change since it was read (resourceVersion)."""

    shards: int
    now: float = 0.0
    holders: dict[int, str | None] = field(default_factory=dict)
    changed_at: dict[int, float] = field(default_factory=dict)
    members: dict[str, float] = field(default_factory=dict)
    own: dict[str, Ownership] = field(default_factory=dict)

    def tick(self, replica: str) -> None:
        self.members[replica] = self.now
        own = self.own.setdefault(replica, Ownership())
        own.expire(self.now)
        seen = {s: LeaseSeen(h, self.changed_at[s]) for s, h in self.holders.items()}
        alive = live_members(replica, [LeaseSeen(m, t) for m, t in self.members.items()], self.now)
        got = plan(replica, self.shards, seen, alive, self.now, own.held(self.now))
        for shard in got.renew:
            self.holders[shard], self.changed_at[shard] = replica, self.now
            own.renewed(shard, self.now)
        for shard in got.release:
            self.holders[shard], self.changed_at[shard] = None, self.now
            own.dropped(shard)
        for shard in got.acquire:
            self.holders[shard], self.changed_at[shard] = replica, self.now
            own.acquired(shard, self.now, epoch=1)

    def run(self, replicas: list[str], seconds: float, step: float = 5.0) -> None:
        end = self.now + seconds
        while self.now < end:
            for replica in replicas:
                self.tick(replica)
            self.now += step

    def counts(self) -> Counter[str | None]:
        return Counter(self.holders.values())

    def trusted(self) -> dict[int, list[str]]:
        """Per shard, the replicas that think they hold it now."""
        found: dict[int, list[str]] = {}
        for replica, own in self.own.items():
            for shard in own.held(self.now):
                found.setdefault(shard, []).append(replica)
        return found


def test_three_replicas_spread_sixteen_shards_fairly() -> None:
    cluster = Cluster(16)
    cluster.run(["a"], 10)
    cluster.run(["a", "b", "c"], 60)
    counts = cluster.counts()
    assert sum(counts.values()) == 16
    assert None not in counts
    assert all(n <= math.ceil(16 / 3) for n in counts.values())
    assert set(counts) == {"a", "b", "c"}
    assert all(len(holders) == 1 for holders in cluster.trusted().values())


def test_a_replica_that_stops_renewing_loses_its_shards_within_the_lease_duration() -> None:
    cluster = Cluster(16)
    cluster.run(["a", "b"], 60)
    before = {s for s, h in cluster.holders.items() if h == "b"}
    assert len(before) == 8
    stopped_at = cluster.now
    # b stops; a ticks every second from now on
    while any(h == "b" for h in cluster.holders.values()):
        cluster.run(["a"], 1, step=1.0)
    taken_after = cluster.now - stopped_at
    assert taken_after <= DEFAULT_LEASE_S + 2  # the lease duration, plus one tick
    assert cluster.counts() == Counter({"a": 16})
    # b's own view: it stopped trusting its hold before a took any of them
    assert cluster.own["b"].held(stopped_at + DEFAULT_LEASE_S * 0.8) == set()


def test_no_two_replicas_ever_trust_the_same_shard() -> None:
    cluster = Cluster(8)
    for step in range(200):
        alive = ["a", "b", "c"] if step % 50 < 30 else ["a", "c"]
        for replica in alive:
            cluster.tick(replica)
            assert all(len(h) == 1 for h in cluster.trusted().values()), cluster.trusted()
        cluster.now += 1.0
