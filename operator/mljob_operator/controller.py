"""One MLJob's reconcile loop: observe → lifecycle.decide → act → write status → repeat.

The operator is the only writer of `status`, so the controller keeps the status it last
wrote as the truth and reads the live body only for spec, annotations and deletion; it
never acts twice on a status the watch has not delivered yet. Status is replaced whole
(JSON patch `add /status`), so no stale key of an earlier close survives a merge.
Engine failures are retried with backoff a bounded number of times, then the job fails.
A datafeed runs beside this loop as its own task (`feeds.JobFeed`), started and stopped
as the lifecycle says; its progress is part of what the loop observes and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from mljob_operator import lifecycle
from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseStep,
    ConditionStatus,
    ConditionType,
    DataCounts,
    DesiredState,
    JobState,
    MLJobSpec,
    MLJobStatus,
    ModelSizeStats,
    Reason,
)
from mljob_operator.conditions import Verdict, with_state_conditions
from mljob_operator.faults import FaultInjector
from mljob_operator.feeds import JobFeed
from mljob_operator.kube import JobGone, KubeClient, KubeError
from mljob_operator.lifecycle import Action, Decision, Observation
from mljob_operator.runtime import InvalidSpecError, JobRuntime
from mljob_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

ENGINE_RETRIES = 3
IDLE_POLL_S = 0.2
FORCE_POLL_S = 0.5
"""How often a running housekeeping step looks for a new force-close value."""
BACKOFF_S = (0.5, 2.0, 5.0)
NORMAL, WARNING = "Normal", "Warning"

EventSink = Callable[[str, str, str], None]
"""(type, reason, message) → posts a Kubernetes Event about this job."""


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class BodyView(Protocol):
    def __call__(self) -> Mapping[str, Any]: ...


def job_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class JobController:
    def __init__(
        self,
        namespace: str,
        name: str,
        runtime: JobRuntime,
        kube: KubeClient,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = utcnow,
        uid: str | None = None,
    ) -> None:
        self.uid = uid
        self.namespace, self.name = namespace, name
        self.id = job_id(namespace, name)
        self.runtime, self.kube, self.settings, self.clock = runtime, kube, settings, clock
        self.faults = FaultInjector(settings.fault_kill_at, settings.fault_fail_at)
        self.status: MLJobStatus | None = None
        self._body: Mapping[str, Any] = {}
        """The live body of the action in progress (kopf keeps it current)."""
        self.gone = False
        """The object vanished without a deletion the finalizer saw (e.g. finalizer removed
        by hand); the registry then forgets this controller."""
        self.fed_by_datafeed = False
        """Whether the spec last seen has a datafeed (the data API then refuses posts)."""
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self._stats_at = 0.0
        self._failures = 0
        self._emit: EventSink | None = None
        self.feed = JobFeed(
            self.id,
            runtime,
            self.faults,
            clock,
            on_change=self.wake.set,
            on_error=self._feed_error,
            max_bytes=settings.max_body_bytes,
        )

    # -- observation ---------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], deleting: bool = False) -> Observation:
        if self.status is None:
            self.status = MLJobStatus.model_validate(body.get("status") or {})
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        spec = MLJobSpec.model_validate(body.get("spec") or {})
        self.fed_by_datafeed = spec.datafeed is not None
        return Observation(
            spec=spec,
            status=self._current(spec),
            generation=meta.get("generation"),
            force_close=annotations.get(FORCE_CLOSE_ANNOTATION) or None,
            engine_loaded=self.runtime.is_loaded(self.id),
            now=self.clock(),
            deleting=deleting or bool(meta.get("deletionTimestamp")),
        )

    # -- loops ---------------------------------------------------------------------

    def _current(self, spec: MLJobSpec) -> MLJobStatus:
        """The status last written, with the datafeed's progress since."""
        assert self.status is not None
        feed = self.feed.status(self.status.datafeed)
        return lifecycle.with_datafeed(self.status, spec, feed)

    def _feed_error(self, message: str) -> None:
        if self._emit is not None:
            self._emit(WARNING, Reason.DATAFEED_ERROR, f"Datafeed: {message}")

    async def run(self, body: BodyView, stopped: Callable[[], bool], emit: EventSink) -> None:
        """The daemon loop: until stopped, act whenever the lifecycle says so."""
        self._emit = emit
        try:
            while not stopped():
                try:
                    acted = await self.step(body(), emit)
                    if not acted:
                        await self.upkeep(body())
                except JobGone:
                    self.gone = True
                    return
                except KubeError as err:
                    log.warning("%s: Kubernetes API error, will retry: %s", self.id, err)
                    await self._sleep_or_wake(BACKOFF_S[-1])
                    continue
                if not acted:
                    await self._idle(body, stopped)
        finally:
            await self.feed.stop()

    async def close_for_deletion(self, body: BodyView, emit: EventSink) -> None:
        """Close the job (honouring force) before its data is removed; a failed job
        cannot be housekept, so deletion closes it forcibly."""
        while True:
            try:
                obs = self.observe(body(), deleting=True)
            except ValidationError:
                async with self.lock:
                    await self.feed.stop()
                    await self.runtime.force_close(self.id)
                return
            if obs.status.state in (JobState.CLOSED, None):
                return
            if obs.status.state == JobState.FAILED:
                async with self.lock:
                    await self.feed.stop()
                    await self.runtime.force_close(self.id)
                    await self._write(lifecycle.force_closed(obs, self._new_id(), "deletion"))
                return
            if not await self.step(body(), emit, deleting=True):
                return

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken by `wake` (data arrived)."""
        woken = False
        with contextlib.suppress(TimeoutError):
            woken = await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        self.wake.clear()
        return woken

    async def _idle(self, body: BodyView, stopped: Callable[[], bool]) -> None:
        """Wait until the object changes (kopf keeps `body` live), data arrives (`wake`),
        stats are due, or the daemon is stopped; polls the in-memory body only."""
        version = body().get("metadata", {}).get("resourceVersion")
        deadline = asyncio.get_running_loop().time() + self.settings.status_interval_s
        while not stopped() and asyncio.get_running_loop().time() < deadline:
            if body().get("metadata", {}).get("resourceVersion") != version:
                return
            if await self._sleep_or_wake(IDLE_POLL_S):
                return

    async def step(self, body: Mapping[str, Any], emit: EventSink, deleting: bool = False) -> bool:
        """Decide and do one action; False when there was nothing to do."""
        async with self.lock:
            try:
                obs = self.observe(body, deleting)
            except ValidationError as err:
                await self.feed.stop()
                return await self._unparseable(body, err, emit)
            await self.feed.sync(obs.spec, lifecycle.datafeed_runs(obs), obs.status.datafeed)
            obs = self.observe(body, deleting)
            decision = lifecycle.decide(obs)
            if decision.action == Action.NOTHING:
                return False
            self._body = body
            try:
                await self._execute(obs, decision, emit)
                self._failures = 0
            except InvalidSpecError as err:
                await self._fail(obs, Reason.INVALID_SPEC, f"Invalid spec: {err}", emit)
            except (KubeError, asyncio.CancelledError):
                raise
            except Exception as err:
                await self._engine_failure(obs, decision, err, emit)
            return True

    async def _unparseable(
        self, body: Mapping[str, Any], err: ValidationError, emit: EventSink
    ) -> bool:
        """A spec the CRD let through but the models reject: Ready=False, no crash loop."""
        status = self.status or MLJobStatus()
        if status.state == JobState.FAILED and status.condition(ConditionType.FAILED):
            cond = status.condition(ConditionType.FAILED)
            if cond is not None and cond.reason == Reason.INVALID_SPEC:
                return False
        message = f"Invalid spec: {_first_error(err)}"
        failed = with_state_conditions(
            status.model_copy(update={"state": JobState.FAILED, "closed": False}),
            DesiredState.OPENED,
            self.clock(),
            body.get("metadata", {}).get("generation"),
            Verdict(ConditionStatus.TRUE, Reason.INVALID_SPEC, message),
        )
        await self.runtime.release(self.id)
        await self._write(failed)
        emit(WARNING, Reason.INVALID_SPEC, message)
        return True

    async def _engine_failure(
        self, obs: Observation, decision: Decision, err: Exception, emit: EventSink
    ) -> None:
        self._failures += 1
        log.exception("%s: %s failed (attempt %d)", self.id, decision.action, self._failures)
        if self._failures <= ENGINE_RETRIES:
            await asyncio.sleep(BACKOFF_S[min(self._failures, len(BACKOFF_S)) - 1])
            return
        reason = (
            Reason.SNAPSHOT_RESTORE_FAILED
            if decision.action in (Action.OPEN, Action.LOAD)
            else Reason.ENGINE_ERROR
        )
        await self._fail(obs, reason, f"{decision.action} failed: {err}", emit)

    async def _fail(self, obs: Observation, reason: str, message: str, emit: EventSink) -> None:
        self._failures = 0
        await self.runtime.release(self.id)
        await self._write(lifecycle.failed(obs, reason, message))
        emit(WARNING, reason, message)

    # -- actions -------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self.clock():%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"

    async def _execute(self, obs: Observation, decision: Decision, emit: EventSink) -> None:
        action = decision.action
        trigger = lifecycle.close_trigger(obs)
        if action == Action.INITIALIZE_CLOSED:
            await self._write(lifecycle.initialize_closed(obs))
        elif action == Action.BEGIN_OPEN:
            await self._write(lifecycle.begin_open(obs))
            emit(NORMAL, Reason.OPENING, "Opening: restoring the model from its latest snapshot.")
        elif action == Action.OPEN:
            restored = await self.runtime.load(self.id, obs.spec, accepting=True)
            self.faults.checkpoint("after:open")
            await self._write(self._with_stats(lifecycle.opened(self._now(obs), restored)))
            detail = f"model restored from snapshot {restored}" if restored else "new model"
            emit(NORMAL, Reason.OPENED, f"Opened ({detail}); the job takes data.")
        elif action == Action.LOAD:
            await self.runtime.load(self.id, obs.spec, accepting=True)
        elif action == Action.BEGIN_CLOSE:
            close_id = self._new_id()
            await self.runtime.load(self.id, obs.spec, accepting=False)
            self.faults.checkpoint("before:beginClose")
            await self.runtime.stop_intake(self.id, close_id)
            self.faults.checkpoint("after:beginClose")
            await self._write(lifecycle.begin_close(self._now(obs), close_id, trigger))
            self.faults.checkpoint("recorded:beginClose")
            if trigger == "datafeed":
                emit(NORMAL, Reason.DATAFEED_ENDED, _feed_ended_message(obs))
            emit(NORMAL, Reason.CLOSING, f"Closing ({close_id}): housekeeping started.")
        elif action == Action.RUN_STEP:
            assert decision.step is not None
            await self._run_step(obs, decision.step, decision, emit)
        elif action == Action.TIME_OUT:
            await self._time_out(obs, emit)
        elif action == Action.FINISH_CLOSE:
            stats = self.runtime.stats(self.id)
            await self.runtime.release(self.id)
            status = self._with_stats(lifecycle.finish_close(obs), stats)
            await self._write(status)
            close = status.last_close
            assert close is not None
            emit(
                NORMAL,
                Reason.CLOSED,
                f"Closed in {close.duration_seconds or 0:.1f}s: flushed "
                f"{close.records_flushed or 0} records, finalised {close.buckets_finalized or 0} "
                f"buckets, snapshot {close.snapshot_id}, pruned {close.snapshots_pruned or 0} "
                f"snapshots.",
            )
        elif action == Action.FORCE_CLOSE:
            stats = self.runtime.stats(self.id)
            await self.runtime.force_close(self.id)
            await self._force_closed(obs, trigger, stats, emit)
        elif action == Action.REFUSE_CLOSE:
            status = lifecycle.refuse_close(obs)
            await self._write(status)
            emit(WARNING, Reason.CLOSE_REFUSED, _closed_message(status))

    def _now(self, obs: Observation) -> Observation:
        return Observation(
            obs.spec,
            self._current(obs.spec),
            obs.generation,
            obs.force_close,
            obs.engine_loaded,
            self.clock(),
            obs.deleting,
        )

    async def _run_step(
        self, obs: Observation, step: CloseStep, decision: Decision, emit: EventSink
    ) -> None:
        close = obs.status.last_close
        assert close is not None
        assert close.close_id is not None
        if not self.runtime.is_loaded(self.id):
            await self.runtime.load(self.id, obs.spec, accepting=False)
            await self.runtime.stop_intake(self.id, close.close_id)
        self.faults.checkpoint(f"before:{step.value}")
        self.faults.maybe_fail(step.value)
        task = asyncio.ensure_future(self._engine_step(close.close_id, step))
        if not await self._await_step(obs, task, decision, emit):
            return
        results = await task
        self.faults.checkpoint(f"after:{step.value}")
        status = lifecycle.step_done(self._now(obs), step, results)
        await self._write(self._with_stats(status))
        self.faults.checkpoint(f"recorded:{step.value}")

    async def _force_closed(
        self,
        obs: Observation,
        trigger: str,
        stats: tuple[dict[str, Any], dict[str, Any]] | None,
        emit: EventSink,
    ) -> None:
        status = self._with_stats(lifecycle.force_closed(obs, self._new_id(), trigger), stats)
        await self._write(status)
        emit(
            WARNING,
            Reason.FORCE_CLOSED,
            f"Force-closed ({FORCE_CLOSE_ANNOTATION}={status.last_handled_force_close}) "
            "without flushing or persisting a snapshot; recent results may be missing.",
        )

    async def _engine_step(self, close_id: str, step: CloseStep) -> dict[str, Any]:
        if self.settings.step_delay_s:
            await asyncio.sleep(self.settings.step_delay_s)
        return await self.runtime.run_step(self.id, close_id, step)

    async def _await_step(
        self,
        obs: Observation,
        task: asyncio.Future[dict[str, Any]],
        decision: Decision,
        emit: EventSink,
    ) -> bool:
        """Wait for a running step, reporting the timeout when it passes; False when a
        new force-close value arrived meanwhile and the job was force-closed instead
        (the step is abandoned to finish on its own)."""
        deadline = decision.close_deadline
        while True:
            done, _ = await asyncio.wait({task}, timeout=FORCE_POLL_S)
            if done:
                return True
            if deadline is not None and self.clock() >= deadline:
                await self._time_out(self._now(obs), emit)
                deadline = None
            live = self.observe(self._body, obs.deleting)
            if lifecycle.pending_force(live) is not None:
                stats = self.runtime.stats(self.id)
                await self.runtime.abandon(self.id, task)
                await self._force_closed(live, lifecycle.close_trigger(live), stats, emit)
                return False

    async def _time_out(self, obs: Observation, emit: EventSink) -> None:
        status = lifecycle.timed_out(obs)
        await self._write(status)
        assert status.last_close is not None
        emit(WARNING, Reason.TIMED_OUT, lifecycle.timeout_message(status.last_close))

    # -- status ----------------------------------------------------------------------

    def _with_stats(
        self,
        status: MLJobStatus,
        stats: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> MLJobStatus:
        stats = stats or self.runtime.stats(self.id)
        if stats is None:
            return status
        counts, sizes = stats
        return status.model_copy(
            update={
                "data_counts": DataCounts.model_validate(counts),
                "model_size_stats": ModelSizeStats.model_validate(sizes),
            }
        )

    async def upkeep(self, body: Mapping[str, Any]) -> None:
        """Rate-limited upkeep of an idle job's status: dataCounts/modelSizeStats while it
        takes data, datafeed progress, conditions and observedGeneration."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._stats_at < self.settings.status_interval_s:
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
                await self._write(status)

    async def _write(self, status: MLJobStatus) -> None:
        await self.kube.replace_status(self.namespace, self.name, status.to_json_dict())
        self.status = status
        self._stats_at = asyncio.get_running_loop().time()


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"spec.{where}: {first.get('msg', 'invalid')}"


def _feed_ended_message(obs: Observation) -> str:
    df = obs.spec.datafeed
    end = df.end.isoformat() if df is not None and df.end is not None else "its end"
    return f"The datafeed reached {end}; closing the job."


def _closed_message(status: MLJobStatus) -> str:
    cond = status.condition(ConditionType.CLOSED)
    return cond.message if cond else "Close refused."
