"""The MLJob models: defaults and validation as DESIGN.md and the seed service say."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mljob_operator.api import (
    COUNT_FUNCTIONS,
    FORCE_CLOSE_ANNOTATION,
    CloseStep,
    Condition,
    ConditionStatus,
    ConditionType,
    DesiredState,
    DetectorFunction,
    JobState,
    MemoryStatus,
    MLJob,
    MLJobSpec,
    MLJobStatus,
    Reason,
    TimeFormat,
    parse_duration,
)
from mljob_operator.runtime import engine_config

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
MINIMAL: dict[str, Any] = {"analysisConfig": {"detectors": [{"function": "count"}]}}


def spec(**overrides: Any) -> dict[str, Any]:
    return {**MINIMAL, **overrides}


def test_defaults_follow_the_design() -> None:
    parsed = MLJobSpec.model_validate(MINIMAL)
    assert parsed.state is DesiredState.OPENED
    assert parsed.close_timeout == "30m"
    assert parse_duration(parsed.close_timeout) == timedelta(minutes=30)
    assert parsed.analysis_config.bucket_span == "5m"
    assert parse_duration(parsed.analysis_config.latency) == timedelta(0)
    assert parsed.data_description.time_field == "time"
    assert parsed.data_description.time_format is TimeFormat.EPOCH
    assert parsed.analysis_limits.model_memory_limit_bytes == 1024 << 20
    assert parsed.model_snapshot_retention_days == 10
    assert parsed.daily_model_snapshot_retention_after_days == 1
    assert parsed.results_retention_days is None
    assert parsed.datafeed is None


def test_wire_names_are_camel_case_and_python_names_work_too() -> None:
    by_alias = MLJobSpec.model_validate(spec(closeTimeout="1h", modelSnapshotRetentionDays=3))
    by_name = MLJobSpec.model_validate(spec(close_timeout="1h", model_snapshot_retention_days=3))
    assert by_alias == by_name
    wire = by_alias.to_json_dict()
    assert wire["closeTimeout"] == "1h"
    assert wire["analysisConfig"]["bucketSpan"] == "5m"
    assert wire["dataDescription"] == {"timeField": "time", "timeFormat": "epoch"}
    assert "resultsRetentionDays" not in wire


@pytest.mark.parametrize("function", list(DetectorFunction))
def test_field_name_required_unless_counting(function: DetectorFunction) -> None:
    body = spec(analysisConfig={"detectors": [{"function": function.value}]})
    if function.value in COUNT_FUNCTIONS:
        MLJobSpec.model_validate(body)
        assert not function.needs_field_name
    else:
        with pytest.raises(ValidationError, match="fieldName is required"):
            MLJobSpec.model_validate(body)
        body["analysisConfig"]["detectors"][0]["fieldName"] = "bytes"
        MLJobSpec.model_validate(body)


def test_detector_functions_are_the_seed_ones() -> None:
    assert {f.value for f in DetectorFunction} == {
        "count",
        "high_count",
        "low_count",
        "non_zero_count",
        "distinct_count",
        "mean",
        "high_mean",
        "low_mean",
        "sum",
        "high_sum",
        "low_sum",
        "min",
        "max",
        "median",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (spec(analysisConfig={"detectors": [{"function": "p99"}]}), "function"),
        (spec(analysisConfig={"detectors": []}), "at least 1"),
        ({}, "analysisConfig"),
        (spec(closeTimeout="thirty minutes"), "closeTimeout"),
        (spec(state="paused"), "state"),
        (
            spec(analysisConfig={"bucketSpan": "0s", "detectors": [{"function": "count"}]}),
            "positive",
        ),
        (
            spec(analysisConfig={"bucketSpan": "5x", "detectors": [{"function": "count"}]}),
            "bucketSpan",
        ),
        (spec(analysisLimits={"modelMemoryLimit": "lots"}), "modelMemoryLimit"),
        (spec(modelSnapshotRetentionDays=-1), "modelSnapshotRetentionDays"),
        (spec(resultsRetentionDays=0), "resultsRetentionDays"),
        (spec(dataDescription={"timeFormat": "rfc822"}), "timeFormat"),
    ],
)
def test_invalid_specs_are_rejected(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MLJobSpec.model_validate(body)


def test_datafeed_needs_exactly_one_source_and_ordered_times() -> None:
    prometheus = {"url": "http://prom:9090", "query": "up"}
    ok = MLJobSpec.model_validate(spec(datafeed={"prometheus": prometheus, "step": None}))
    assert ok.datafeed is not None
    assert ok.datafeed.prometheus is not None
    assert ok.datafeed.prometheus.value_field == "value"
    with pytest.raises(ValidationError, match="exactly one"):
        MLJobSpec.model_validate(spec(datafeed={}))
    with pytest.raises(ValidationError, match="exactly one"):
        MLJobSpec.model_validate(
            spec(datafeed={"prometheus": prometheus, "http": {"url": "http://x"}})
        )
    with pytest.raises(ValidationError, match="end must be after"):
        MLJobSpec.model_validate(
            spec(
                datafeed={
                    "http": {"url": "https://data.example/records"},
                    "start": "2026-01-02T00:00:00Z",
                    "end": "2026-01-01T00:00:00Z",
                }
            )
        )
    with pytest.raises(ValidationError, match="url"):
        MLJobSpec.model_validate(spec(datafeed={"http": {"url": "ftp://x"}}))


def test_daily_retention_is_capped() -> None:
    parsed = MLJobSpec.model_validate(spec(modelSnapshotRetentionDays=0))
    assert parsed.effective_daily_retention_after_days == 0
    config = engine_config(parsed)
    assert config.daily_model_snapshot_retention_after_days == 0
    assert config.model_snapshot_retention_days == 0


class _Body(Mapping[str, Any]):
    """A read-only mapping like kopf's Body: model_validate gets `dict(body)`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_whole_object_with_status_parses() -> None:
    body = {
        "apiVersion": "ml.mljob.dev/v1alpha1",
        "kind": "MLJob",
        "metadata": {
            "name": "event-rate",
            "namespace": "ns",
            "generation": 3,
            "annotations": {FORCE_CLOSE_ANNOTATION: "2026-01-01T00:00:00Z"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": spec(state="closed"),
        "status": {
            "state": "closing",
            "closed": False,
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Closing",
                    "status": "True",
                    "reason": "TimedOut",
                    "message": "close took longer than 30m",
                    "lastTransitionTime": "2026-01-01T00:30:00Z",
                    "observedGeneration": 3,
                }
            ],
            "lastClose": {
                "closeId": "close-1",
                "startedAt": "2026-01-01T00:00:00Z",
                "steps": {"flush": "2026-01-01T00:00:01Z"},
                "recordsFlushed": 12,
            },
            "lastHandledForceClose": "earlier",
            "dataCounts": {"inputRecordCount": 100, "latestRecordTimestamp": 1767225600000},
            "modelSizeStats": {"modelBytes": 2048, "memoryStatus": "soft_limit"},
            "unknownField": "pruned by the apiserver anyway",
        },
    }
    job = MLJob.model_validate(dict(_Body(body)))
    assert job.metadata.generation == 3
    assert job.force_close_value == "2026-01-01T00:00:00Z"
    assert job.spec.state is DesiredState.CLOSED
    assert job.status.state is JobState.CLOSING
    closing = job.status.condition(ConditionType.CLOSING)
    assert closing is not None
    assert closing.reason == Reason.TIMED_OUT
    assert closing.status is ConditionStatus.TRUE
    assert job.status.last_close is not None
    assert CloseStep.FLUSH in job.status.last_close.steps
    assert job.status.model_size_stats.memory_status is MemoryStatus.SOFT_LIMIT
    assert job.status.data_counts.input_record_count == 100


def test_empty_status_and_status_wire_form() -> None:
    status = MLJobStatus.model_validate({})
    assert status.state is None
    assert status.closed is False
    assert status.conditions == []
    status.conditions.append(
        Condition(
            type=ConditionType.READY,
            status=ConditionStatus.TRUE,
            reason=Reason.OPENED,
            message="",
            last_transition_time=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    wire = status.to_json_dict()
    assert wire["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Opened",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    assert "state" not in wire
    assert wire["dataCounts"]["inputRecordCount"] == 0


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError, match="reason"):
        MLJobStatus.model_validate(
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "not a reason",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            }
        )


def test_fixed_vocabulary() -> None:
    assert FORCE_CLOSE_ANNOTATION == "ml.mljob.dev/force-close"
    assert {t.value for t in ConditionType} == {"Ready", "Opened", "Closing", "Closed", "Failed"}
    assert Reason.TIMED_OUT.value == "TimedOut"
    assert {s.value for s in JobState} == {"opening", "opened", "closing", "closed", "failed"}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SAMPLES.glob("*.yaml") if p.name != "kustomization.yaml"),
    ids=lambda p: p.name,
)
def test_samples_parse(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        job = MLJob.model_validate(doc)
        assert job.metadata.name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"closeTimeout": "99999999999d"}, "closeTimeout"),
        ({"closeTimeout": "31d"}, "longer than the maximum 30d"),
        ({"closeTimeout": "999999d999999d999999d"}, "longer than 3650d"),
        ({"modelSnapshotRetentionDays": 9_000_000_000_000_000_000}, "less than or equal"),
        ({"dailyModelSnapshotRetentionAfterDays": 36_501}, "less than or equal"),
        ({"resultsRetentionDays": 36_501}, "less than or equal"),
        ({"analysisLimits": {"modelMemoryLimit": "2Ti"}}, "maximum 1Ti"),
        ({"analysisLimits": {"modelMemoryLimit": "99999999999999999999"}}, "modelMemoryLimit"),
        (
            {"analysisConfig": {"bucketSpan": "8d", "detectors": [{"function": "count"}]}},
            "maximum 7d",
        ),
        (
            {"analysisConfig": {"latency": "30d", "detectors": [{"function": "count"}]}},
            "maximum 7d",
        ),
        (
            {"datafeed": {"http": {"url": "http://x"}, "queryDelay": "8d"}},
            "maximum 7d",
        ),
        (
            {"datafeed": {"http": {"url": "http://x"}, "chunkSpan": "366d"}},
            "maximum 365d",
        ),
    ],
)
def test_every_number_a_user_types_has_a_bound(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MLJobSpec.model_validate(spec(**overrides))


def test_bounds_admit_their_maximum() -> None:
    parsed = MLJobSpec.model_validate(
        spec(
            closeTimeout="30d",
            modelSnapshotRetentionDays=36_500,
            analysisLimits={"modelMemoryLimit": "1Ti"},
            analysisConfig={
                "bucketSpan": "7d",
                "latency": "7d",
                "detectors": [{"function": "count"}],
            },
        )
    )
    assert parse_duration(parsed.close_timeout) == timedelta(days=30)


def test_daily_retention_is_capped_at_the_snapshot_retention() -> None:
    parsed = MLJobSpec.model_validate(
        spec(modelSnapshotRetentionDays=0, dailyModelSnapshotRetentionAfterDays=5)
    )
    assert parsed.effective_daily_retention_after_days == 0
    config = engine_config(parsed)
    assert config.daily_model_snapshot_retention_after_days == 0
    assert config.model_snapshot_retention_days == 0
