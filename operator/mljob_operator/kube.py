"""The one place that talks to the Kubernetes API outside kopf's own machinery.

kopf watches and dispatches; status, spec and annotation patches made from long-running
daemons and from the HTTP API go through here. Errors are translated in one place: a 404
becomes `JobGone`, a 409 conflict is retried, everything else is raised as `KubeError`
with the apiserver's message, and an unreachable apiserver is a `KubeError` 503 (a retry
later, never a job failure). The synchronous `kubernetes` client runs in threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import http.client
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import kubernetes
import orjson
import urllib3

from mljob_operator.api import GROUP, PLURAL, VERSION

CONFLICT_RETRIES = 5
KUBE_THREADS = 8
"""The synchronous client's own threads: a slow apiserver cannot take the engine's."""
REVIEW_THREADS = 4
"""TokenReviews and SubjectAccessReviews get their own: a storm of sign-ins (or reviews
hanging while etcd is down) never queues the controllers' status writes behind it."""
REQUEST_TIMEOUT_S = (5.0, 30.0)
"""(connect, read): a half-open connection must not hold a job's controller forever."""

T = TypeVar("T")


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class JobGone(KubeError):
    """The MLJob no longer exists."""


def _translate(err: kubernetes.client.ApiException) -> KubeError:
    message = err.reason or ""
    with contextlib.suppress(ValueError):
        message = json.loads(err.body or "{}").get("message", message)
    status = int(err.status or 500)
    return JobGone(status, message) if status == 404 else KubeError(status, message)


class KubeClient:
    def __init__(self, api_client: Any | None = None) -> None:
        if api_client is None:
            kubernetes.config.load_config()  # type: ignore[no-untyped-call]
            config = kubernetes.client.Configuration.get_default_copy()
            config.connection_pool_maxsize = KUBE_THREADS + REVIEW_THREADS
            api_client = kubernetes.client.ApiClient(config)
        self._api_client = api_client
        self._pool = ThreadPoolExecutor(KUBE_THREADS, thread_name_prefix="kube")
        self._reviews = ThreadPoolExecutor(REVIEW_THREADS, thread_name_prefix="kube-review")
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._authn = kubernetes.client.AuthenticationV1Api(api_client)
        self._authz = kubernetes.client.AuthorizationV1Api(api_client)
        self._leases = kubernetes.client.CoordinationV1Api(api_client)

    async def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        pool: ThreadPoolExecutor | None = None,
        retry_conflicts: bool = True,
        **kwargs: Any,
    ) -> T:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        attempts = CONFLICT_RETRIES if retry_conflicts else 1
        for attempt in range(attempts):
            try:
                call = functools.partial(fn, *args, **kwargs)
                return await asyncio.get_running_loop().run_in_executor(pool or self._pool, call)
            except kubernetes.client.ApiException as err:
                if err.status == 409 and attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                raise _translate(err) from err
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
                raise KubeError(503, f"Kubernetes API unreachable: {err}") from err
        raise AssertionError("unreachable")

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await self._call(
            self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return cast(dict[str, Any], obj)

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        listing = await self._call(
            self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
        )
        return cast(list[dict[str, Any]], cast(dict[str, Any], listing).get("items", []))

    async def list_jobs_page(
        self, namespace: str, limit: int, continue_: str | None
    ) -> dict[str, Any]:
        """One page of the namespace's MLJobs: the apiserver's list (`items`, and in
        `metadata` the `continue` token and `remainingItemCount` when more follow)."""
        listing = await self._call(
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            limit=limit,
            _continue=continue_,
        )
        return cast(dict[str, Any], listing)

    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace the whole status (JSON patch `add` replaces an existing member), so no
        key of an earlier status survives as a merge patch would let it."""
        ops = [{"op": "add", "path": "/status", "value": status}]
        await self._call(self._patch_status, namespace, name, ops, False)

    async def replace_status_at(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> str:
        """`replace_status` only if the object is still at `resource_version`: the patch
        carries it, so the apiserver answers 409 if anything changed the object since
        (not retried here: the caller re-reads first). Returns the new resourceVersion."""
        ops: list[dict[str, Any]] = [
            {"op": "add", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]
        obj = await self._call(
            self._patch_status, namespace, name, ops, True, retry_conflicts=False
        )
        assert obj is not None
        return str(obj["metadata"]["resourceVersion"])

    def _patch_status(
        self,
        namespace: str,
        name: str,
        ops: list[dict[str, Any]],
        returned: bool,
        _request_timeout: Any = REQUEST_TIMEOUT_S,
    ) -> dict[str, Any] | None:
        """A JSON patch of the status subresource (in a worker thread); the object as
        stored only if `returned`. The answer is read raw: a status write of every close
        otherwise pays for the client's model deserialisation of the whole object."""
        answer = self._custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            ops,
            _content_type="application/json-patch+json",
            _preload_content=False,
            _request_timeout=_request_timeout,
        )
        assert isinstance(answer, urllib3.BaseHTTPResponse)
        try:
            if returned:
                return cast(dict[str, Any], orjson.loads(answer.data))
            answer.drain_conn()
            return None
        finally:
            answer.release_conn()

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the MLJob; returns the object as stored (with its new generation)."""
        obj = await self._call(
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )
        return cast(dict[str, Any], obj)

    async def read_data(self, kind: str, namespace: str, name: str) -> dict[str, bytes]:
        """The data of one Secret or ConfigMap (`kind`), values as bytes. A GET of that
        object only: the operator holds no list or watch on them."""
        if kind == "Secret":
            secret: Any = await self._call(
                self._core.read_namespaced_secret, name, namespace, _preload_content=False
            )
            raw = json.loads(secret.data).get("data") or {}
            try:
                return {key: base64.b64decode(value) for key, value in raw.items()}
            except (binascii.Error, TypeError):
                raise KubeError(500, f"Secret {namespace}/{name}: data is not base64") from None
        if kind != "ConfigMap":
            raise ValueError(f"cannot read a {kind}")
        cm: Any = await self._call(
            self._core.read_namespaced_config_map, name, namespace, _preload_content=False
        )
        body = json.loads(cm.data)
        found = {k: base64.b64decode(v) for k, v in (body.get("binaryData") or {}).items()}
        found.update({k: v.encode() for k, v in (body.get("data") or {}).items()})
        return found

    async def review_token(self, token: str) -> dict[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}
        body["spec"] = {"token": token}  # type: ignore[assignment]
        result = await self._call(self._authn.create_token_review, body, pool=self._reviews)
        status: dict[str, Any] = self._api_client.sanitize_for_serialization(result)["status"]
        return status

    async def review_access(self, spec: dict[str, Any]) -> bool:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview"}
        body["spec"] = spec  # type: ignore[assignment]
        result = await self._call(
            self._authz.create_subject_access_review, body, pool=self._reviews
        )
        return result.status is not None and bool(result.status.allowed)

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listing = await self._call(
            self._leases.list_namespaced_lease, namespace, label_selector=selector
        )
        found = self._api_client.sanitize_for_serialization(listing)
        return cast(list[dict[str, Any]], found.get("items") or [])

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        """Create a Lease; a 409 (someone else created it first) is raised, not retried."""
        made = await self._call(
            self._leases.create_namespaced_lease, namespace, lease, retry_conflicts=False
        )
        return cast(dict[str, Any], self._api_client.sanitize_for_serialization(made))

    async def replace_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        """Replace a Lease at the resourceVersion it carries: a 409 means another replica
        wrote it since it was read (optimistic concurrency), raised, never retried."""
        name = lease["metadata"]["name"]
        done = await self._call(
            self._leases.replace_namespaced_lease, name, namespace, lease, retry_conflicts=False
        )
        return cast(dict[str, Any], self._api_client.sanitize_for_serialization(done))

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        """Delete a Lease only at the version read (a 409 if it was written since)."""
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
        )
        await self._call(
            self._leases.delete_namespaced_lease,
            name,
            namespace,
            body=options,
            retry_conflicts=False,
        )

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of the apiserver as this client reaches it, and in a cluster its
        Service address too."""
        url = urllib3.util.parse_url(self._api_client.configuration.host)
        found = [(url.host or "", url.port or (443 if url.scheme == "https" else 80))]
        service_host = os.environ.get("KUBERNETES_SERVICE_HOST")
        service_port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if service_host and service_port.isdigit():
            found.append((service_host, int(service_port)))
        return tuple((host.strip("[]"), port) for host, port in found if host)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._reviews.shutdown(wait=False)
        self._api_client.close()
