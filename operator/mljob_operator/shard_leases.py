"""The shard Leases of this replica, kept in the apiserver (leased mode).

Every `duration / 3` this replica lists the Leases of `MLJOB_NAMESPACE` labelled
`ml.mljob.dev/lease` (one `mljob-shard-<n>` per shard, one `mljob-replica-<id>` per live
replica), renews its own membership Lease, and carries out `shards.plan`: each write is
a create, or a replace at the resourceVersion it read, so two replicas reaching for one
shard cannot both win (the loser gets a 409 and moves on). A shard is acted on only once
its fencing epoch was taken in the store (`take_epoch`), and dropped (`on_lost`) as soon
as its hold runs out by this replica's own clock, whatever the apiserver says later.
Taking epochs never holds up the next renewal: the takes of one tick share a period's
time (`asyncio.wait_for`, and the store's own lock timeout inside it), and a shard whose
epoch was not taken in time (a paused replica's commit holds the row) is handed back.

The address other replicas forward data API calls to is published on every Lease held
(annotation `ml.mljob.dev/address`). A replica deletes its membership Lease when it
stops, and the membership Lease of one that died is deleted by the others once it has
been expired for `COLLECT_AFTER` lease durations (at the version seen, so never one
renewed meanwhile): replica ids are pod names, so they would pile up otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from mljob_operator.api import GROUP
from mljob_operator.kube import KubeClient, KubeError
from mljob_operator.shards import (
    RENEW_FRACTION,
    LeaseSeen,
    Ownership,
    Plan,
    live_members,
    plan,
    shard_lease_name,
    shard_of,
)

log = logging.getLogger(__name__)

LEASE_LABEL = f"{GROUP}/lease"
ADDRESS_ANNOTATION = f"{GROUP}/address"
SHARD_PREFIX = "mljob-shard-"
MEMBER_PREFIX = "mljob-replica-"
COLLECT_AFTER = 10
"""Lease durations a membership Lease stays expired before the others delete it."""
STATUS_CONFLICTS = 5
"""Status writes refused as stale (each followed by a read) before one gives up."""
MIN_TAKE_S = 0.2
"""Below this much of a tick's time left for taking epochs, the rest wait a tick."""


class LeaseApi(Protocol):
    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]: ...
    async def replace_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]: ...
    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None: ...


def member_lease_name(replica: str) -> str:
    """A DNS-1123 name for any replica id (a hash keeps two ids that slug alike apart)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", replica.lower()).strip("-")[:40]
    if slug == replica:
        return MEMBER_PREFIX + slug
    return f"{MEMBER_PREFIX}{slug}-{hashlib.sha256(replica.encode()).hexdigest()[:8]}".replace(
        "--", "-"
    )


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Replica:
    """Who this replica is among the others, and the Leases' terms."""

    namespace: str
    me: str
    shards: int
    address: str
    duration_s: float = 15.0


class ShardLeases:
    def __init__(
        self,
        api: LeaseApi,
        replica: Replica,
        *,
        take_epoch: Callable[[int, float], Awaitable[int]],
        on_lost: Callable[[int], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self.me = api, replica.namespace, replica.me
        self.shards, self.address = replica.shards, replica.address
        self.duration_s = replica.duration_s
        self.take_epoch, self.on_lost, self.monotonic = take_epoch, on_lost, monotonic
        self.ownership = Ownership(self.duration_s)
        self._seen: dict[str, tuple[str, float]] = {}
        self._leases: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the rest of the operator asks ------------------------------------------------

    def shard(self, uid: str) -> int:
        return shard_of(uid, self.shards)

    def holds(self, uid: str | None) -> bool:
        """Whether this replica may act on (and write for) the job of this uid now."""
        return uid is not None and self.ownership.holds(self.shard(uid), self.monotonic())

    def held(self) -> set[int]:
        return self.ownership.held(self.monotonic())

    def holder_address(self, uid: str) -> str | None:
        """The address of the replica holding this job's shard (None: nobody, or us)."""
        lease = self._leases.get(shard_lease_name(self.shard(uid)))
        if lease is None:
            return None
        seen = self._view(lease, self.monotonic())
        if seen.holder in (None, self.me) or not seen.alive(self.monotonic()):
            return None
        return ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION)

    async def changed(self, timeout_s: float) -> None:
        """Wait until the shards held change (or `timeout_s` passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout_s)

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        period = self.duration_s / RENEW_FRACTION
        while True:
            started = self.monotonic()
            try:
                await self.tick()
            except KubeError as err:
                log.warning("shard leases: Kubernetes API error, will retry: %s", err)
            except Exception:
                log.exception("shard leases: tick failed, will retry")
            await asyncio.sleep(max(0.0, period - (self.monotonic() - started)))

    async def stop(self) -> None:
        """Stop renewing and hand every shard back at once (a rolling update then moves
        jobs in one tick of the others, not after a whole lease duration)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for shard in sorted(self.ownership.held(self.monotonic())):
            self._drop(shard)
            lease = self._leases.get(shard_lease_name(shard))
            if lease is not None:
                with contextlib.suppress(KubeError):
                    await self.api.replace_lease(self.namespace, self._body(lease, None))
        member = self._leases.get(member_lease_name(self.me))
        if member is not None:
            try:
                await self._delete(member)
            except KubeError:  # e.g. a Role without the delete verb: at least release it
                with contextlib.suppress(KubeError):
                    await self.api.replace_lease(self.namespace, self._body(member, None))

    async def tick(self) -> None:
        now = self.monotonic()
        before = self.ownership.held(now)
        for shard in self.ownership.expire(now):
            log.warning("shard %d: hold ran out before it was renewed; stopped its jobs", shard)
            self._drop(shard)
        leases, members = await self._observe()
        await self._renew_membership()
        await self._collect(self.monotonic())
        now = self.monotonic()
        alive = live_members(self.me, members, now)
        await self._carry_out(
            plan(self.me, self.shards, leases, alive, now, self.ownership.held(now))
        )
        if self.ownership.held(self.monotonic()) != before:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _observe(self) -> tuple[dict[int, LeaseSeen], list[LeaseSeen]]:
        """The shard Leases and membership Leases, as of now."""
        items = await self.api.list_leases(self.namespace, LEASE_LABEL)
        now = self.monotonic()
        self._leases = {item["metadata"]["name"]: item for item in items}
        leases: dict[int, LeaseSeen] = {}
        members: list[LeaseSeen] = []
        for name, item in self._leases.items():
            number = name.removeprefix(SHARD_PREFIX)
            if number != name and number.isdigit() and int(number) < self.shards:
                leases[int(number)] = self._view(item, now)
            elif name.startswith(MEMBER_PREFIX):
                members.append(self._view(item, now))
        return leases, members

    async def _carry_out(self, todo: Plan) -> None:
        for shard in todo.release:
            self._drop(shard)
            await self._write(shard, None)
        for shard in todo.renew:
            sent = self.monotonic()
            if await self._write(shard, self.me):
                self.ownership.renewed(shard, sent)
            else:
                self._drop(shard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration_s / RENEW_FRACTION
        for shard in todo.acquire:
            left = deadline - loop.time()
            if left < MIN_TAKE_S:
                break  # the others next tick
            sent = self.monotonic()
            if not await self._write(shard, self.me):
                continue
            try:
                epoch = await asyncio.wait_for(self.take_epoch(shard, left / 2), left)
            except Exception as err:
                log.warning(
                    "shard %d: fencing epoch not taken, handing back: %s", shard, err or repr(err)
                )
                self.on_lost(shard)  # whatever a take cut off may have recorded
                await self._write(shard, None)
                continue
            self.ownership.acquired(shard, sent, epoch)
            log.info("shard %d: acquired (epoch %d)", shard, epoch)

    async def _collect(self, now: float) -> None:
        """Delete the membership Leases of replicas gone for long (see module docstring)."""
        mine = member_lease_name(self.me)
        for name, lease in list(self._leases.items()):
            if not name.startswith(MEMBER_PREFIX) or name == mine:
                continue
            seen = self._view(lease, now)
            if now < seen.first_seen + seen.duration_s * (1 + COLLECT_AFTER):
                continue
            try:
                await self._delete(lease)
            except KubeError as err:
                if err.status not in (404, 409):
                    log.warning("membership Lease %s not deleted: %s", name, err)
                continue
            log.info("membership Lease %s expired long ago: deleted", name)

    async def _delete(self, lease: dict[str, Any]) -> None:
        meta = lease.get("metadata") or {}
        await self.api.delete_lease(self.namespace, meta["name"], meta["resourceVersion"])
        self._leases.pop(meta["name"], None)
        self._seen.pop(meta["name"], None)

    def _drop(self, shard: int) -> None:
        self.ownership.dropped(shard)
        self.on_lost(shard)
        self._changed.set()
        self._changed = asyncio.Event()

    def _view(self, lease: dict[str, Any], now: float) -> LeaseSeen:
        """The Lease with when this replica first saw its current version."""
        meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        name, version = meta.get("name", ""), meta.get("resourceVersion", "")
        seen = self._seen.get(name)
        if seen is None or seen[0] != version:
            seen = (version, now)
            self._seen[name] = seen
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        return LeaseSeen(spec.get("holderIdentity") or None, seen[1], duration)

    def _body(
        self, lease: dict[str, Any] | None, holder: str | None, name: str = ""
    ) -> dict[str, Any]:
        """`lease` (None: a new one named `name`) held by `holder` (None: released)."""
        old_meta = (lease or {}).get("metadata") or {}
        old_spec = (lease or {}).get("spec") or {}
        name = old_meta.get("name", name)
        kind = "member" if name.startswith(MEMBER_PREFIX) else "shard"
        now = _micro_time()
        transitions = int(old_spec.get("leaseTransitions") or 0)
        if holder is not None and old_spec.get("holderIdentity") != holder:
            transitions += 1 if lease is not None else 0
            acquired: str | None = now
        else:
            acquired = old_spec.get("acquireTime")
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {LEASE_LABEL: kind, "app.kubernetes.io/managed-by": "mljob-operator"},
            "annotations": {ADDRESS_ANNOTATION: self.address} if holder else {},
        }
        if old_meta.get("resourceVersion"):
            meta["resourceVersion"] = old_meta["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": math.ceil(self.duration_s),  # never below ours
                "acquireTime": acquired if holder else None,
                "renewTime": now if holder else None,
                "leaseTransitions": transitions,
            },
        }

    async def _put(self, name: str, holder: str | None) -> bool:
        """Write the Lease `name` for `holder`; False when another replica got there
        first (409) or it does not exist to be released."""
        lease = self._leases.get(name)
        if lease is None and holder is None:
            return False
        try:
            if lease is None:
                written = await self.api.create_lease(
                    self.namespace, self._body(None, holder, name)
                )
            else:
                written = await self.api.replace_lease(self.namespace, self._body(lease, holder))
        except KubeError as err:
            if err.status == 409:
                return False
            raise
        self._leases[name] = written
        return True

    async def _write(self, shard: int, holder: str | None) -> bool:
        return await self._put(shard_lease_name(shard), holder)

    async def _renew_membership(self) -> None:
        await self._put(member_lease_name(self.me), self.me)


class ShardLost(KubeError):
    """A status write for a job whose shard this replica no longer holds: not sent."""


class HolderOnlyStatus:
    """A job's Kubernetes client in leased mode: its status is written only while this
    replica holds the job's shard (by its own clock, checked before each write), and
    Secrets/ConfigMaps for its datafeed are read as usual.

    The apiserver knows no fencing epoch, and a write sent just before this replica was
    paused can arrive after its hold ran out, when another replica already holds the
    shard. So each write carries the resourceVersion this replica last saw (the answer to
    its previous write, else a fresh read): if anything wrote the object since, the
    apiserver refuses it (409) and it is sent again only after a new read *and* a new
    check that the shard is still held. A new holder's status write changes the version,
    so a late write of the old holder can never replace it; a change by anyone else (a
    spec patch, kopf's annotations) costs one read and the same write again, as the
    unconditional write of a single replica would have landed anyway."""

    def __init__(self, kube: KubeClient, holds: Callable[[], bool]) -> None:
        self.kube, self.holds = kube, holds
        self._version: str | None = None

    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        for _ in range(STATUS_CONFLICTS):
            version = self._version
            if version is None:
                body = await self.kube.get_job(namespace, name)
                version = str(body["metadata"]["resourceVersion"])
            if not self.holds():  # checked after the read: nothing newer can be in it
                raise ShardLost(409, f"{namespace}/{name}: shard not held here any more")
            try:
                self._version = await self.kube.replace_status_at(namespace, name, status, version)
                return
            except KubeError as err:
                self._version = None
                if err.status != 409:
                    raise
        raise KubeError(409, f"{namespace}/{name}: changed under every status write; will retry")

    async def read_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes]:
        return await self.kube.read_data(kind, namespace, name)
