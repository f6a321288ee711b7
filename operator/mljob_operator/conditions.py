"""Condition setters: the five MLJob conditions are derived from the job's state in one place.

Every status change goes through `with_state_conditions`, so `Ready`, `Opened`,
`Closing`, `Closed` and `Failed` can never contradict each other or `status.state`.
`lastTransitionTime` moves only when a condition's status flips, as metav1.Condition
requires, so `kubectl wait` and GitOps health checks see real transitions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    Condition,
    ConditionStatus,
    ConditionType,
    DesiredState,
    JobState,
    MLJobStatus,
    Reason,
)

TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


@dataclass(frozen=True)
class Verdict:
    """What a condition says: its status, reason and message."""

    status: ConditionStatus
    reason: str
    message: str


def set_condition(
    conditions: list[Condition],
    type_: str,
    verdict: Verdict,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set; the transition time kept if status is unchanged."""
    current = next((c for c in conditions if c.type == type_), None)
    transition = now if current is None or current.status != verdict.status else None
    updated = Condition(
        type=type_,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        observed_generation=generation,
        last_transition_time=transition or (current.last_transition_time if current else now),
    )
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: _ORDER.get(c.type, len(_ORDER)))


_ORDER = {t.value: i for i, t in enumerate(ConditionType)}


def _closed_verdict(status: MLJobStatus) -> Verdict:
    close = status.last_close
    if close is not None and close.forced:
        return Verdict(
            TRUE,
            Reason.FORCE_CLOSED,
            "Force-closed without housekeeping: buffers were not flushed and no model "
            "snapshot was persisted, so recent results may be missing.",
        )
    if close is not None and close.trigger == "datafeed":
        return Verdict(
            TRUE, Reason.DATAFEED_ENDED, "The datafeed reached its end and closed the job."
        )
    snapshot = f" Model snapshot {close.snapshot_id}." if close and close.snapshot_id else ""
    return Verdict(TRUE, Reason.CLOSED, f"Closed after housekeeping.{snapshot}")


def _verdicts(
    status: MLJobStatus, desired: DesiredState, detail: Verdict | None
) -> dict[ConditionType, Verdict]:
    state = status.state
    not_failed = Verdict(FALSE, Reason.NOT_FAILED, "The job has not failed.")
    if state == JobState.FAILED:
        failed = detail or Verdict(TRUE, Reason.ENGINE_ERROR, "The job failed.")
        return {
            ConditionType.READY: Verdict(FALSE, failed.reason, failed.message),
            ConditionType.OPENED: Verdict(FALSE, failed.reason, "The job failed."),
            ConditionType.CLOSING: Verdict(FALSE, failed.reason, "The job failed."),
            ConditionType.CLOSED: Verdict(FALSE, failed.reason, "The job failed."),
            ConditionType.FAILED: Verdict(TRUE, failed.reason, failed.message),
        }
    if state == JobState.OPENING:
        msg = "Opening: restoring the model from its latest snapshot."
        return {
            ConditionType.READY: Verdict(FALSE, Reason.OPENING, msg),
            ConditionType.OPENED: Verdict(FALSE, Reason.OPENING, msg),
            ConditionType.CLOSING: Verdict(FALSE, Reason.OPENING, msg),
            ConditionType.CLOSED: Verdict(FALSE, Reason.OPENING, msg),
            ConditionType.FAILED: not_failed,
        }
    if state == JobState.OPENED:
        opened = Verdict(TRUE, Reason.OPENED, "The job is open and takes data.")
        feed = status.datafeed
        if desired == DesiredState.CLOSED:
            ready = (
                Verdict(FALSE, Reason.DATAFEED_ENDED, "The datafeed reached its end; closing.")
                if feed is not None and feed.end_reached
                else Verdict(FALSE, Reason.CLOSE_REQUESTED, "spec.state is closed; closing.")
            )
        elif feed is not None and feed.last_error:
            ready = Verdict(
                TRUE,
                feed.last_error_reason or Reason.DATAFEED_ERROR,
                f"The job is open, but its datafeed fails and is retried: {feed.last_error}",
            )
        else:
            ready = opened
        return {
            ConditionType.READY: ready,
            ConditionType.OPENED: opened,
            ConditionType.CLOSING: Verdict(FALSE, Reason.OPENED, "The job is open."),
            ConditionType.CLOSED: Verdict(FALSE, Reason.OPENED, "The job is open."),
            ConditionType.FAILED: not_failed,
        }
    if state == JobState.CLOSING:
        closing = detail or Verdict(
            TRUE,
            Reason.CLOSING,
            "Close housekeeping: flushing buffers, finalising results, persisting a model "
            "snapshot, pruning model history.",
        )
        return {
            ConditionType.READY: Verdict(FALSE, Reason.CLOSING, "The job is closing."),
            ConditionType.OPENED: Verdict(FALSE, Reason.CLOSING, "The job is closing."),
            ConditionType.CLOSING: closing,
            ConditionType.CLOSED: Verdict(FALSE, Reason.CLOSING, "The job is closing."),
            ConditionType.FAILED: not_failed,
        }
    closed = _closed_verdict(status)
    if desired == DesiredState.OPENED:
        ready = Verdict(FALSE, Reason.OPENING, "spec.state is opened; opening.")
    elif status.datafeed is not None and status.datafeed.end_reached:
        ready = Verdict(TRUE, closed.reason, "The job is closed: its datafeed reached its end.")
    else:
        ready = Verdict(TRUE, closed.reason, "The job is closed, as spec.state asks.")
    return {
        ConditionType.READY: ready,
        ConditionType.OPENED: Verdict(FALSE, closed.reason, "The job is closed."),
        ConditionType.CLOSING: Verdict(FALSE, closed.reason, "Housekeeping is done."),
        ConditionType.CLOSED: closed,
        ConditionType.FAILED: not_failed,
    }


def with_state_conditions(
    status: MLJobStatus,
    desired: DesiredState,
    now: datetime,
    generation: int | None,
    detail: Verdict | None = None,
) -> MLJobStatus:
    """`status` with all five conditions set from its state (and `detail` for the
    condition that carries it: Failed when failed, Closing when closing)."""
    conditions = list(status.conditions)
    for type_, verdict in _verdicts(status, desired, detail).items():
        conditions = set_condition(conditions, type_, verdict, now, generation)
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})


def close_refused(status: MLJobStatus, now: datetime, generation: int | None) -> MLJobStatus:
    """A failed job asked to close without force: say why nothing happens and what to do."""
    failed = status.condition(ConditionType.FAILED)
    why = f" ({failed.message})" if failed else ""
    verdict = Verdict(
        FALSE,
        Reason.CLOSE_REFUSED,
        f"The job has failed{why}; a normal close of a failed job is refused. Set the "
        f"annotation {FORCE_CLOSE_ANNOTATION} to a new value to force-close it.",
    )
    conditions = set_condition(status.conditions, ConditionType.CLOSED, verdict, now, generation)
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})
