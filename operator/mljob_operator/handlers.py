"""kopf glue: settings at startup, one daemon per MLJob, the finalizer, the data API.

Handlers only parse, delegate and report; decisions live in `lifecycle`, actions in
`controller`, engine access in `runtime`. kopf's own bookkeeping (finalizer and progress
annotations) is moved under our API group instead of kopf's default domain; its diff-base
annotation is not kept at all (`NoDiffBase`).

In leased mode (several replicas on the PostgreSQL store, `shard_leases`) every replica
runs a daemon per job, but it runs the job's controller only while this replica holds
the job's shard; on losing it the controller stops without writing (its status writes
and store commits are fenced too), and a replica gaining it opens the job from the store
as after a restart. Any replica answers the data API: a call that needs the job's
holder is forwarded there (`http.forward`), and the status of a job held elsewhere is
kept from watch events as for a settled one.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import orjson
import prometheus_client
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mljob_operator import metrics
from mljob_operator.api import FINALIZER, GROUP, PLURAL, VERSION, MLJobStatus
from mljob_operator.controller import JobController, job_id
from mljob_operator.events import MAX_MESSAGE, Event, EventSink
from mljob_operator.http.auth import Authorizer
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.forward import Forwarder
from mljob_operator.http.limits import IngestBudget, SignInFailures, WaiterLimit
from mljob_operator.http.server import ApiLimits, DataApi, start_server
from mljob_operator.http.tls import ReloadingContext, generated_pair
from mljob_operator.kube import JobGone, KubeClient, KubeError
from mljob_operator.lifecycle import settled_closed
from mljob_operator.runtime import JobRuntime
from mljob_operator.settings import OperatorSettings
from mljob_operator.shard_leases import HolderOnlyStatus, Replica, ShardLeases
from mljob_operator.store import Store, open_store
from mljob_operator.store.fencing import FencedPostgresStore, ShardFence
from mljob_operator.watch_slim import install_body_release
from mljob_operator.watch_tolerance import install as tolerate_forbidden_watch

log = logging.getLogger(__name__)

EVENT_POSTERS = 8
"""Kubernetes Events posted at once. kopf's default is no limit: every Event of a storm
would be in flight at once, and take all of kopf's request turns (`kopf_session`, 16)
from its finalizer patches; eight leave at least half of them to the patches."""
EVENT_POSTER_IDLE_S = 0.02
"""A poster leaves its slot this soon after its object has nothing more to post (kopf's
default, a second, would let eight posters post eight Events a second); 0 is not
allowed: kopf's wait for the next Event would then never see one."""
SETTLED_RECHECK_S = 0.02
SHARD_WAIT_S = 10.0
"""How often a daemon of a job whose shard another replica holds looks again, as a
safety net only: gaining a shard wakes it at once."""


@dataclass(frozen=True, slots=True)
class SettledJob:
    """What is kept of a settled closed job (no controller, no daemon): its status as
    compressed compact JSON (about 0.7 KB for a closed job's 2 KB; orjson's own output
    keeps an 8 KB buffer), and the scores the metrics keep showing after a close."""

    status_zjson: bytes
    latest_scores: tuple[float, float] | None = None

    @classmethod
    def of(cls, status: Mapping[str, Any], latest_scores: tuple[float, float] | None) -> SettledJob:
        return cls(zlib.compress(orjson.dumps(status), 1), latest_scores)

    @property
    def status(self) -> MLJobStatus:
        return MLJobStatus.model_validate_json(zlib.decompress(self.status_zjson))


@dataclass
class Registry:
    """Every MLJob this process reconciles, by job id: a controller for each job that has
    something to do, a small record for each settled closed one."""

    runtime: JobRuntime
    kube: KubeClient
    settings: OperatorSettings
    controllers: dict[str, JobController] = field(default_factory=dict)
    settled: dict[str, SettledJob] = field(default_factory=dict)
    http: web.AppRunner | None = None
    metrics_http: web.AppRunner | None = None
    leases: ShardLeases | None = None
    """Leased mode only: the shards this replica holds."""
    fence: ShardFence | None = None
    forwarder: Forwarder | None = None
    uids: dict[str, str] = field(default_factory=dict)
    """The uid of every MLJob seen (leased mode: its shard, so its holder)."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def statuses(self) -> Iterator[tuple[str, str, MLJobStatus]]:
        for controller in list(self.controllers.values()):
            if controller.status is not None:
                yield controller.namespace, controller.name, controller.status
        for key, record in list(self.settled.items()):
            if self.leases is not None and not self.holds(self.uids.get(key)):
                continue  # reported by the replica holding it
            namespace, name = key.split("/", 1)
            yield namespace, name, record.status

    def remember_settled(self, key: str, body: Mapping[str, Any]) -> None:
        """Keep (or refresh) the record of a settled closed job no controller holds."""
        if key in self.controllers:
            return
        scores = self.settled[key].latest_scores if key in self.settled else None
        self.settled[key] = SettledJob.of(body.get("status") or {}, scores)

    async def settle(self, controller: JobController) -> None:
        """Replace the controller of a job that settled closed by its small record."""
        if controller.running or self.controllers.get(controller.id) is not controller:
            return
        status = controller.status
        if status is None:
            return
        self.controllers.pop(controller.id, None)
        self.settled[controller.id] = SettledJob.of(status.to_json_dict(), controller.latest_scores)
        await self.runtime.release(controller.id)

    async def controller(self, namespace: str, name: str, uid: str | None) -> JobController:
        """The controller of this object; a new object under an old name (another uid)
        gets a new one, never the old job's status."""
        key = job_id(namespace, name)
        current = self.controllers.get(key)
        if current is not None and uid is not None and current.uid not in (None, uid):
            await self.forget(key)
            current = None
        if current is None:
            status_client: KubeClient | HolderOnlyStatus = self.kube
            if self.leases is not None and uid is not None:
                status_client = HolderOnlyStatus(self.kube, lambda: self.holds(uid))
                if self.fence is not None:
                    self.fence.assign(key, self.leases.shard(uid))
            current = JobController(
                namespace, name, self.runtime, status_client, self.settings, uid=uid
            )
            record = self.settled.pop(key, None)
            if record is not None:
                current.latest_scores = record.latest_scores
            self.controllers[key] = current
        return current

    def holds(self, uid: str | None) -> bool:
        """Whether this replica runs the job of this uid (always, unless leased)."""
        return self.leases is None or self.leases.holds(uid)

    async def shards_changed(self, timeout_s: float) -> None:
        if self.leases is not None:
            await self.leases.changed(timeout_s)
        else:
            await asyncio.sleep(timeout_s)

    async def drop(self, key: str) -> None:
        """The job's shard was lost: forget its controller and in-memory engine without
        writing anything (the new holder reopens it from the store); its status is kept
        as watch events bring it."""
        controller = self.controllers.pop(key, None)
        if controller is not None and controller.status is not None:
            self.settled[key] = SettledJob.of(
                controller.status.to_json_dict(), controller.latest_scores
            )
        await self.runtime.release(key)

    def held_here(self, namespace: str, name: str) -> bool:
        """Whether this replica answers for the job: it holds it, or no MLJob of that
        name was seen (the data API then answers 404 itself)."""
        uid = self.uids.get(job_id(namespace, name))
        return uid is None or self.holds(uid)

    def holder_of(self, namespace: str, name: str) -> str | None:
        """The address of the other replica holding this job (None: nobody right now)."""
        uid = self.uids.get(job_id(namespace, name))
        if self.leases is None or uid is None:
            return None
        return self.leases.holder_address(uid)

    def deleted(self, key: str) -> None:
        """The MLJob is gone from the apiserver: drop what was kept of it (a replica not
        holding it keeps a record of every job seen; its controller, if any, ends with its
        daemon)."""
        self.uids.pop(key, None)
        if key not in self.controllers:
            self.settled.pop(key, None)
        if self.fence is not None:
            self.fence.forget(key)

    async def forget(self, key: str) -> None:
        """Drop a controller and its in-memory engine (the store keeps the job's data)."""
        self.controllers.pop(key, None)
        self.settled.pop(key, None)
        await self.runtime.release(key)

    def exists(self, namespace: str, name: str) -> bool:
        """Known to a daemon, or to the store (right after a restart, before kopf has
        resumed every daemon)."""
        key = job_id(namespace, name)
        return key in self.controllers or key in self.settled or self.runtime.known(key)

    def _held(self, namespace: str, name: str) -> JobController | SettledJob | None:
        """The job's controller, or the record of it settled closed."""
        key = job_id(namespace, name)
        return self.controllers.get(key) or self.settled.get(key)

    def _status(self, namespace: str, name: str) -> MLJobStatus | None:
        held = self._held(namespace, name)
        return None if held is None else held.status

    def state(self, namespace: str, name: str) -> str | None:
        status = self._status(namespace, name)
        return status.state.value if status is not None and status.state is not None else None

    def fed_by_datafeed(self, namespace: str, name: str) -> bool:
        controller = self.controllers.get(job_id(namespace, name))
        return controller is not None and controller.fed_by_datafeed

    def status_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        status = self._status(namespace, name)
        return None if status is None else status.to_json_dict()

    async def status_changed(self, namespace: str, name: str, timeout_s: float) -> None:
        """Wait for the held status to change; a settled job's record (refreshed by watch
        events, no controller to signal) is looked at again after a short pause."""
        controller = self.controllers.get(job_id(namespace, name))
        if controller is not None:
            await controller.writer.changed(timeout_s)
        else:
            await asyncio.sleep(min(timeout_s, SETTLED_RECHECK_S))

    def latest_scores(self, namespace: str, name: str) -> tuple[float, float] | None:
        held = self._held(namespace, name)
        return None if held is None else held.latest_scores

    def wake(self, key: str) -> None:
        """Tell the job's controller something changed (data, a revert). A settled job has
        none: one is made for a single upkeep (a revert's new model snapshot id reaches
        status), then settled again."""
        controller = self.controllers.get(key)
        if controller is not None:
            controller.wake.set()
        elif key in self.settled:
            task = asyncio.get_running_loop().create_task(self._upkeep_settled(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _upkeep_settled(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        try:
            body = await self.kube.get_job(namespace, name)
            if not self.holds(body["metadata"].get("uid")):
                return
            controller = await self.controller(namespace, name, body["metadata"].get("uid"))
            await controller.upkeep(body)
            await self.settle(controller)
        except KubeError as err:
            log.warning("%s: status not refreshed: %s", key, err)


def _quiet_wakes(record: logging.LogRecord) -> bool:
    """kopf logs every event handler's success; `changed` runs on every watch event."""
    return "Handler 'changed' succeeded" not in record.getMessage()


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's create/update diffing stores the last handled spec in an annotation, one more
    write per spec change (so per close). Nothing here uses it: there are no on.create or
    on.update handlers, the daemon reads the live body itself, and deletion is told by
    deletionTimestamp."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        """Nothing: kopf's own deep-copies the whole body on every event, for a diff
        that nothing reads."""
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def metrics_app() -> web.Application:
    """Prometheus's text format at /metrics, plain HTTP, no token (no job data beyond
    names and counts)."""

    async def serve(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


def _emitter(body: kopf.Body) -> EventSink:
    def emit(event: Event) -> None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:MAX_MESSAGE])

    return emit


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.posting.worker_limit = EVENT_POSTERS
    settings.posting.idle_timeout = EVENT_POSTER_IDLE_S
    logging.getLogger("kopf.objects").addFilter(_quiet_wakes)
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.watching.server_timeout = 300
    settings.background.cancellation_polling = 1
    settings.background.instant_exit_timeout = 1.0
    settings.scanning.disabled = True  # no namespace/CRD watching: least privilege
    tolerate_forbidden_watch()
    install_body_release()
    op = OperatorSettings.from_env()
    kube = KubeClient()
    op = op.with_datafeed_policy(kube.endpoints())
    fence = ShardFence() if op.leased else None
    store: Store
    if fence is not None and op.store_url is not None:
        store = FencedPostgresStore(
            op.store_url, fence, idle_in_transaction_s=max(5.0, op.lease_duration_s)
        )
    else:
        store = open_store(op.data_dir, op.store_url)
    runtime = JobRuntime(store)
    registry = Registry(runtime=runtime, kube=kube, settings=op, fence=fence)
    if isinstance(store, FencedPostgresStore) and fence is not None:
        registry.leases = _shard_leases(op, kube, store, fence)
        registry.leases.start()

    served = None
    if op.tls_enabled:
        cert, key = op.tls_cert, op.tls_key
        if cert is None or key is None:
            cert, key = generated_pair(op.data_dir / "tls", op.tls_names)
        served = ReloadingContext(cert, key)
    if registry.leases is not None:
        peers = None if served is None else Forwarder.peer_context(str(served.cert))
        registry.forwarder = Forwarder(registry, op.replica_id, peers, served=served)
    api = DataApi(
        registry.runtime,
        Authorizer(registry.kube, sign_in_failures=SignInFailures(op.sign_in_failures_per_minute)),
        StateRequests(registry.kube, statuses=registry),
        registry,
        op.max_body_bytes,
        ApiLimits(IngestBudget(op.ingest_budget_bytes), WaiterLimit(op.waiters_per_user)),
        forwarder=registry.forwarder,
    )
    listener = None if served is None else served.listener
    registry.http = await start_server(api.app(), op.http_host, op.http_port, listener)
    if op.metrics_addr is not None:
        metrics.watch_jobs(
            registry.statuses,
            registry.latest_scores,
            lambda: api.limits.ingest.in_flight,
            lambda: len(registry.controllers),
        )
        host, port = op.metrics_addr
        registry.metrics_http = await start_server(metrics_app(), host, port, what="metrics")
    memo["registry"] = registry


async def take_epoch(store: FencedPostgresStore, shard: int, holder: str, timeout_s: float) -> int:
    """Take the shard's fencing epoch for `holder`: read it, then bump it only if it is
    still the one read (two calls, so a bump whose wait was cut off cannot land after
    another replica's take), and hold it only if this coroutine saw the bump through."""
    seen = await asyncio.to_thread(store.shard_epoch, shard, timeout_s)
    epoch = await asyncio.to_thread(store.take_shard, shard, holder, timeout_s, seen)
    store.fence.hold(shard, epoch)
    return epoch


def _shard_leases(
    op: OperatorSettings, kube: KubeClient, store: FencedPostgresStore, fence: ShardFence
) -> ShardLeases:
    async def take(shard: int, timeout_s: float) -> int:
        return await take_epoch(store, shard, op.replica_id, timeout_s)

    replica = Replica(
        op.namespace, op.replica_id, op.shards, op.advertise_addr, op.lease_duration_s
    )
    return ShardLeases(kube, replica, take_epoch=take, on_lost=fence.drop)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    registry: Registry | None = memo.get("registry")
    if registry is None:
        return
    if registry.leases is not None:
        await registry.leases.stop()
    if registry.forwarder is not None:
        await registry.forwarder.close()
    for server in (registry.http, registry.metrics_http):
        if server is not None:
            await server.cleanup()
    for key in list(registry.controllers):
        await registry.runtime.release(key)
    registry.runtime.close()
    registry.kube.close()


def _has_work(body: kopf.Body, **_: Any) -> bool:
    return not settled_closed(body)


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=None, when=_has_work)
async def reconcile(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    registry: Registry = memo["registry"]
    uid = body.metadata.uid

    def live_body() -> Mapping[str, Any]:
        return body

    def stop_running() -> bool:
        return bool(stopped) or not registry.holds(uid)

    while not stopped:
        if not registry.holds(uid):  # until this replica gains the shard, or kopf stops us
            await _first(registry.shards_changed(SHARD_WAIT_S), stopped.wait(SHARD_WAIT_S))
            continue
        controller = await registry.controller(namespace or "", name, uid)
        await controller.run(live_body, stop_running, _emitter(body))
        if not registry.holds(uid):  # also when kopf stops the daemon meanwhile
            log.info("%s: shard lost; stopped here, another replica takes the job", controller.id)
            await registry.drop(controller.id)
            continue
        if controller.gone:
            await registry.forget(controller.id)
        elif settled_closed(body):
            await registry.settle(controller)
        return


@kopf.on.event(GROUP, VERSION, PLURAL)
async def changed(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: Any,
    event: Mapping[str, Any],
    **_: Any,
) -> None:
    """Every watch event wakes the job's controller at once (kopf has already put the new
    body in the daemon's view): no polling between a change and the reaction to it. A
    settled closed job (listed at start, or just settled) has its record refreshed; a
    deleted one's is dropped."""
    registry: Registry | None = memo.get("registry")
    if registry is None or not name:
        return
    key = job_id(namespace or "", name)
    if event.get("type") == "DELETED":
        registry.deleted(key)
        return
    if registry.leases is not None and body.metadata.uid:
        registry.uids[key] = body.metadata.uid
        if registry.fence is not None:  # its store writes (a settled job's too) are fenced
            registry.fence.assign(key, registry.leases.shard(body.metadata.uid))
    if not registry.holds(body.metadata.uid) and key not in registry.controllers:
        registry.remember_settled(key, body)  # held by another replica: its status only
    elif not settled_closed(body):
        registry.wake(key)
    elif key in registry.controllers:
        registry.controllers[key].wake.set()  # its daemon is being stopped: notice at once
    else:
        registry.remember_settled(key, body)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    registry: Registry = memo["registry"]
    while not registry.holds(body.metadata.uid):
        try:  # the holder closes it and removes the finalizer; return only once it did
            await registry.kube.get_job(namespace or "", name)
        except JobGone:
            return
        await registry.shards_changed(SHARD_WAIT_S)
    controller = await registry.controller(namespace or "", name, body.metadata.uid)

    def live_body() -> Mapping[str, Any]:
        return body

    await controller.close_for_deletion(live_body, _emitter(body))
    await registry.runtime.delete_data(controller.id)
    registry.controllers.pop(controller.id, None)
    registry.uids.pop(controller.id, None)
