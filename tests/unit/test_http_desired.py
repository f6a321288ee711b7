"""When waiting for a state must stop early: the controller's refusal for this generation."""

from __future__ import annotations

from mljob_operator.api import JobState
from mljob_operator.http.desired import force_value, refusal

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
