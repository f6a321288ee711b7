"""The examples of hostile input, through the real operator: a record dated 9999 and a
value of 1e200 are answered at once and counted, the job and its neighbour go on taking
data, the close and the deletion complete; unbounded numbers in a spec never get in."""

from __future__ import annotations

import math
from typing import Any

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from tests.e2e.jobs import BASE_TIME, api_get, mljob, ndjson, post, set_state, wait_state

MEAN = {
    "analysisConfig": {"bucketSpan": "1m", "detectors": [{"function": "mean", "fieldName": "v"}]}
}


def _minutes(start: int, stop: int) -> bytes:
    return ndjson([{"time": BASE_TIME + 60 * m, "v": 10.0 + m % 3} for m in range(start, stop)])


def test_a_date_in_9999_and_a_value_of_1e200_are_counted_and_the_job_goes_on(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = control_plane, namespace
    for name in ("hostile", "neighbour"):
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, **MEAN))
    for name in ("hostile", "neighbour"):
        wait_state(cp, ns, name, "opened")

    code, counts = post(operator, ns, "hostile", _minutes(0, 3))
    assert code == 202, counts
    code, counts = post(operator, ns, "hostile", ndjson([{"time": BASE_TIME + 180, "v": 1e200}]))
    assert code == 202, counts
    assert counts["missingFieldCount"] == 1
    code, counts = post(operator, ns, "hostile", ndjson([{"time": 253402300799, "v": 1}]))
    assert code == 202, counts
    assert counts["invalidDateCount"] == 1

    code, counts = post(operator, ns, "hostile", _minutes(4, 120))
    assert code == 202, counts
    assert counts["processedRecordCount"] == 3 + 1 + 116, "the 1e200 record counts, its value not"
    code, counts = post(operator, ns, "neighbour", _minutes(0, 120))
    assert code == 202, counts

    set_state(cp, ns, "hostile", "closed")
    st = wait_state(cp, ns, "hostile", "closed")
    assert st["dataCounts"]["invalidDateCount"] == 1
    assert st["dataCounts"]["missingFieldCount"] == 1
    buckets: list[dict[str, Any]] = api_get(operator, ns, "hostile", "results/buckets?size=1000")[
        "buckets"
    ]
    assert len(buckets) >= 119
    assert all(math.isfinite(b["anomalyScore"]) for b in buckets)
    cp.kubectl("delete", "mljob", "hostile", "neighbour", "-n", ns, "--timeout=60s")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"closeTimeout": "99999999999d"}, "closeTimeout"),
        ({"modelSnapshotRetentionDays": 9_000_000_000_000_000_000}, "modelSnapshotRetentionDays"),
        ({"analysisLimits": {"modelMemoryLimit": "99999999999999999999"}}, "modelMemoryLimit"),
    ],
)
def test_unbounded_numbers_in_a_spec_are_refused_by_the_apiserver(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    spec: dict[str, Any],
    message: str,
) -> None:
    got = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=mljob("unbounded", **spec), check=False
    )
    assert got.returncode != 0
    assert message in got.stderr
