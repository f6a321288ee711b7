"""The job lifecycle as pure decisions: (spec, status, force annotation, clock) → next action.

Nothing here does I/O or knows Kubernetes. The controller asks `decide()` what to do,
does it (engine calls, status patches), applies the matching transition function below
to get the next status, and asks again. Because every housekeeping step is recorded in
`status.lastClose.steps` before the next one starts, an operator killed at any point
resumes exactly where it stopped: a step is redone only if it was not recorded, and the
engine makes each step idempotent (keyed by the close id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseRecord,
    CloseStep,
    ConditionType,
    DatafeedStatus,
    DesiredState,
    JobState,
    MLJobSpec,
    MLJobStatus,
    OpenRecord,
    Reason,
    parse_duration,
)
from mljob_operator.conditions import TRUE, Verdict, close_refused, with_state_conditions

CLOSE_STEPS: tuple[CloseStep, ...] = (
    CloseStep.FLUSH,
    CloseStep.FINALIZE_RESULTS,
    CloseStep.PERSIST_SNAPSHOT,
    CloseStep.PRUNE_HISTORY,
)


class Action(StrEnum):
    NOTHING = "nothing"
    INITIALIZE_CLOSED = "initializeClosed"
    """A job created with spec.state closed: it was never open, so it is closed at once."""
    BEGIN_OPEN = "beginOpen"
    OPEN = "open"
    """Open the engine (restore the latest snapshot, replay data after it) → opened."""
    LOAD = "load"
    """The status says opened but this process has no engine for it (after a restart)."""
    BEGIN_CLOSE = "beginClose"
    RUN_STEP = "runStep"
    TIME_OUT = "timeOut"
    FINISH_CLOSE = "finishClose"
    FORCE_CLOSE = "forceClose"
    REFUSE_CLOSE = "refuseClose"
    IGNORE_FORCE = "ignoreForce"
    """A force-close value first seen while the job is closed (or new) forces nothing:
    it is recorded as handled, so it cannot force a close weeks later."""


@dataclass(frozen=True)
class Observation:
    spec: MLJobSpec
    status: MLJobStatus
    generation: int | None
    force_close: str | None
    """The force-close annotation's value (None when absent or empty)."""
    engine_loaded: bool
    now: datetime
    deleting: bool = False


@dataclass(frozen=True)
class Decision:
    action: Action
    step: CloseStep | None = None
    close_deadline: datetime | None = None
    """While closing: when `closeTimeout` runs out (None once it has been reported)."""


def desired_state(obs: Observation) -> DesiredState:
    """Closed when asked by spec.state, by deletion, or by a datafeed that reached its end
    (the operator never edits the spec: a later end makes the job want to be open again)."""
    if obs.deleting or datafeed_ended(obs.spec, obs.status.datafeed):
        return DesiredState.CLOSED
    return obs.spec.state


def datafeed_ended(spec: MLJobSpec, feed: DatafeedStatus | None) -> bool:
    df = spec.datafeed
    if df is None or df.end is None or feed is None or feed.searched_until is None:
        return False
    end = df.end if df.end.tzinfo is not None else df.end.replace(tzinfo=UTC)
    return feed.searched_until >= int(end.timestamp() * 1000)


def close_trigger(obs: Observation) -> str:
    """What a close starting now was asked by (`status.lastClose.trigger`)."""
    if obs.deleting:
        return "deletion"
    if obs.spec.state == DesiredState.OPENED and datafeed_ended(obs.spec, obs.status.datafeed):
        return "datafeed"
    return "spec"


def datafeed_runs(obs: Observation) -> bool:
    """A datafeed pulls only into an open job that is meant to stay open."""
    return (
        obs.spec.datafeed is not None
        and obs.status.state == JobState.OPENED
        and desired_state(obs) == DesiredState.OPENED
        and obs.engine_loaded
    )


def with_datafeed(status: MLJobStatus, spec: MLJobSpec, feed: DatafeedStatus | None) -> MLJobStatus:
    """`status` carrying the datafeed's progress, `endReached` derived from the spec's end."""
    if spec.datafeed is None:
        return status if status.datafeed is None else status.model_copy(update={"datafeed": None})
    feed = feed or status.datafeed or DatafeedStatus()
    feed = feed.model_copy(update={"end_reached": datafeed_ended(spec, feed)})
    return status if feed == status.datafeed else status.model_copy(update={"datafeed": feed})


def pending_force(obs: Observation) -> str | None:
    """The force-close value to act on: set, and not the one already handled."""
    value = obs.force_close
    if value and value != obs.status.last_handled_force_close:
        return value
    return None


def close_deadline(spec: MLJobSpec, close: CloseRecord | None) -> datetime | None:
    if close is None or close.started_at is None or close.timed_out:
        return None
    return close.started_at + parse_duration(spec.close_timeout)


def next_step(close: CloseRecord | None) -> CloseStep | None:
    done = close.steps if close else {}
    return next((s for s in CLOSE_STEPS if s.value not in done), None)


def spec_fixed(obs: Observation) -> bool:
    """A job failed for an invalid spec whose spec has changed since: opening is tried
    again. (Closing a failed job still takes force, whatever the failure.)"""
    failed = obs.status.condition(ConditionType.FAILED)
    return (
        failed is not None
        and failed.reason == Reason.INVALID_SPEC
        and (failed.observed_generation or 0) < (obs.generation or 0)
    )


def _decide_new(obs: Observation, want_closed: bool, force: bool) -> Decision:
    if force:
        return Decision(Action.IGNORE_FORCE)
    return Decision(Action.INITIALIZE_CLOSED if want_closed else Action.BEGIN_OPEN)


def _decide_failed(obs: Observation, want_closed: bool, force: bool) -> Decision:
    if not want_closed:
        return Decision(Action.BEGIN_OPEN if spec_fixed(obs) else Action.NOTHING)
    if force:
        return Decision(Action.FORCE_CLOSE)
    refused = obs.status.condition(ConditionType.CLOSED)
    already_refused = (
        refused is not None
        and refused.reason == Reason.CLOSE_REFUSED
        and (refused.observed_generation or 0) >= (obs.generation or 0)
    )
    return Decision(Action.NOTHING if already_refused else Action.REFUSE_CLOSE)


def _decide_opening(obs: Observation, want_closed: bool, force: bool) -> Decision:
    return Decision(Action.FORCE_CLOSE if want_closed and force else Action.OPEN)


def _decide_opened(obs: Observation, want_closed: bool, force: bool) -> Decision:
    if want_closed:
        return Decision(Action.FORCE_CLOSE if force else Action.BEGIN_CLOSE)
    return Decision(Action.NOTHING if obs.engine_loaded else Action.LOAD)


def _decide_closing(obs: Observation, want_closed: bool, force: bool) -> Decision:
    if force:
        return Decision(Action.FORCE_CLOSE)
    deadline = close_deadline(obs.spec, obs.status.last_close)
    if deadline is not None and obs.now >= deadline:
        return Decision(Action.TIME_OUT)
    step = next_step(obs.status.last_close)
    if step is None:
        return Decision(Action.FINISH_CLOSE)
    return Decision(Action.RUN_STEP, step=step, close_deadline=deadline)


def _decide_closed(obs: Observation, want_closed: bool, force: bool) -> Decision:
    if force:
        return Decision(Action.IGNORE_FORCE)
    return Decision(Action.NOTHING if want_closed else Action.BEGIN_OPEN)


_DECIDE_BY_STATE: dict[JobState | None, Callable[[Observation, bool, bool], Decision]] = {
    None: _decide_new,
    JobState.FAILED: _decide_failed,
    JobState.OPENING: _decide_opening,
    JobState.OPENED: _decide_opened,
    JobState.CLOSING: _decide_closing,
    JobState.CLOSED: _decide_closed,
}


def decide(obs: Observation) -> Decision:
    """The next action for the job's current state, what it should be, and a pending
    force-close value."""
    want_closed = desired_state(obs) == DesiredState.CLOSED
    force = pending_force(obs) is not None
    return _DECIDE_BY_STATE[obs.status.state](obs, want_closed, force)


# Transitions: each returns the next status; none does I/O.


def _with(obs: Observation, status: MLJobStatus, detail: Verdict | None = None) -> MLJobStatus:
    return with_state_conditions(status, desired_state(obs), obs.now, obs.generation, detail)


def refreshed(obs: Observation) -> MLJobStatus:
    """The status of an idle open or closed job with its conditions re-derived (datafeed
    errors surface in Ready, a spec change nothing had to act on is marked observed); a
    failed job's conditions keep saying why it failed, only the generation moves on."""
    if obs.status.state == JobState.FAILED:
        return obs.status.model_copy(update={"observed_generation": obs.generation})
    if obs.status.state not in (JobState.OPENED, JobState.CLOSED):
        return obs.status
    return _with(obs, obs.status)


def initialize_closed(obs: Observation) -> MLJobStatus:
    status = obs.status.model_copy(update={"state": JobState.CLOSED, "closed": True})
    return _with(obs, status)


def begin_open(obs: Observation) -> MLJobStatus:
    status = obs.status.model_copy(
        update={
            "state": JobState.OPENING,
            "closed": False,
            "last_open": OpenRecord(started_at=obs.now),
        }
    )
    return _with(obs, status)


def opened(obs: Observation, restored_snapshot_id: str | None) -> MLJobStatus:
    record = (obs.status.last_open or OpenRecord(started_at=obs.now)).model_copy(
        update={"completed_at": obs.now, "restored_snapshot_id": restored_snapshot_id}
    )
    status = obs.status.model_copy(
        update={"state": JobState.OPENED, "closed": False, "last_open": record}
    )
    return _with(obs, status)


def begin_close(obs: Observation, close_id: str, trigger: str) -> MLJobStatus:
    record = CloseRecord(
        close_id=close_id, trigger=trigger, requested_at=obs.now, started_at=obs.now
    )
    status = obs.status.model_copy(update={"state": JobState.CLOSING, "last_close": record})
    return _with(obs, status)


def step_done(
    obs: Observation, step: CloseStep, results: dict[str, int | str | None]
) -> MLJobStatus:
    record = obs.status.last_close or CloseRecord()
    update: dict[str, object] = {"steps": {**record.steps, step.value: obs.now}}
    update.update(results)
    status = obs.status.model_copy(update={"last_close": record.model_copy(update=update)})
    if step == CloseStep.PERSIST_SNAPSHOT and results.get("snapshot_id"):
        status = status.model_copy(update={"model_snapshot_id": results["snapshot_id"]})
    return _with(obs, status, _closing_detail(status))


def timed_out(obs: Observation) -> MLJobStatus:
    record = (obs.status.last_close or CloseRecord()).model_copy(update={"timed_out": True})
    status = obs.status.model_copy(update={"last_close": record})
    return _with(obs, status, _closing_detail(status))


def _closing_detail(status: MLJobStatus) -> Verdict | None:
    close = status.last_close
    if close is None or not close.timed_out:
        return None
    return Verdict(TRUE, Reason.TIMED_OUT, timeout_message(close))


def timeout_message(close: CloseRecord) -> str:
    started = f" (started {close.started_at.isoformat()})" if close.started_at else ""
    return (
        f"Close housekeeping ran past spec.closeTimeout{started} and goes on. To close at "
        f"once without it, set the annotation {FORCE_CLOSE_ANNOTATION} to a new value "
        f"(e.g. the current time)."
    )


def finish_close(obs: Observation) -> MLJobStatus:
    record = obs.status.last_close or CloseRecord(started_at=obs.now)
    duration = (obs.now - record.started_at).total_seconds() if record.started_at else None
    record = record.model_copy(
        update={"completed_at": obs.now, "duration_seconds": duration, "message": None}
    )
    status = obs.status.model_copy(
        update={"state": JobState.CLOSED, "closed": True, "last_close": record}
    )
    return _with(obs, status)


def force_closed(obs: Observation, close_id: str, trigger: str) -> MLJobStatus:
    previous = obs.status.last_close
    in_progress = obs.status.state == JobState.CLOSING and previous is not None
    record = (
        previous.model_copy(update={"forced": True})
        if in_progress and previous is not None
        else CloseRecord(
            close_id=close_id,
            trigger=trigger,
            requested_at=obs.now,
            started_at=obs.now,
            forced=True,
        )
    )
    duration = (obs.now - record.started_at).total_seconds() if record.started_at else 0.0
    record = record.model_copy(update={"completed_at": obs.now, "duration_seconds": duration})
    status = obs.status.model_copy(
        update={
            "state": JobState.CLOSED,
            "closed": True,
            "last_close": record,
            "last_handled_force_close": pending_force(obs),
        }
    )
    return _with(obs, status)


def failed(obs: Observation, reason: str, message: str) -> MLJobStatus:
    status = obs.status.model_copy(update={"state": JobState.FAILED, "closed": False})
    return _with(obs, status, Verdict(TRUE, reason, message))


def force_ignored(obs: Observation) -> MLJobStatus:
    return obs.status.model_copy(update={"last_handled_force_close": pending_force(obs)})


def refuse_close(obs: Observation) -> MLJobStatus:
    return close_refused(obs.status, obs.now, obs.generation)


def invalid_spec(
    status: MLJobStatus, now: datetime, generation: int | None, message: str
) -> MLJobStatus | None:
    """A spec the CRD admits but the models reject: the job fails with InvalidSpec (no
    crash loop); None when its status says so already."""
    failed_cond = status.condition(ConditionType.FAILED)
    if (
        status.state == JobState.FAILED
        and failed_cond is not None
        and failed_cond.reason == Reason.INVALID_SPEC
    ):
        return None
    return with_state_conditions(
        status.model_copy(update={"state": JobState.FAILED, "closed": False}),
        DesiredState.OPENED,
        now,
        generation,
        Verdict(TRUE, Reason.INVALID_SPEC, message),
    )


def settled_closed(body: Mapping[str, Any]) -> bool:
    """A closed job with nothing left to act on: its status is closed and has observed
    the current generation, no force-close value is pending and it is not being deleted.
    Such a job needs no controller (a reopen, an edit, a new force value or a deletion
    changes the object and makes this False again), so it keeps metadata only."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    if status.get("state") != JobState.CLOSED.value or meta.get("deletionTimestamp"):
        return False
    if meta.get("generation") is None or status.get("observedGeneration") != meta["generation"]:
        return False
    force = (meta.get("annotations") or {}).get(FORCE_CLOSE_ANNOTATION)
    return not force or force == status.get("lastHandledForceClose")
