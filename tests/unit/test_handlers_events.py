"""The watch-event handler's bookkeeping in leased mode: a job held by another replica is
kept as a small status record here, and dropped with its uid once the job is deleted, so
a long-running replica keeps nothing for jobs that are gone."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from mljob_operator.handlers import Registry, changed


class HeldElsewhere:
    def holds(self, uid: str | None) -> bool:
        return False


def _body(state: str) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "ml.mljob.dev/v1alpha1",
            "kind": "MLJob",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "status": {"state": state},
        }
    )


async def _events() -> Registry:
    registry = Registry(runtime=cast(Any, None), kube=cast(Any, None), settings=cast(Any, None))
    registry.leases = cast(Any, HeldElsewhere())
    memo = {"registry": registry}
    for event, state in ((None, "opened"), ("MODIFIED", "closed"), ("DELETED", "closed")):
        await changed(
            body=_body(state), namespace="ns", name="web", memo=memo, event={"type": event}
        )
        if event != "DELETED":
            assert registry.uids == {"ns/web": "u-1"}
            assert registry.settled["ns/web"].status.state == state
    return registry


def test_a_deleted_job_held_elsewhere_leaves_no_record() -> None:
    registry = asyncio.run(_events())
    assert registry.settled == {}
    assert registry.uids == {}
