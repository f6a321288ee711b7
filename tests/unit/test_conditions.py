"""The five conditions derived from status in one place: never contradicting each other or
`status.state`, transition times moving only on a flip, refusals and failures saying why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseRecord,
    ConditionStatus,
    ConditionType,
    DatafeedStatus,
    DesiredState,
    JobState,
    MLJobStatus,
    Reason,
)
from mljob_operator.conditions import (
    TRUE,
    Verdict,
    close_refused,
    set_condition,
    with_state_conditions,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TRUE_WHEN = {
    JobState.OPENING: set(),
    JobState.OPENED: {ConditionType.READY, ConditionType.OPENED},
    JobState.CLOSING: {ConditionType.CLOSING},
    JobState.CLOSED: {ConditionType.READY, ConditionType.CLOSED},
    JobState.FAILED: {ConditionType.FAILED},
}


def derived(
    state: JobState, desired: DesiredState, **fields: object
) -> dict[ConditionType, tuple[ConditionStatus, str]]:
    status = with_state_conditions(MLJobStatus(state=state, **fields), desired, NOW, 7)
    assert status.observed_generation == 7
    assert [c.type for c in status.conditions] == [t.value for t in ConditionType]
    assert all(c.observed_generation == 7 for c in status.conditions)
    return {ConditionType(c.type): (c.status, c.reason) for c in status.conditions}


@pytest.mark.parametrize("state", list(TRUE_WHEN))
def test_exactly_the_conditions_of_the_state_are_true(state: JobState) -> None:
    desired = DesiredState.CLOSED if state == JobState.CLOSED else DesiredState.OPENED
    conditions = derived(state, desired)
    assert {t for t, (s, _) in conditions.items() if s == TRUE} == TRUE_WHEN[state]


def test_ready_follows_the_desired_state() -> None:
    assert derived(JobState.OPENED, DesiredState.CLOSED)[ConditionType.READY] == (
        ConditionStatus.FALSE,
        Reason.CLOSE_REQUESTED,
    )
    assert derived(JobState.CLOSED, DesiredState.OPENED)[ConditionType.READY] == (
        ConditionStatus.FALSE,
        Reason.OPENING,
    )
    ended = derived(JobState.OPENED, DesiredState.CLOSED, datafeed=DatafeedStatus(end_reached=True))
    assert ended[ConditionType.READY] == (ConditionStatus.FALSE, Reason.DATAFEED_ENDED)
    failing = derived(JobState.OPENED, DesiredState.OPENED, datafeed=DatafeedStatus(last_error="x"))
    assert failing[ConditionType.READY] == (TRUE, Reason.DATAFEED_ERROR)


def test_closed_says_how_the_job_was_closed() -> None:
    forced = derived(JobState.CLOSED, DesiredState.CLOSED, last_close=CloseRecord(forced=True))
    assert forced[ConditionType.CLOSED] == (TRUE, Reason.FORCE_CLOSED)
    by_feed = derived(
        JobState.CLOSED, DesiredState.CLOSED, last_close=CloseRecord(trigger="datafeed")
    )
    assert by_feed[ConditionType.CLOSED] == (TRUE, Reason.DATAFEED_ENDED)
    assert by_feed[ConditionType.READY][1] == Reason.DATAFEED_ENDED


def test_a_failure_detail_reaches_ready_and_failed() -> None:
    detail = Verdict(TRUE, Reason.SNAPSHOT_RESTORE_FAILED, "corrupt snapshot")
    status = with_state_conditions(
        MLJobStatus(state=JobState.FAILED), DesiredState.OPENED, NOW, 1, detail
    )
    ready, failed = status.condition(ConditionType.READY), status.condition(ConditionType.FAILED)
    assert ready is not None
    assert failed is not None
    assert (ready.reason, ready.message) == (Reason.SNAPSHOT_RESTORE_FAILED, "corrupt snapshot")
    assert (failed.status, failed.message) == (TRUE, "corrupt snapshot")


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition([], "Ready", Verdict(TRUE, "A", "a"), NOW, 1)
    later = NOW + timedelta(minutes=5)
    same = set_condition(first, "Ready", Verdict(TRUE, "B", "b"), later, 2)
    assert same[0].last_transition_time == NOW
    assert (same[0].reason, same[0].observed_generation) == ("B", 2)
    flipped = set_condition(same, "Ready", Verdict(ConditionStatus.FALSE, "C", "c"), later, 3)
    assert flipped[0].last_transition_time == later


def test_a_refused_close_says_why_and_what_to_do() -> None:
    failed = with_state_conditions(
        MLJobStatus(state=JobState.FAILED),
        DesiredState.OPENED,
        NOW,
        1,
        Verdict(TRUE, Reason.ENGINE_ERROR, "disk full"),
    )
    refused = close_refused(failed, NOW + timedelta(seconds=1), 2)
    closed = refused.condition(ConditionType.CLOSED)
    assert closed is not None
    assert (closed.status, closed.reason, closed.observed_generation) == (
        ConditionStatus.FALSE,
        Reason.CLOSE_REFUSED,
        2,
    )
    assert "disk full" in closed.message
    assert FORCE_CLOSE_ANNOTATION in closed.message
    assert refused.condition(ConditionType.FAILED) == failed.condition(ConditionType.FAILED)
