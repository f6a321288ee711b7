"""Job configuration as plain frozen dataclasses.

The operator converts its pydantic CRD models into these, so the engine never depends on
the API layer and can be driven directly by tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from mljob_operator.engine.errors import ConfigError
from mljob_operator.engine.functions import FUNCTIONS

TIME_FORMATS = ("epoch", "epoch_ms", "iso8601")
DAY_S = 86_400


@dataclass(frozen=True)
class DetectorConfig:
    function: str
    field_name: str | None = None
    by_field_name: str | None = None
    partition_field_name: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        spec = FUNCTIONS.get(self.function)
        if spec is None:
            raise ConfigError(f"unknown function {self.function!r}")
        if spec.needs_field and not self.field_name:
            raise ConfigError(f"function {self.function!r} needs a field_name")
        if not spec.needs_field and self.field_name:
            raise ConfigError(f"function {self.function!r} takes no field_name")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    detectors: tuple[DetectorConfig, ...]
    bucket_span_s: int = 300
    latency_s: int = 0
    influencers: tuple[str, ...] = ()
    time_field: str = "time"
    time_format: str = "epoch"
    model_memory_limit_bytes: int | None = None
    model_snapshot_retention_days: int = 10
    daily_model_snapshot_retention_after_days: int = 1
    results_retention_days: int | None = None
    renormalization_window_days: int | None = None
    background_persist_interval_s: int | None = 3 * 3600
    model_plot_enabled: bool = False

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ConfigError("at least one detector is required")
        if self.bucket_span_s <= 0:
            raise ConfigError("bucket_span_s must be positive")
        if self.latency_s < 0:
            raise ConfigError("latency_s must not be negative")
        if self.time_format not in TIME_FORMATS:
            raise ConfigError(f"time_format must be one of {', '.join(TIME_FORMATS)}")
        if self.model_snapshot_retention_days < 0:
            raise ConfigError("model_snapshot_retention_days must not be negative")
        if (
            not 0
            <= self.daily_model_snapshot_retention_after_days
            <= (self.model_snapshot_retention_days)
        ):
            raise ConfigError(
                "daily_model_snapshot_retention_after_days must be between 0 and "
                "model_snapshot_retention_days"
            )
        if self.results_retention_days is not None and self.results_retention_days < 1:
            raise ConfigError("results_retention_days must be at least 1")
        if self.model_memory_limit_bytes is not None and self.model_memory_limit_bytes <= 0:
            raise ConfigError("the model memory limit must be positive")

    @property
    def bucket_span_ms(self) -> int:
        return self.bucket_span_s * 1000

    @property
    def latency_ms(self) -> int:
        return self.latency_s * 1000

    @property
    def renormalization_window_ms(self) -> int:
        """The seed's default: the longer of 30 days or 100 bucket spans."""
        if self.renormalization_window_days is not None:
            return self.renormalization_window_days * DAY_S * 1000
        return max(30 * DAY_S, 100 * self.bucket_span_s) * 1000
