"""The close/open protocol the CLI and the server share: the patch, and reading the answer."""

from __future__ import annotations

from datetime import UTC, datetime

from mljob_operator.api import FORCE_CLOSE_ANNOTATION, JobState
from mljob_operator.state_change import Progress, StateChange, force_value, refusal

REFUSED = {
    "state": "failed",
    "conditions": [
        {
            "type": "Closed",
            "reason": "CloseRefused",
            "message": "use force",
            "observedGeneration": 4,
        },
        {"type": "Failed", "reason": "EngineError", "message": "disk", "observedGeneration": 3},
    ],
}


def test_refused_close_of_this_generation() -> None:
    assert refusal(REFUSED, JobState.CLOSED, 4) == "use force"
    assert refusal(REFUSED, JobState.CLOSED, 5) is None, "an older answer: keep waiting"
    assert refusal({**REFUSED, "state": "closing"}, JobState.CLOSED, 4) is None


def test_failed_open() -> None:
    assert refusal(REFUSED, JobState.OPENED, 3) == "disk"
    assert refusal(REFUSED, JobState.OPENED, 4) is None


def test_force_value_is_a_utc_timestamp() -> None:
    assert force_value().endswith("Z")


def test_close_patch_forces_only_a_job_not_yet_closed() -> None:
    change = StateChange(JobState.CLOSED, force=True, force_value="v1")
    assert change.needs_current_status
    assert change.patch({"state": "opened"}) == {
        "spec": {"state": "closed"},
        "metadata": {"annotations": {FORCE_CLOSE_ANNOTATION: "v1"}},
    }
    assert change.patch({"state": "closed"}) == {"spec": {"state": "closed"}}
    assert change.patch(None)["metadata"]["annotations"][FORCE_CLOSE_ANNOTATION] == "v1"


def test_plain_close_and_open_patch_only_the_spec() -> None:
    assert not StateChange(JobState.CLOSED).needs_current_status
    assert StateChange(JobState.CLOSED).patch() == {"spec": {"state": "closed"}}
    assert StateChange(JobState.OPENED, force=True).patch({"state": "failed"}) == {
        "spec": {"state": "opened"}
    }


def test_progress_reads_reached_refused_and_pending() -> None:
    close = StateChange(JobState.CLOSED)
    assert close.progress({"state": "closed"}, 4) == (Progress.REACHED, "closed")
    assert close.progress(REFUSED, 4) == (Progress.REFUSED, "use force")
    assert close.progress(REFUSED, 5) == (Progress.PENDING, "failed")
    assert close.progress({}, 1) == (Progress.PENDING, "pending")


def test_force_values_differ_and_are_ordered() -> None:
    early = force_value(datetime(2026, 1, 1, tzinfo=UTC))
    assert early == "2026-01-01T00:00:00.000000Z"
    assert force_value() > early


def test_a_forced_close_is_not_answered_by_an_earlier_refusal() -> None:
    """Forcing a failed job whose plain close was refused: the annotation does not move the
    generation, so the old CloseRefused condition looks current; it is not the answer."""
    forced = StateChange(JobState.CLOSED, force=True)
    assert forced.progress(REFUSED, 4) == (Progress.PENDING, "failed")
    assert forced.progress({"state": "closed"}, 4)[0] == Progress.REACHED
