"""The Kubernetes Events an MLJob's controller posts, worded in one place.

Events are what `kubectl describe mljob` shows a person, so their texts are product copy:
each says what happened and, for warnings, what to do. Keeping them here (pure, no I/O)
lets the controller say *which* event and tests read the words without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseRecord,
    ConditionType,
    JobState,
    MLJobSpec,
    MLJobStatus,
    Reason,
)

NORMAL, WARNING = "Normal", "Warning"
MAX_MESSAGE = 1024
"""The apiserver's limit on an Event's message."""


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


EventSink = Callable[[Event], None]
"""Posts a Kubernetes Event about the job."""


def opening() -> Event:
    return Event(NORMAL, Reason.OPENING, "Opening: restoring the model from its latest snapshot.")


def opened(restored_snapshot_id: str | None) -> Event:
    detail = (
        f"model restored from snapshot {restored_snapshot_id}"
        if restored_snapshot_id
        else "new model"
    )
    return Event(NORMAL, Reason.OPENED, f"Opened ({detail}); the job takes data.")


def closing(close_id: str) -> Event:
    return Event(NORMAL, Reason.CLOSING, f"Closing ({close_id}): housekeeping started.")


def datafeed_ended(spec: MLJobSpec) -> Event:
    df = spec.datafeed
    end = df.end.isoformat() if df is not None and df.end is not None else "its end"
    return Event(NORMAL, Reason.DATAFEED_ENDED, f"The datafeed reached {end}; closing the job.")


def closed(close: CloseRecord) -> Event:
    return Event(
        NORMAL,
        Reason.CLOSED,
        f"Closed in {close.duration_seconds or 0:.1f}s: flushed {close.records_flushed or 0} "
        f"records, finalised {close.buckets_finalized or 0} buckets, snapshot "
        f"{close.snapshot_id}, pruned {close.snapshots_pruned or 0} snapshots.",
    )


def force_closed(handled_value: str | None) -> Event:
    return Event(
        WARNING,
        Reason.FORCE_CLOSED,
        f"Force-closed ({FORCE_CLOSE_ANNOTATION}={handled_value}) without flushing or "
        "persisting a snapshot; recent results may be missing.",
    )


def force_ignored(value: str | None, state: JobState | None) -> Event:
    where = f"the job is {state.value}" if state is not None else "the job is new"
    return Event(
        NORMAL,
        Reason.FORCE_CLOSE_IGNORED,
        f"{FORCE_CLOSE_ANNOTATION}={value} ignored: {where}, so there is no close to force. "
        "It will not force a later close; set a new value then.",
    )


def close_refused(status: MLJobStatus) -> Event:
    cond = status.condition(ConditionType.CLOSED)
    return Event(WARNING, Reason.CLOSE_REFUSED, cond.message if cond else "Close refused.")


def timed_out(message: str) -> Event:
    return Event(WARNING, Reason.TIMED_OUT, message)


def failed(reason: str, message: str) -> Event:
    return Event(WARNING, reason, message)


def datafeed_error(message: str, reason: str = Reason.DATAFEED_ERROR) -> Event:
    """A pull error; `reason` DatafeedError, CredentialsNotFound or CredentialsInvalid."""
    return Event(WARNING, reason, f"Datafeed: {message}")
