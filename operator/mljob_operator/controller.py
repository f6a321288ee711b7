"""One MLJob's reconcile loop: observe → lifecycle.decide → act → write status → repeat.

`lifecycle` decides (pure); this module does what it decided, one method per action
(`self._actions`), and writes the next status through `JobStatusWriter`, which holds the
status last written as the truth. Engine failures are retried with backoff a bounded
number of times (`EngineRetries`), then the job fails. A datafeed runs beside this loop
as its own task (`DatafeedSupervisor`), started and stopped as the lifecycle says; its progress is
part of what the loop observes and writes. Event texts live in `events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mljob_operator import events, lifecycle, metrics
from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseStep,
    JobState,
    MLJobSpec,
    MLJobStatus,
    Reason,
)
from mljob_operator.datafeed import SourceAccess
from mljob_operator.datafeed_supervisor import DatafeedSupervisor, key_reader, object_reader
from mljob_operator.events import Event, EventSink
from mljob_operator.faults import FaultInjector
from mljob_operator.job_status import EngineStats, JobStatusWriter, StatusClient, with_stats
from mljob_operator.kube import JobGone, KubeError
from mljob_operator.lifecycle import Action, Decision, Observation
from mljob_operator.retries import DEFAULT_BACKOFF_S, EngineRetries
from mljob_operator.runtime import InvalidSpecError, JobRuntime
from mljob_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

MIN_IDLE_S = 0.01
"""An idle job always yields this long, even with a status interval of 0."""


@dataclass(frozen=True)
class Timings:
    idle_poll_s: float = 1.0
    """How often an idle job looks at its in-memory body for a change it was not woken
    for (watch events wake it at once)."""
    force_poll_s: float = 0.5
    """How often a running housekeeping step looks for a new force-close value."""
    engine_backoff_s: tuple[float, ...] = DEFAULT_BACKOFF_S
    """The waits before retrying a failed engine action; then the job fails."""
    kube_backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    """The waits before retrying after a Kubernetes API error (the last repeats for as
    long as the apiserver fails). Data arriving does not cut them short: while the
    apiserver is down, every post would otherwise start one more failing request."""


BodyView = Callable[[], Mapping[str, Any]]
"""The live object (kopf keeps it current)."""


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def job_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _ignore(_: Event) -> None:
    return None


class JobController:
    def __init__(
        self,
        namespace: str,
        name: str,
        runtime: JobRuntime,
        kube: StatusClient,
        settings: OperatorSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        uid: str | None = None,
        timings: Timings = Timings(),
    ) -> None:
        self.uid = uid
        self.namespace, self.name = namespace, name
        self.id = job_id(namespace, name)
        self.runtime, self.settings, self.clock = runtime, settings, clock
        self.faults = FaultInjector(settings.fault_kill_at, settings.fault_fail_at)
        self.writer = JobStatusWriter(namespace, name, kube, settings.status_interval_s)
        self.retries = EngineRetries(timings.engine_backoff_s)
        self.timings = timings
        self.gone = False
        """The object vanished without a deletion the finalizer saw (e.g. finalizer removed
        by hand); the registry then forgets this controller."""
        self.fed_by_datafeed = False
        """Whether the spec last seen has a datafeed (the data API then refuses posts)."""
        self.latest_scores: tuple[float, float] | None = None
        """(anomaly score, highest record score) of the newest final bucket, kept after a
        close for monitoring."""
        self.running = False
        """True while a daemon runs this controller's loop."""
        self._spec: tuple[int | None, MLJobSpec] | None = None
        self._upkept: tuple[Any, ...] | None = None
        """What the last upkeep saw (object version, engine changes): while they stay the
        same an idle job's status cannot change, so its upkeep does nothing."""
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.emit: EventSink = _ignore
        self._body: BodyView = lambda: {}
        # a client that can also read Secrets/ConfigMaps serves the datafeed's credentials
        # (this job's namespace only); without one such a feed fails CredentialsNotFound
        objects = object_reader(kube)
        self.datafeed = DatafeedSupervisor(
            self.id,
            runtime,
            self.faults,
            clock=clock,
            on_change=self.wake.set,
            on_error=lambda reason, message: self.emit(events.datafeed_error(message, reason)),
            access=SourceAccess(
                settings.max_body_bytes,
                settings.datafeed_policy,
                key_reader(objects, namespace) if objects is not None else None,
            ),
        )
        self._actions: dict[Action, Callable[[Observation, Decision], Awaitable[None]]] = {
            Action.INITIALIZE_CLOSED: self._initialize_closed,
            Action.BEGIN_OPEN: self._begin_open,
            Action.OPEN: self._open,
            Action.LOAD: self._load,
            Action.BEGIN_CLOSE: self._begin_close,
            Action.RUN_STEP: self._run_step,
            Action.TIME_OUT: self._time_out,
            Action.FINISH_CLOSE: self._finish_close,
            Action.FORCE_CLOSE: self._force_close,
            Action.REFUSE_CLOSE: self._refuse_close,
            Action.IGNORE_FORCE: self._ignore_force,
        }

    @property
    def status(self) -> MLJobStatus | None:
        return self.writer.current

    # -- observation ---------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], deleting: bool = False) -> Observation:
        """Raises ValidationError for a spec the models reject."""
        recorded = self.writer.adopt(body)
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        spec = self._spec_of(body, meta.get("generation"))
        self.fed_by_datafeed = spec.datafeed is not None
        return Observation(
            spec=spec,
            status=self._with_feed(recorded, spec),
            generation=meta.get("generation"),
            force_close=annotations.get(FORCE_CLOSE_ANNOTATION) or None,
            engine_loaded=self.runtime.is_loaded(self.id),
            now=self.clock(),
            deleting=deleting or bool(meta.get("deletionTimestamp")),
        )

    def _spec_of(self, body: Mapping[str, Any], generation: int | None) -> MLJobSpec:
        """The spec, parsed once per generation (the apiserver moves it on every change of
        the spec, and a close observes the object a dozen times)."""
        if generation is not None and self._spec is not None and self._spec[0] == generation:
            return self._spec[1]
        spec = MLJobSpec.model_validate(body.get("spec") or {})
        self._spec = (generation, spec)
        return spec

    def _with_feed(self, status: MLJobStatus, spec: MLJobSpec) -> MLJobStatus:
        """The status last written, with the datafeed's progress since."""
        return lifecycle.with_datafeed(status, spec, self.datafeed.status(status.datafeed))

    def _now(self, obs: Observation) -> Observation:
        """`obs` at the current time, with the status as last written."""
        assert self.status is not None
        return Observation(
            obs.spec,
            self._with_feed(self.status, obs.spec),
            obs.generation,
            obs.force_close,
            obs.engine_loaded,
            self.clock(),
            obs.deleting,
        )

    # -- loops ---------------------------------------------------------------------

    async def run(self, body: BodyView, stopped: Callable[[], bool], emit: EventSink) -> None:
        """The daemon loop: until stopped, act whenever the lifecycle says so."""
        self.emit = emit
        self.running = True
        kube_failures = 0
        try:
            while not stopped():
                try:
                    acted = await self.step(body)
                    if not acted:
                        await self.upkeep(body())
                except JobGone:
                    self.gone = True
                    return
                except KubeError as err:
                    backoff = self.timings.kube_backoff_s
                    delay = backoff[min(kube_failures, len(backoff) - 1)]
                    kube_failures += 1
                    log.warning(
                        "%s: Kubernetes API error, will retry in %.1fs: %s", self.id, delay, err
                    )
                    await asyncio.sleep(delay)
                    continue
                kube_failures = 0
                if not acted:
                    await self._idle(body, stopped)
        finally:
            self.running = False
            self.writer.close()
            await self.datafeed.stop()

    async def close_for_deletion(self, body: BodyView, emit: EventSink) -> None:
        """Close the job (honouring force) before its data is removed; a failed job
        cannot be housekept, so deletion closes it forcibly."""
        self.emit = emit
        while True:
            try:
                obs = self.observe(body(), deleting=True)
            except ValidationError:
                async with self.lock:
                    await self.datafeed.stop()
                    await self.runtime.force_close(self.id)
                return
            if obs.status.state in (JobState.CLOSED, None):
                return
            if obs.status.state == JobState.FAILED:
                async with self.lock:
                    await self.datafeed.stop()
                    await self.runtime.force_close(self.id)
                    await self.writer.write(lifecycle.force_closed(obs, self._new_id(), "deletion"))
                return
            if not await self.step(body, deleting=True):
                return

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken by `wake` (data arrived)."""
        woken = False
        with contextlib.suppress(TimeoutError):
            woken = await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        self.wake.clear()
        return woken

    async def _idle(self, body: BodyView, stopped: Callable[[], bool]) -> None:
        """Wait until woken (a watch event on the object, data, a revert), stats are due,
        or the daemon is stopped. A change of the live body is also looked for every
        `idle_poll_s`, as a safety net only: the watch event is what wakes a reaction."""
        loop = asyncio.get_running_loop()
        version = body().get("metadata", {}).get("resourceVersion")
        deadline = loop.time() + self.settings.status_interval_s
        while not stopped():
            wait_s = max(MIN_IDLE_S, min(self.timings.idle_poll_s, deadline - loop.time()))
            if await self._sleep_or_wake(wait_s) or loop.time() >= deadline:
                return
            if body().get("metadata", {}).get("resourceVersion") != version:
                return

    async def step(self, body: BodyView, deleting: bool = False) -> bool:
        """Decide and do one action; False when there was nothing to do."""
        async with self.lock:
            try:
                obs = self.observe(body(), deleting)
            except ValidationError as err:
                await self.datafeed.stop()
                return await self._unparseable(body(), err)
            await self.datafeed.sync(obs.spec, lifecycle.datafeed_runs(obs), obs.status.datafeed)
            obs = self.observe(body(), deleting)
            self.runtime.apply_live_spec(self.id, obs.spec)
            decision = lifecycle.decide(obs)
            if decision.action == Action.NOTHING:
                return False
            self._body = body
            try:
                await self._actions[decision.action](obs, decision)
                self.retries.succeeded()
            except InvalidSpecError as err:
                await self._fail(obs, Reason.INVALID_SPEC, f"Invalid spec: {err}")
            except (KubeError, asyncio.CancelledError):
                raise
            except Exception as err:
                await self._engine_failure(obs, decision, err)
            return True

    async def upkeep(self, body: Mapping[str, Any]) -> None:
        """Rate-limited upkeep of an idle job's status: dataCounts/modelSizeStats while it
        takes data, datafeed progress, conditions and observedGeneration."""
        if not self.writer.refresh_due:
            return
        version = body.get("metadata", {}).get("resourceVersion")
        seen = (version, self.runtime.changes(self.id))
        if (
            version is not None
            and seen == self._upkept
            and not self.fed_by_datafeed
            and not self.runtime.reverted(self.id)
        ):
            return
        async with self.lock:
            try:
                obs = self.observe(body)
            except ValidationError:
                return
            status = self._with_stats(lifecycle.refreshed(obs))
            reverted = self.runtime.take_reverted(self.id)
            if reverted is not None:
                status = status.model_copy(update={"model_snapshot_id": reverted})
            if status != self.status:
                await self.writer.write(status)
            self._upkept = seen

    # -- failures --------------------------------------------------------------------

    async def _unparseable(self, body: Mapping[str, Any], err: ValidationError) -> bool:
        """A spec the CRD let through but the models reject: Ready=False, no crash loop."""
        message = f"Invalid spec: {_first_error(err)}"
        failed = lifecycle.invalid_spec(
            self.writer.adopt(body),
            self.clock(),
            body.get("metadata", {}).get("generation"),
            message,
        )
        if failed is None:
            return False
        await self.runtime.release(self.id)
        await self.writer.write(failed)
        self.emit(events.failed(Reason.INVALID_SPEC, message))
        return True

    async def _engine_failure(self, obs: Observation, decision: Decision, err: Exception) -> None:
        metrics.ENGINE_ERRORS.labels(decision.action.value).inc()
        attempt = self.retries.failures + 1
        log.exception("%s: %s failed (attempt %d)", self.id, decision.action, attempt)
        delay = self.retries.failed()
        if delay is not None:
            await asyncio.sleep(delay)
            return
        reason = (
            Reason.SNAPSHOT_RESTORE_FAILED
            if decision.action in (Action.OPEN, Action.LOAD)
            else Reason.ENGINE_ERROR
        )
        await self._fail(obs, reason, f"{decision.action} failed: {err}")

    async def _fail(self, obs: Observation, reason: str, message: str) -> None:
        self.retries.succeeded()
        await self.runtime.release(self.id)
        await self.writer.write(lifecycle.failed(obs, reason, message))
        self.emit(events.failed(reason, message))

    # -- actions (one per lifecycle.Action) -------------------------------------------

    def _new_id(self) -> str:
        return f"{self.clock():%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"

    def _with_stats(self, status: MLJobStatus, stats: EngineStats | None = None) -> MLJobStatus:
        self.latest_scores = self.runtime.latest_scores(self.id) or self.latest_scores
        return with_stats(status, stats or self.runtime.stats(self.id))

    async def _initialize_closed(self, obs: Observation, _: Decision) -> None:
        await self.writer.write(lifecycle.initialize_closed(obs))

    async def _begin_open(self, obs: Observation, _: Decision) -> None:
        self.writer.stage(lifecycle.begin_open(obs), lambda: self.emit(events.opening()))

    async def _open(self, obs: Observation, _: Decision) -> None:
        restored = await self.runtime.load(self.id, obs.spec, accepting=True, uid=self.uid)
        self.faults.checkpoint("after:open")
        await self.writer.write(self._with_stats(lifecycle.opened(self._now(obs), restored)))
        self.emit(events.opened(restored))

    async def _load(self, obs: Observation, _: Decision) -> None:
        await self.runtime.load(self.id, obs.spec, accepting=True, uid=self.uid)

    async def _begin_close(self, obs: Observation, _: Decision) -> None:
        trigger = lifecycle.close_trigger(obs)
        close_id = self._new_id()
        await self.runtime.load(self.id, obs.spec, accepting=False, uid=self.uid)
        self.faults.checkpoint("before:beginClose")
        await self.runtime.stop_intake(self.id, close_id)
        self.faults.checkpoint("after:beginClose")
        await self.writer.write(
            lifecycle.begin_close(self._now(obs), close_id, trigger),
            announce_if_slow=lambda: self.emit(events.closing(close_id)),
        )
        self.faults.checkpoint("recorded:beginClose")
        if trigger == "datafeed":
            self.emit(events.datafeed_ended(obs.spec))

    async def _run_step(self, obs: Observation, decision: Decision) -> None:
        step = decision.step
        close = obs.status.last_close
        assert step is not None
        assert close is not None
        assert close.close_id is not None
        if not self.runtime.is_loaded(self.id):
            await self.runtime.load(self.id, obs.spec, accepting=False, uid=self.uid)
            await self.runtime.stop_intake(self.id, close.close_id)
        self.faults.checkpoint(f"before:{step.value}")
        self.faults.maybe_fail(step.value)
        started = time.monotonic()
        task = asyncio.ensure_future(self._engine_step(close.close_id, step))
        if not await self._await_step(obs, task, decision.close_deadline):
            return
        results = await task
        metrics.STEP_SECONDS.labels(step.value).observe(time.monotonic() - started)
        self.faults.checkpoint(f"after:{step.value}")
        status = lifecycle.step_done(self._now(obs), step, results)
        self.writer.stage(self._with_stats(status))
        self.faults.checkpoint(f"recorded:{step.value}")

    async def _engine_step(self, close_id: str, step: CloseStep) -> dict[str, Any]:
        if self.settings.step_delay_s:
            await asyncio.sleep(self.settings.step_delay_s)
        return await self.runtime.run_step(self.id, close_id, step)

    async def _await_step(
        self, obs: Observation, task: asyncio.Future[dict[str, Any]], deadline: datetime | None
    ) -> bool:
        """Wait for a running step, reporting the timeout when it passes (a watch event
        wakes it at once; `force_poll_s` is the safety net); False when a new force-close
        value arrived meanwhile and the job was force-closed instead
        (the step is abandoned to finish on its own)."""
        while True:
            woken: asyncio.Future[Any] = asyncio.ensure_future(self.wake.wait())
            waiting: set[asyncio.Future[Any]] = {task, woken}
            done, _ = await asyncio.wait(
                waiting, timeout=self.timings.force_poll_s, return_when=FIRST_COMPLETED
            )
            woken.cancel()
            self.wake.clear()
            if task in done:
                return True
            if deadline is not None and self.clock() >= deadline:
                await self._time_out(self._now(obs), Decision(Action.TIME_OUT))
                deadline = None
            live = self.observe(self._body(), obs.deleting)
            if lifecycle.pending_force(live) is not None:
                stats = self.runtime.stats(self.id)
                await self.runtime.abandon(self.id, task)
                await self._write_force_closed(live, stats)
                return False

    async def _time_out(self, obs: Observation, _: Decision) -> None:
        status = lifecycle.timed_out(obs)
        await self.writer.write(status)
        metrics.CLOSES.labels("timed_out").inc()
        assert status.last_close is not None
        self.emit(events.timed_out(lifecycle.timeout_message(status.last_close)))

    async def _finish_close(self, obs: Observation, _: Decision) -> None:
        stats = self.runtime.stats(self.id)
        await self.runtime.release(self.id)
        status = self._with_stats(lifecycle.finish_close(obs), stats)
        await self.writer.write(status)
        assert status.last_close is not None
        metrics.CLOSES.labels("closed").inc()
        metrics.CLOSE_SECONDS.observe(status.last_close.duration_seconds or 0.0)
        self.emit(events.closed(status.last_close))

    async def _force_close(self, obs: Observation, _: Decision) -> None:
        stats = self.runtime.stats(self.id)
        await self.runtime.force_close(self.id)
        await self._write_force_closed(obs, stats)

    async def _write_force_closed(self, obs: Observation, stats: EngineStats | None) -> None:
        trigger = lifecycle.close_trigger(obs)
        status = self._with_stats(lifecycle.force_closed(obs, self._new_id(), trigger), stats)
        await self.writer.write(status)
        metrics.CLOSES.labels("forced").inc()
        self.emit(events.force_closed(status.last_handled_force_close))

    async def _ignore_force(self, obs: Observation, _: Decision) -> None:
        value = lifecycle.pending_force(obs)
        await self.writer.write(lifecycle.force_ignored(obs))
        self.emit(events.force_ignored(value, obs.status.state))

    async def _refuse_close(self, obs: Observation, _: Decision) -> None:
        status = lifecycle.refuse_close(obs)
        await self.writer.write(status)
        metrics.CLOSES.labels("refused").inc()
        self.emit(events.close_refused(status))


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"spec.{where}: {first.get('msg', 'invalid')}"
