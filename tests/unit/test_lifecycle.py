"""Table tests of the pure lifecycle: every (state, desired, force, engine) → action, and
the conditions each transition writes. The clock is a fixed datetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mljob_operator import lifecycle
from mljob_operator.api import (
    FORCE_CLOSE_ANNOTATION,
    CloseRecord,
    CloseStep,
    ConditionStatus,
    ConditionType,
    DatafeedStatus,
    DesiredState,
    JobState,
    MLJobSpec,
    MLJobStatus,
    Reason,
)
from mljob_operator.lifecycle import Action, Observation

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SPEC = {"analysisConfig": {"detectors": [{"function": "count"}]}, "closeTimeout": "10m"}


def spec(state: str = "opened") -> MLJobSpec:
    return MLJobSpec.model_validate({**SPEC, "state": state})


def obs(  # noqa: PLR0917 (the table rows below read positionally)
    state: JobState | None,
    desired: str = "opened",
    force: str | None = None,
    handled: str | None = None,
    loaded: bool = True,
    close: CloseRecord | None = None,
    now: datetime = NOW,
    deleting: bool = False,
) -> Observation:
    status = MLJobStatus(state=state, last_handled_force_close=handled, last_close=close)
    return Observation(
        spec=spec(desired),
        status=status,
        generation=3,
        force_close=force,
        engine_loaded=loaded,
        now=now,
        deleting=deleting,
    )


def closing(steps: tuple[CloseStep, ...] = (), timed_out: bool = False) -> CloseRecord:
    return CloseRecord(
        close_id="c1",
        started_at=NOW - timedelta(minutes=1),
        steps={s.value: NOW for s in steps},
        timed_out=timed_out,
    )


@pytest.mark.parametrize(
    ("observation", "action"),
    [
        (obs(None), Action.BEGIN_OPEN),
        (obs(None, "closed"), Action.INITIALIZE_CLOSED),
        (obs(JobState.OPENING), Action.OPEN),
        (obs(JobState.OPENING, "closed"), Action.OPEN),
        (obs(JobState.OPENING, "closed", force="f1"), Action.FORCE_CLOSE),
        (obs(JobState.OPENED), Action.NOTHING),
        (obs(JobState.OPENED, loaded=False), Action.LOAD),
        (obs(JobState.OPENED, force="f1"), Action.NOTHING),
        (obs(JobState.OPENED, "closed"), Action.BEGIN_CLOSE),
        (obs(JobState.OPENED, "closed", loaded=False), Action.BEGIN_CLOSE),
        (obs(JobState.OPENED, "closed", force="f1"), Action.FORCE_CLOSE),
        (obs(JobState.OPENED, "closed", force="f1", handled="f1"), Action.BEGIN_CLOSE),
        (obs(JobState.OPENED, deleting=True), Action.BEGIN_CLOSE),
        (obs(JobState.CLOSING, "closed", close=closing()), Action.RUN_STEP),
        (obs(JobState.CLOSING, "opened", close=closing()), Action.RUN_STEP),
        (
            obs(JobState.CLOSING, "closed", close=closing(lifecycle.CLOSE_STEPS)),
            Action.FINISH_CLOSE,
        ),
        (obs(JobState.CLOSING, "closed", force="x", close=closing()), Action.FORCE_CLOSE),
        (obs(JobState.CLOSED, "closed"), Action.NOTHING),
        (obs(JobState.CLOSED, "closed", force="new"), Action.IGNORE_FORCE),
        (obs(JobState.CLOSED, "opened", force="new"), Action.IGNORE_FORCE),
        (obs(JobState.CLOSED, "opened", force="new", handled="new"), Action.BEGIN_OPEN),
        (obs(None, force="new"), Action.IGNORE_FORCE),
        (obs(JobState.CLOSED, "opened"), Action.BEGIN_OPEN),
        (obs(JobState.FAILED), Action.NOTHING),
        (obs(JobState.FAILED, "closed"), Action.REFUSE_CLOSE),
        (obs(JobState.FAILED, "closed", force="f"), Action.FORCE_CLOSE),
        (obs(JobState.FAILED, "closed", force="f", handled="f"), Action.REFUSE_CLOSE),
    ],
)
def test_decide(observation: Observation, action: Action) -> None:
    assert lifecycle.decide(observation).action == action


def test_a_force_value_seen_while_closed_is_recorded_and_never_forces_later() -> None:
    stale = obs(JobState.CLOSED, "closed", force="weeks-ago")
    status = lifecycle.force_ignored(stale)
    assert status.last_handled_force_close == "weeks-ago"
    assert status.state == JobState.CLOSED
    later = Observation(
        spec=spec("closed"),
        status=status.model_copy(update={"state": JobState.OPENED}),
        generation=9,
        force_close="weeks-ago",
        engine_loaded=True,
        now=NOW,
    )
    assert lifecycle.decide(later).action == Action.BEGIN_CLOSE, "a plain close, not forced"


def test_steps_run_in_order_and_resume_after_the_last_recorded() -> None:
    done: tuple[CloseStep, ...] = ()
    for expected in lifecycle.CLOSE_STEPS:
        decision = lifecycle.decide(obs(JobState.CLOSING, "closed", close=closing(done)))
        assert decision.step == expected
        done = (*done, expected)
    assert lifecycle.decide(obs(JobState.CLOSING, "closed", close=closing(done))).step is None


def test_timeout_is_reported_once_then_housekeeping_goes_on() -> None:
    late = NOW + timedelta(minutes=10)
    first = lifecycle.decide(obs(JobState.CLOSING, "closed", close=closing(), now=late))
    assert first.action == Action.TIME_OUT
    status = lifecycle.timed_out(obs(JobState.CLOSING, "closed", close=closing(), now=late))
    cond = status.condition(ConditionType.CLOSING)
    assert cond is not None
    assert (cond.status, cond.reason) == (ConditionStatus.TRUE, Reason.TIMED_OUT)
    assert "ml.mljob.dev/force-close" in cond.message
    then = lifecycle.decide(
        obs(JobState.CLOSING, "closed", close=closing(timed_out=True), now=late)
    )
    assert then.action == Action.RUN_STEP


def test_deadline_is_start_plus_close_timeout() -> None:
    decision = lifecycle.decide(obs(JobState.CLOSING, "closed", close=closing()))
    assert decision.close_deadline == NOW - timedelta(minutes=1) + timedelta(minutes=10)


def _conds(status: MLJobStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


def test_full_close_writes_consistent_conditions() -> None:
    o = obs(JobState.OPENED, "closed")
    status = lifecycle.begin_close(o, "c1", "spec")
    assert status.state == JobState.CLOSING
    assert _conds(status)["Closing"] == ("True", "Closing")
    assert _conds(status)["Ready"] == ("False", "Closing")
    for step in lifecycle.CLOSE_STEPS:
        o = Observation(o.spec, status, 3, None, True, NOW)
        extra: dict[str, int | str | None] = (
            {"snapshot_id": "snap-1"} if step == CloseStep.PERSIST_SNAPSHOT else {}
        )
        status = lifecycle.step_done(o, step, extra)
    assert status.model_snapshot_id == "snap-1"
    o = Observation(o.spec, status, 3, None, True, NOW + timedelta(seconds=5))
    status = lifecycle.finish_close(o)
    assert status.closed is True
    assert status.state == JobState.CLOSED
    conds = _conds(status)
    assert conds["Closed"] == ("True", "Closed")
    assert conds["Ready"] == ("True", "Closed")
    assert conds["Opened"][0] == "False"
    assert conds["Closing"][0] == "False"
    assert conds["Failed"] == ("False", "NotFailed")
    assert status.last_close is not None
    assert status.last_close.duration_seconds == 5.0
    assert set(status.last_close.steps) == {s.value for s in lifecycle.CLOSE_STEPS}
    assert all(c.observed_generation == 3 for c in status.conditions)


def test_force_close_records_the_handled_value() -> None:
    o = obs(JobState.OPENED, "closed", force="2026-11-29T12:00")
    status = lifecycle.force_closed(o, "c9", "spec")
    assert status.last_handled_force_close == "2026-11-29T12:00"
    assert status.last_close is not None
    assert status.last_close.forced
    cond = status.condition(ConditionType.CLOSED)
    assert cond is not None
    assert cond.reason == Reason.FORCE_CLOSED
    assert "recent results may be missing" in cond.message
    o2 = Observation(o.spec, status, 3, "2026-11-29T12:00", False, NOW)
    assert lifecycle.decide(o2).action == Action.NOTHING


def test_failed_then_refused_then_forced() -> None:
    o = obs(JobState.OPENED, "closed")
    failed = lifecycle.failed(o, Reason.ENGINE_ERROR, "disk full")
    assert _conds(failed)["Failed"] == ("True", "EngineError")
    assert _conds(failed)["Ready"] == ("False", "EngineError")
    o = Observation(o.spec, failed, 3, None, False, NOW)
    assert lifecycle.decide(o).action == Action.REFUSE_CLOSE
    refused = lifecycle.refuse_close(o)
    closed = refused.condition(ConditionType.CLOSED)
    assert closed is not None
    assert closed.reason == Reason.CLOSE_REFUSED
    assert "disk full" in closed.message
    assert "ml.mljob.dev/force-close" in closed.message
    o = Observation(o.spec, refused, 3, None, False, NOW)
    assert lifecycle.decide(o).action == Action.NOTHING
    asked_again = Observation(o.spec, refused, 4, None, False, NOW)
    assert lifecycle.decide(asked_again).action == Action.REFUSE_CLOSE, "a new generation"
    o = Observation(o.spec, refused, 3, "now", False, NOW)
    assert lifecycle.decide(o).action == Action.FORCE_CLOSE


def test_transition_time_moves_only_on_status_flip() -> None:
    o = obs(JobState.OPENED, "closed")
    status = lifecycle.begin_close(o, "c1", "spec")
    later = Observation(o.spec, status, 3, None, True, NOW + timedelta(minutes=2))
    status2 = lifecycle.step_done(later, CloseStep.FLUSH, {"records_flushed": 4})
    before = status.condition(ConditionType.CLOSING)
    after = status2.condition(ConditionType.CLOSING)
    assert before is not None
    assert after is not None
    assert before.last_transition_time == after.last_transition_time == NOW
    assert status2.last_close is not None
    assert status2.last_close.records_flushed == 4


def test_reopen_after_close_goes_through_opening() -> None:
    o = obs(JobState.CLOSED, "opened")
    status = lifecycle.begin_open(o)
    assert status.state == JobState.OPENING
    assert status.closed is False
    o = Observation(o.spec, status, 3, None, False, NOW)
    assert lifecycle.decide(o).action == Action.OPEN
    status = lifecycle.opened(o, "snap-1")
    assert status.last_open is not None
    assert status.last_open.restored_snapshot_id == "snap-1"
    assert _conds(status)["Ready"] == ("True", "Opened")
    assert _conds(status)["Opened"] == ("True", "Opened")


def test_invalid_spec_failure_is_retried_once_the_spec_changes() -> None:
    o = obs(JobState.OPENING)
    failed = lifecycle.failed(o, Reason.INVALID_SPEC, "bad retention")
    same_generation = Observation(o.spec, failed, 3, None, False, NOW)
    assert lifecycle.decide(same_generation).action == Action.NOTHING
    edited = Observation(o.spec, failed, 4, None, False, NOW)
    assert lifecycle.decide(edited).action == Action.BEGIN_OPEN
    closed_instead = Observation(spec("closed"), failed, 4, None, False, NOW)
    assert lifecycle.decide(closed_instead).action == Action.REFUSE_CLOSE
    engine_failed = lifecycle.failed(o, Reason.ENGINE_ERROR, "disk full")
    assert lifecycle.decide(Observation(o.spec, engine_failed, 4, None, False, NOW)).action == (
        Action.NOTHING
    )


def test_desired_state_from_spec_or_deletion() -> None:
    assert lifecycle.desired_state(obs(JobState.OPENED)) == DesiredState.OPENED
    assert lifecycle.desired_state(obs(JobState.OPENED, deleting=True)) == DesiredState.CLOSED


# Datafeeds: a datafeed that reached spec.datafeed.end makes the desired state closed.

END = datetime(2023, 11, 15, tzinfo=UTC)
END_MS = int(END.timestamp() * 1000)


def feed_obs(
    state: JobState | None,
    searched_until: int | None,
    *,
    desired: str = "opened",
    end: datetime | None = END,
    feed: bool = True,
    loaded: bool = True,
    last_error: str | None = None,
    deleting: bool = False,
) -> Observation:
    datafeed = {"http": {"url": "http://source.test/data"}}
    if end is not None:
        datafeed["end"] = end.isoformat()
    s = MLJobSpec.model_validate(
        {**SPEC, "state": desired, **({"datafeed": datafeed} if feed else {})}
    )
    status = MLJobStatus(
        state=state,
        datafeed=DatafeedStatus(searched_until=searched_until, last_error=last_error),
    )
    return Observation(s, status, 3, None, loaded, NOW, deleting)


@pytest.mark.parametrize(
    ("observation", "action", "runs"),
    [
        (feed_obs(JobState.OPENED, None), Action.NOTHING, True),
        (feed_obs(JobState.OPENED, END_MS - 1), Action.NOTHING, True),
        (feed_obs(JobState.OPENED, END_MS), Action.BEGIN_CLOSE, False),
        (feed_obs(JobState.OPENED, END_MS + 5), Action.BEGIN_CLOSE, False),
        (feed_obs(JobState.OPENED, END_MS, loaded=False), Action.BEGIN_CLOSE, False),
        (feed_obs(JobState.OPENED, END_MS - 1, loaded=False), Action.LOAD, False),
        (feed_obs(JobState.OPENED, END_MS, end=None), Action.NOTHING, True),
        (feed_obs(JobState.OPENED, END_MS, feed=False), Action.NOTHING, False),
        (feed_obs(JobState.OPENED, 0, desired="closed"), Action.BEGIN_CLOSE, False),
        (feed_obs(JobState.OPENED, 0, deleting=True), Action.BEGIN_CLOSE, False),
        (feed_obs(JobState.OPENING, None), Action.OPEN, False),
        (feed_obs(JobState.CLOSED, END_MS), Action.NOTHING, False),
        (feed_obs(JobState.CLOSED, END_MS, end=END + timedelta(hours=1)), Action.BEGIN_OPEN, False),
        (feed_obs(JobState.CLOSED, END_MS, feed=False), Action.BEGIN_OPEN, False),
        (feed_obs(None, None), Action.BEGIN_OPEN, False),
        (feed_obs(JobState.FAILED, END_MS), Action.REFUSE_CLOSE, False),
    ],
)
def test_decide_with_datafeed(observation: Observation, action: Action, runs: bool) -> None:
    assert lifecycle.decide(observation).action == action
    assert lifecycle.datafeed_runs(observation) is runs


@pytest.mark.parametrize(
    ("observation", "trigger"),
    [
        (feed_obs(JobState.OPENED, END_MS), "datafeed"),
        (feed_obs(JobState.OPENED, END_MS, desired="closed"), "spec"),
        (feed_obs(JobState.OPENED, END_MS - 1, desired="closed"), "spec"),
        (feed_obs(JobState.OPENED, END_MS, deleting=True), "deletion"),
    ],
)
def test_close_trigger(observation: Observation, trigger: str) -> None:
    assert lifecycle.close_trigger(observation) == trigger


def test_datafeed_end_closes_with_reason_datafeed_ended() -> None:
    o = feed_obs(JobState.OPENED, END_MS)
    o = Observation(o.spec, lifecycle.with_datafeed(o.status, o.spec, None), 3, None, True, NOW)
    assert o.status.datafeed is not None
    assert o.status.datafeed.end_reached
    assert lifecycle.desired_state(o) == DesiredState.CLOSED
    assert _conds(lifecycle.refreshed(o))["Ready"] == ("False", "DatafeedEnded")
    status = lifecycle.begin_close(o, "c1", lifecycle.close_trigger(o))
    for step in lifecycle.CLOSE_STEPS:
        status = lifecycle.step_done(Observation(o.spec, status, 3, None, True, NOW), step, {})
    status = lifecycle.finish_close(Observation(o.spec, status, 3, None, True, NOW))
    assert status.last_close is not None
    assert status.last_close.trigger == "datafeed"
    conds = _conds(status)
    assert conds["Closed"] == ("True", "DatafeedEnded")
    assert conds["Ready"] == ("True", "DatafeedEnded")


def test_a_later_end_reopens_and_no_datafeed_clears_its_status() -> None:
    closed = feed_obs(JobState.CLOSED, END_MS)
    later = MLJobSpec.model_validate(
        {
            **SPEC,
            "datafeed": {"http": {"url": "http://s.test/"}, "end": "2023-11-16T00:00:00Z"},
        }
    )
    status = lifecycle.with_datafeed(closed.status, later, None)
    assert status.datafeed is not None
    assert not status.datafeed.end_reached
    assert lifecycle.decide(Observation(later, status, 4, None, False, NOW)).action == (
        Action.BEGIN_OPEN
    )
    assert lifecycle.with_datafeed(closed.status, spec(), None).datafeed is None


def test_datafeed_error_keeps_ready_true_and_says_why() -> None:
    o = feed_obs(JobState.OPENED, END_MS - 1, last_error="GET http://source.test: refused")
    conds = {c.type: c for c in lifecycle.refreshed(o).conditions}
    assert (conds["Ready"].status, conds["Ready"].reason) == (
        ConditionStatus.TRUE,
        Reason.DATAFEED_ERROR,
    )
    assert "refused" in conds["Ready"].message
    assert conds["Opened"].status == ConditionStatus.TRUE
    assert conds["Failed"].status == ConditionStatus.FALSE


def test_refreshed_keeps_a_failed_jobs_conditions_and_marks_the_generation_seen() -> None:
    o = obs(JobState.OPENED)
    failed = lifecycle.failed(o, Reason.ENGINE_ERROR, "disk full")
    again = Observation(o.spec, failed, 4, None, False, NOW)
    refreshed = lifecycle.refreshed(again)
    assert refreshed.conditions == failed.conditions
    assert refreshed.observed_generation == 4
    assert refreshed.model_copy(update={"observed_generation": 3}) == failed


def settled_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"generation": 3, "annotations": {}},
        "status": {"state": "closed", "observedGeneration": 3},
    }
    for path, value in changes.items():
        section, key = path.split("__")
        body[section][key] = value
    return body


def test_a_closed_job_is_settled_only_when_nothing_is_left_to_act_on() -> None:
    assert lifecycle.settled_closed(settled_body())
    assert not lifecycle.settled_closed(settled_body(status__state="closing"))
    assert not lifecycle.settled_closed(settled_body(status__state="opened"))
    assert not lifecycle.settled_closed(settled_body(metadata__generation=4)), "an edit"
    assert not lifecycle.settled_closed(settled_body(metadata__deletionTimestamp="2026-12-02"))
    force = {FORCE_CLOSE_ANNOTATION: "again"}
    assert not lifecycle.settled_closed(settled_body(metadata__annotations=force))
    handled = settled_body(metadata__annotations=force, status__lastHandledForceClose="again")
    assert lifecycle.settled_closed(handled), "a force value already handled"
    assert not lifecycle.settled_closed({"metadata": {"generation": 1}}), "a new job"
    assert not lifecycle.settled_closed({}), "no metadata at all"
