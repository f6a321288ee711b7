"""The engine is total: whatever bodies, values, times, splits and flushes a client sends,
for every detector function, it either takes them or refuses them with a documented
client error (`DataFormatError`, a 400), every result it writes is finite, and replaying
its log (from nothing, or from a snapshot taken on the way) rebuilds exactly the model
that produced those results.

The number of examples comes from the hypothesis profile: `ci` (bounded, in `make test`)
or `fuzz` (`make fuzz`, many more); see tests/conftest.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mljob_operator.engine import DataFormatError, DetectorConfig, Job, JobConfig, snapshots
from mljob_operator.engine.functions import FUNCTIONS
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, StoreBackend

SPAN = 60
JOB = "total"

hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 1e-320, 1e49, -1e49, 1e51, 1e200, 1.7976931348623157e308]),
)
values = st.one_of(
    hostile_numbers,
    st.none(),
    st.text(max_size=8),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.just({"nested": 1}),
)
times = st.one_of(
    st.integers(min_value=-5 * SPAN, max_value=300 * SPAN).map(lambda s: T0 + s),
    st.floats(min_value=T0 - 600, max_value=T0 + 18_000, allow_nan=False),
    st.sampled_from([253402300799, -1, 0, 2**63, -(2**63), T0 + 10**9]),
    st.text(max_size=6),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        record["time"] = draw(times)
    if draw(st.integers(0, 9)):
        record["v"] = draw(values)
    if draw(st.booleans()):
        record["host"] = draw(st.sampled_from(["a", "b", "c", "", 7, None]))
    return record


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    batch = draw(st.lists(records(), max_size=12))
    shape = draw(st.sampled_from(["ndjson", "array", "garbage", "empty"]))
    # stdlib json: integers past 64 bits and NaN/Infinity literals are hostile input too
    if shape == "ndjson":
        return b"\n".join(json.dumps(r).encode() for r in batch)
    if shape == "array":
        return json.dumps(batch).encode()
    if shape == "garbage":
        return draw(st.binary(max_size=40))
    return b""


@dataclass(frozen=True)
class Post:
    body: bytes


@dataclass(frozen=True)
class Flush:
    interim: bool
    advance_s: int | None
    skip_s: int | None


@dataclass(frozen=True)
class Persist:
    pass


@dataclass(frozen=True)
class Reopen:
    pass


offsets = st.one_of(
    st.none(),
    st.integers(min_value=-10 * SPAN, max_value=400 * SPAN).map(lambda s: T0 + s),
    st.sampled_from([0, -1, 253402300799, T0 + 2_000 * SPAN]),
)
operations = st.lists(
    st.one_of(
        st.builds(Post, bodies()),
        st.builds(Post, bodies()),
        st.builds(Flush, st.booleans(), offsets, offsets),
        st.just(Persist()),
        st.just(Reopen()),
    ),
    min_size=1,
    max_size=14,
)


@st.composite
def configs(draw: st.DrawFn) -> JobConfig:
    function = draw(st.sampled_from(sorted(FUNCTIONS)))
    spec = FUNCTIONS[function]
    split = draw(st.sampled_from([None, "by", "partition"]))
    detector = DetectorConfig(
        function,
        field_name="v" if spec.needs_field else None,
        by_field_name="host" if split == "by" else None,
        partition_field_name="host" if split == "partition" else None,
    )
    return JobConfig(
        detectors=(detector,),
        bucket_span_s=SPAN,
        latency_s=draw(st.sampled_from([0, 0, 2 * SPAN])),
        background_persist_interval_s=None,
    )


def _results_are_finite(store: Store) -> None:
    _, buckets = store.query_buckets(JOB, ResultsQuery(size=10_000))
    _, found = store.query_records(JOB, ResultsQuery(size=10_000))
    for b in buckets:
        assert math.isfinite(b.anomaly_score), b
        assert 0 <= b.anomaly_score <= 100, b
        assert math.isfinite(b.initial_anomaly_score), b
    for r in found:
        numbers = (r.probability, r.record_score, r.initial_record_score, *r.actual, *r.typical)
        assert all(math.isfinite(n) for n in numbers), r
        assert 0 <= r.probability <= 1, r
        assert 0 <= r.record_score <= 100, r


def _run(job: Job, op: Post | Flush, clock: FakeClock) -> None:
    clock.now += 1
    try:
        if isinstance(op, Post):
            job.post_data(op.body)
        else:
            advance = None if op.advance_s is None else op.advance_s * 1000
            skip = None if op.skip_s is None else op.skip_s * 1000
            job.flush(calc_interim=op.interim, advance_time_ms=advance, skip_time_ms=skip)
    except DataFormatError:
        pass


def _replayed_equals_live(store: Store, job: Job, config: JobConfig) -> Job:
    assert job.analyzer is not None
    live = snapshots.encode(job.analyzer)
    live_counts = job.analyzer.counts.copy()
    job.release()
    again = Job.open(store, JOB, config, clock=job.clock)
    assert again.analyzer is not None
    assert again.analyzer.counts == live_counts
    assert snapshots.encode(again.analyzer) == live, "replaying the log changed the model"
    return again


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=configs(), ops=operations)
def test_any_input_is_taken_or_refused_and_replays_exactly(
    store_backend: StoreBackend, config: JobConfig, ops: list[Post | Flush | Persist | Reopen]
) -> None:
    with TemporaryDirectory() as tmp:
        store = store_backend.open(Path(tmp), "total")
        try:
            clock = FakeClock()
            job = Job.open(store, JOB, config, clock=clock)
            for op in ops:
                if isinstance(op, Persist):
                    job.persist_background_snapshot()
                elif isinstance(op, Reopen):
                    job = _replayed_equals_live(store, job, config)
                else:
                    _run(job, op, clock)
            _results_are_finite(store)
            _replayed_equals_live(store, job, config)
        finally:
            store.close()
