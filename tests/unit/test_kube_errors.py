"""An unreachable apiserver is a retryable KubeError (503), never an engine failure."""

from __future__ import annotations

import asyncio

import kubernetes
import pytest

from devtools.processes import free_port
from mljob_operator.kube import JobGone, KubeClient, KubeError


def test_unreachable_apiserver_is_a_503_kube_error() -> None:
    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"
    config.retries = 0
    client = KubeClient(kubernetes.client.ApiClient(config))
    try:
        with pytest.raises(KubeError) as caught:
            asyncio.run(client.get_job("ns", "job"))
    finally:
        client.close()
    assert caught.value.status == 503
    assert not isinstance(caught.value, JobGone)
    assert "unreachable" in caught.value.message


def test_a_conflict_the_caller_handles_is_a_409_kube_error_after_one_try() -> None:
    """Lease writes and leased status writes carry a resourceVersion: their 409 goes to
    the caller at once (a lost race, or a status to read again), never retried as is."""
    client = KubeClient(kubernetes.client.ApiClient(kubernetes.client.Configuration()))
    tries: list[int] = []

    def conflict(**_: object) -> None:
        tries.append(1)
        raise kubernetes.client.ApiException(status=409, reason="Conflict")

    try:
        with pytest.raises(KubeError) as caught:
            asyncio.run(client._call(conflict, retry_conflicts=False))
    finally:
        client.close()
    assert caught.value.status == 409
    assert tries == [1]
