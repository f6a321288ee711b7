"""Shard ownership among operator replicas, decided from the Leases seen (pure).

Jobs map to shards by a stable hash of their uid; each shard is a Lease held by one
replica, and each replica keeps a small membership Lease of its own, so a replica that
holds nothing yet still counts. Every tick, `plan` says which shard Leases to acquire,
renew and release so that each live replica holds at most its fair share
(ceil(shards / replicas)).

The one thing that is not obvious: expiry is judged on this replica's own monotonic clock,
never on the holder's `renewTime` (clocks of two machines disagree). As in client-go's
leader election, a Lease is alive while its resourceVersion keeps changing: it expires
`leaseDurationSeconds` after this replica first saw its current version. And this replica
trusts its own hold only until `duration - margin` after it *sent* the last successful
renewal, so it stops acting before any other replica can take the shard over.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_SHARDS = 16
DEFAULT_LEASE_S = 15.0
RENEW_FRACTION = 3
"""Renew every duration / 3: two renewals may fail before the Lease runs out."""
SAFETY_MARGIN_FRACTION = 0.2
"""A replica stops acting on a shard this fraction of the duration before anyone else
may take it over."""


def shard_of(uid: str, shards: int) -> int:
    """The shard of a job: stable across processes, versions and restarts (no `hash()`)."""
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def fair_share(shards: int, replicas: int) -> int:
    return math.ceil(shards / max(1, replicas))


def shard_lease_name(shard: int) -> str:
    return f"mljob-shard-{shard}"


@dataclass(frozen=True, slots=True)
class LeaseSeen:
    """A Lease as this replica saw it: its holder, and when (this replica's monotonic
    clock) its current version was first seen."""

    holder: str | None
    first_seen: float
    duration_s: float = DEFAULT_LEASE_S

    def alive(self, now: float) -> bool:
        return bool(self.holder) and now < self.first_seen + self.duration_s


@dataclass(frozen=True, slots=True)
class Plan:
    acquire: tuple[int, ...] = ()
    renew: tuple[int, ...] = ()
    release: tuple[int, ...] = ()


def live_members(me: str, members: Iterable[LeaseSeen], now: float) -> set[str]:
    """The replicas whose membership Lease is alive, this one always included."""
    return {m.holder for m in members if m.holder and m.alive(now)} | {me}


def preference(me: str, shards: int) -> list[int]:
    """The order this replica tries free shards in: rotated by its id, so replicas
    starting together mostly reach for different shards first."""
    start = shard_of(me, shards)
    return [(start + i) % shards for i in range(shards)]


def plan(
    me: str,
    shards: int,
    leases: Mapping[int, LeaseSeen],
    members: set[str],
    now: float,
    mine: Iterable[int] = (),
) -> Plan:
    """What to do this tick. `leases`: the shard Leases seen (absent ones do not exist
    yet); `members`: the live replicas; `mine`: the shards this replica holds by its own
    account (`Ownership.held`). A Lease naming this replica that it no longer trusts
    (a pause outlived it, or a restart under the same id) is not renewed: it is taken
    afresh once expired, with a new fencing epoch."""
    share = fair_share(shards, len(members | {me}))
    held = sorted(set(mine))
    keep = held[:share]
    release = held[share:]
    acquire: list[int] = []
    for shard in preference(me, shards):
        if len(keep) + len(acquire) >= share:
            break
        lease = leases.get(shard)
        if shard in held:
            continue
        if lease is None or not lease.alive(now):
            acquire.append(shard)
    return Plan(acquire=tuple(acquire), renew=tuple(keep), release=tuple(release))


@dataclass
class Ownership:
    """The shards this replica holds, each until `duration - margin` after the request
    that last acquired or renewed it was sent, and the fencing epoch it got for each."""

    duration_s: float = DEFAULT_LEASE_S
    _until: dict[int, float] = field(default_factory=dict)
    _epochs: dict[int, int] = field(default_factory=dict)

    @property
    def margin_s(self) -> float:
        return self.duration_s * SAFETY_MARGIN_FRACTION

    def renewed(self, shard: int, sent_at: float) -> None:
        self._until[shard] = sent_at + self.duration_s - self.margin_s

    def acquired(self, shard: int, sent_at: float, epoch: int) -> None:
        self.renewed(shard, sent_at)
        self._epochs[shard] = epoch

    def dropped(self, shard: int) -> None:
        self._until.pop(shard, None)
        self._epochs.pop(shard, None)

    def holds(self, shard: int, now: float) -> bool:
        return now < self._until.get(shard, -math.inf)

    def epoch(self, shard: int) -> int | None:
        return self._epochs.get(shard)

    def held(self, now: float) -> set[int]:
        return {s for s in self._until if self.holds(s, now)}

    def expire(self, now: float) -> set[int]:
        """Forget the shards whose hold ran out; returns them."""
        gone = {s for s in self._until if not self.holds(s, now)}
        for shard in gone:
            self.dropped(shard)
        return gone
