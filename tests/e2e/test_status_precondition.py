"""Leased mode's status writes against the real apiserver: a write the old holder of a
shard sent just before it was paused cannot replace the new holder's status when it
lands late, and a change by anyone else costs a re-read, never the write.

The apiserver is real; the only thing arranged is when one replica's request leaves its
process (held back on the client side, as a paused process would hold it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes
import pytest

from devtools.controlplane import ControlPlane
from mljob_operator.kube import KubeClient
from mljob_operator.shard_leases import HolderOnlyStatus, ShardLost
from tests.e2e.jobs import eventually, get, mljob

T = TypeVar("T")


class HeldBack(KubeClient):
    """A real client whose next status write, once `hold_next` is set, waits on this side
    until `release` is set: sent (the shard was held when it was checked) but not yet
    arrived, as when its process is paused right then."""

    def __init__(self, cp: ControlPlane) -> None:
        api = kubernetes.config.new_client_from_config(str(cp.kubeconfig))  # type: ignore[no-untyped-call]
        super().__init__(api)
        self.hold_next = False
        self.sent = asyncio.Event()
        self.release = asyncio.Event()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.hold_next and fn.__name__ == "_patch_status":
            self.hold_next = False
            self.sent.set()
            await self.release.wait()
        return await super()._call(fn, *args, **kwargs)


def _job(cp: ControlPlane, namespace: str, name: str) -> None:
    created = eventually(
        lambda: cp.kubectl("create", "-n", namespace, "-f", "-", input=mljob(name), check=False)
    )
    assert created.returncode == 0, created.stderr


def test_a_late_write_of_the_old_holder_does_not_replace_the_new_holders_status(
    mljob_crd: ControlPlane, namespace: str
) -> None:
    cp, name = mljob_crd, "moved"
    _job(cp, namespace, name)
    held = {"a": True}

    async def scenario() -> None:
        old_kube, new_kube = HeldBack(cp), HeldBack(cp)
        old = HolderOnlyStatus(old_kube, lambda: held["a"])
        new = HolderOnlyStatus(new_kube, lambda: True)
        try:
            await old.replace_status(namespace, name, {"state": "opened"})
            old_kube.hold_next = True
            late = asyncio.ensure_future(old.replace_status(namespace, name, {"state": "closing"}))
            await asyncio.wait_for(old_kube.sent.wait(), 30)
            held["a"] = False  # its hold ran out meanwhile; another replica took the shard
            await new.replace_status(namespace, name, {"state": "closed"})
            old_kube.release.set()
            with pytest.raises(ShardLost):
                await asyncio.wait_for(late, 30)
        finally:
            old_kube.close()
            new_kube.close()

    asyncio.run(scenario())
    assert get(cp, namespace, name)["status"] == {"state": "closed"}


def test_a_change_by_anyone_else_costs_a_read_not_the_write(
    mljob_crd: ControlPlane, namespace: str
) -> None:
    cp, name = mljob_crd, "busy"
    _job(cp, namespace, name)

    async def scenario() -> None:
        kube = HeldBack(cp)
        holder = HolderOnlyStatus(kube, lambda: True)
        try:
            await holder.replace_status(namespace, name, {"state": "opened"})
            cp.kubectl("label", "mljob", name, "-n", namespace, "probe=1")
            await holder.replace_status(namespace, name, {"state": "closing"})
            assert get(cp, namespace, name)["status"] == {"state": "closing"}
            await holder.replace_status(namespace, name, {"state": "closed"})
        finally:
            kube.close()

    asyncio.run(scenario())
    assert get(cp, namespace, name)["status"] == {"state": "closed"}
