"""The in-memory analysis of one job: counts, open buckets, models and normalisers.

It is deterministic and does no I/O: the same sequence of operations (data bodies,
flushes, finalise) from the same state always yields the same state and results. The job
layer relies on that to replay its write-ahead log after a restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mljob_operator.engine import ingest
from mljob_operator.engine.buckets import (
    INFLUENCER_VALUES_KEPT,
    BucketAgg,
    group,
    metric_values,
)
from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.errors import DataFormatError
from mljob_operator.engine.functions import FUNCTIONS, Metric
from mljob_operator.engine.influencers import influencer_results
from mljob_operator.engine.memory import label_bytes, memory_status, series_bytes
from mljob_operator.engine.model import SeriesModel
from mljob_operator.engine.model_plot import MODEL_PLOT_SERIES_PER_BUCKET, band
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    Influence,
    InfluencerResult,
    ModelPlotResult,
    ModelSizeStats,
    RecordResult,
)
from mljob_operator.engine.scoring import (
    NOISE_RAW,
    Normaliser,
    ScoreScale,
    continued,
    with_feature,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

RECORD_RAW = 2.0  # records are kept for p <= 0.01
_NO_TIME = -(2**62)
MAX_AHEAD_BUCKETS = 100_000
"""How far past the job's latest time (in bucket spans) a record, advanceTime or skipTime
may reach: each bucket passed gets a result, so a date typed as 9999 must not stall a job.
A month of 1-minute buckets (43,200) fits."""
QUIET_BUCKETS_MODELLED = 1_000
"""In a run of buckets without records, count and sum detectors (whose empty bucket is a
real zero) model at most this many zeros; by then a lasting zero is the model's new level
(or an anomaly already reported), and the rest of the run is recorded with score 0 in one
step. Functions with nothing to model in an empty bucket skip the whole run in one step."""


def _is_none(values: list[Any]) -> npt.NDArray[np.bool_]:
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


@dataclass
class Output:
    buckets: list[BucketResult] = field(default_factory=list)
    records: list[RecordResult] = field(default_factory=list)
    model_plot: list[ModelPlotResult] = field(default_factory=list)
    influencers: list[InfluencerResult] = field(default_factory=list)
    interim: bool = False
    rescale: tuple[ScoreScale, ScoreScale] | None = None
    rescale_since_ms: int = 0
    finalized: int = 0


class LabelTable:
    """Interns the values of one field; ids are dense and stable across restarts."""

    def __init__(self, labels: list[str | None] | None = None) -> None:
        self.labels: list[str | None] = []
        self.by_label: dict[str | None, int] = {}
        self.ids: dict[Any, int] = {}
        self.nbytes = 0
        for lab in labels or []:
            self._add(lab)

    def _add(self, lab: str | None) -> int:
        j = self.by_label.get(lab)
        if j is None:
            j = len(self.labels)
            self.labels.append(lab)
            self.by_label[lab] = j
            self.ids[lab] = j
            self.nbytes += label_bytes(lab)
        return j

    def ids_for(self, values: list[Any], may_add: Callable[[], bool] = lambda: True) -> I64:
        """The ids of `values`; unknown ones are interned, or stay -1 when `may_add()` says
        no (a model at its hard memory limit stores nothing of a series it cannot model)."""
        get = self.ids.get
        try:
            out = [get(v, -1) for v in values]
        except TypeError:
            out = [-1] * len(values)
        if -1 in out and may_add():
            for i, v in enumerate(values):
                if out[i] == -1:
                    out[i] = self._add(ingest.label(v))
                    with contextlib.suppress(TypeError):
                        self.ids[v] = out[i]
        return np.array(out, dtype=np.int64)


class DetectorState:
    def __init__(self, index: int, cfg: DetectorConfig, job: JobConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.spec = FUNCTIONS[cfg.function]
        self.model = SeriesModel(
            job.bucket_span_s, count_like=self.spec.count_like, side=self.spec.side
        )
        self.keys: dict[int, int] = {}
        self.pid: list[int] = []
        self.bid: list[int] = []
        self.open: dict[int, BucketAgg] = {}
        self.extra_influencers = [
            f for f in job.influencers if f not in (cfg.by_field_name, cfg.partition_field_name)
        ]

    def agg(self, bucket: int) -> BucketAgg:
        found = self.open.get(bucket)
        if found is None:
            found = self.open[bucket] = BucketAgg()
        return found

    def values(self, agg: BucketAgg | None) -> tuple[I64, F64]:
        if agg is None:
            idx: I64 = np.zeros(0, dtype=np.int64)
            x: F64 = np.zeros(0, dtype=np.float64)
        else:
            idx, x = metric_values(agg, self.spec.metric)
        if self.spec.fill_empty and self.model.size > len(idx):
            full = np.zeros(self.model.size, dtype=np.float64)
            full[idx] = x
            return np.arange(self.model.size, dtype=np.int64), full
        return idx, x


def _continued(b: int, top: float, last: tuple[int, float] | None) -> float:
    """Bucket b's largest raw score `top`, less its overlap with the bucket just before it
    (`last`: the last bucket finalised and its largest raw score)."""
    return continued(top, last[1] if last is not None and last[0] == b - 1 else 0.0)


def _observed(
    b: int,
    t_ms: int,
    raws: list[F64],
    last: tuple[int, float] | None,
    bucket_norm: Normaliser,
    record_norm: Normaliser,
) -> tuple[float, tuple[int, float]]:
    """Bucket b's raw scores (one array a detector) observed on a pair of normalisers: the
    bucket's discounted episode value, and (b, its largest raw score) for the next bucket."""
    every = np.concatenate(raws) if raws else np.zeros(0, dtype=np.float64)
    top = float(every.max()) if len(every) else 0.0
    episode = _continued(b, top, last)
    discounted = bucket_norm.discounted(episode)
    bucket_norm.observe(t_ms, np.array([episode]))
    record_norm.observe(t_ms, every)
    return discounted, (b, top)


class Analyzer:
    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.span_ms = config.bucket_span_ms
        self.counts = DataCounts()
        self.time_ms: int | None = None
        self.final_end: int | None = None
        self.labels: dict[str, LabelTable] = {}
        self.detectors = [DetectorState(i, d, config) for i, d in enumerate(config.detectors)]
        self.open_events: dict[int, int] = {}
        window = config.renormalization_window_ms
        self.bucket_norm = Normaliser(window, self.span_ms, recent=True)
        self.record_norm = Normaliser(window, self.span_ms)
        self.feature_norm = Normaliser(window, self.span_ms, recent=True)
        """The models' multi-bucket feature on a scale of its own: each bucket's largest
        feature raw score, with the same episode, repeat and recent discounts as buckets."""
        self.record_feature_norm = Normaliser(window, self.span_ms)
        """Every series' feature raw score, for records (undiscounted, as records)."""
        self.applied = (self.bucket_norm.scale(), self.record_norm.scale())
        self.failed_buckets: set[int] = set()
        self.allocation_failures = 0
        self.peak_bytes = 0
        self.model_bytes = 0
        self.quiet_run = 0
        """Buckets without records finalised in a row (counted up to
        QUIET_BUCKETS_MODELLED)."""
        self.last_top: tuple[int, float] | None = None
        """The last bucket finalised through the models and its largest raw score (before
        any discount): the bucket after it is scored on what it adds (`continued`)."""
        self.last_feature_top: tuple[int, float] | None = None
        """The same for the feature's largest raw score."""
        self.model_plot = config.model_plot_enabled
        """Record model plot results; the operator may switch it on an open job (it
        changes no model state, only what the next buckets write)."""

    # ---- bookkeeping -------------------------------------------------------------------
    def table(self, name: str) -> LabelTable:
        found = self.labels.get(name)
        if found is None:
            found = self.labels[name] = LabelTable()
        return found

    def _static_bytes(self) -> int:
        total = sum(t.nbytes for t in self.labels.values())
        for d in self.detectors:
            total += d.model.size * series_bytes(d.model.columns)
        return total

    def refresh_memory(self) -> None:
        open_bytes = sum(a.nbytes() for d in self.detectors for a in d.open.values())
        self.model_bytes = self._static_bytes() + open_bytes
        self.peak_bytes = max(self.peak_bytes, self.model_bytes)

    def model_size_stats(self) -> ModelSizeStats:
        by_fields = {d.cfg.by_field_name for d in self.detectors if d.cfg.by_field_name}
        part_fields = {
            d.cfg.partition_field_name for d in self.detectors if d.cfg.partition_field_name
        }
        limit = self.config.model_memory_limit_bytes
        return ModelSizeStats(
            model_bytes=self.model_bytes,
            peak_model_bytes=self.peak_bytes,
            total_by_field_count=sum(len(self.table(f).labels) for f in sorted(by_fields)),
            total_partition_field_count=sum(len(self.table(f).labels) for f in sorted(part_fields)),
            bucket_allocation_failures_count=self.allocation_failures,
            memory_status=memory_status(self.model_bytes, limit),
            model_bytes_memory_limit=limit,
        )

    def pending_records(self) -> int:
        return sum(self.open_events.values())

    @property
    def last_finalized_end_ms(self) -> int | None:
        return None if self.final_end is None else self.final_end * self.span_ms

    # ---- intake ------------------------------------------------------------------------
    def ingest(self, records: list[Any], nbytes: int, received_ms: int) -> Output:
        c = self.counts
        n = len(records)
        c.input_record_count += n
        c.input_bytes += nbytes
        c.last_data_time = received_ms
        out = Output()
        if n:
            self._ingest(records)
        if n and self.time_ms is not None:
            end = (self.time_ms - self.config.latency_ms) // self.span_ms
            self._finalise_until(end, out)
        self._close_op(out)
        return out

    def _ingest(self, records: list[Any]) -> None:
        c = self.counts
        cfg = self.config
        times, valid = ingest.parse_times(ingest.column(records, cfg.time_field), cfg.time_format)
        if not valid.any():
            c.invalid_date_count += len(records)
            return
        reference = self.time_ms if self.time_ms is not None else int(times[valid].min())
        valid &= times <= reference + MAX_AHEAD_BUCKETS * self.span_ms
        n_valid = int(valid.sum())
        c.invalid_date_count += len(records) - n_valid
        if n_valid == 0:
            return
        pos = np.flatnonzero(valid) if n_valid < len(records) else None
        t = times if pos is None else times[pos]
        base = self.time_ms if self.time_ms is not None else _NO_TIME
        prev = np.maximum.accumulate(np.concatenate(([base], t)))[:-1]
        threshold = prev - cfg.latency_ms
        if self.final_end is not None:
            threshold = np.maximum(threshold, self.final_end * self.span_ms)
        ok = t >= threshold
        self.time_ms = max(base, int(t.max()))
        n_ok = int(ok.sum())
        c.out_of_order_timestamp_count += len(t) - n_ok
        if n_ok == 0:
            return
        if n_ok < len(t):
            pos = (np.arange(len(records)) if pos is None else pos)[ok]
            t = t[ok]
        recs = records if pos is None else [records[i] for i in pos.tolist()]
        c.processed_record_count += n_ok
        lo, hi = int(t.min()), int(t.max())
        c.earliest_record_timestamp = (
            lo if c.earliest_record_timestamp is None else min(lo, c.earliest_record_timestamp)
        )
        c.latest_record_timestamp = (
            hi if c.latest_record_timestamp is None else max(hi, c.latest_record_timestamp)
        )
        bucket = t // self.span_ms
        self._accumulate(recs, bucket)

    def _accumulate(self, recs: list[Any], bucket: I64) -> None:  # noqa: C901, PLR0912, PLR0915 (the ingest hot path, one pass over the batch)
        raw: dict[str, list[Any]] = {}
        numeric: dict[str, F64] = {}

        def col(name: str) -> list[Any]:
            if name not in raw:
                raw[name] = ingest.column(recs, name)
            return raw[name]

        def num(name: str) -> F64:
            if name not in numeric:
                numeric[name] = ingest.to_value(col(name))
            return numeric[name]

        missing = np.zeros(len(recs), dtype=bool)
        for d in self.detectors:
            cfg = d.cfg
            if cfg.field_name:
                if d.spec.metric is Metric.DISTINCT:
                    missing |= _is_none(col(cfg.field_name))
                else:
                    missing |= np.isnan(num(cfg.field_name))
            for name in (cfg.by_field_name, cfg.partition_field_name):
                if name:
                    missing |= _is_none(col(name))
        self.counts.missing_field_count += int(missing.sum())

        ub, cnt = np.unique(bucket, return_counts=True)
        for b, k in zip(ub.tolist(), cnt.tolist(), strict=True):
            self.open_events[b] = self.open_events.get(b, 0) + k

        ids: dict[str, I64] = {}
        for name in {
            n
            for d in self.detectors
            for n in (d.cfg.by_field_name, d.cfg.partition_field_name)
            if n
        }:
            ids[name] = self.table(name).ids_for(col(name), self._may_add_series)
        for d in self.detectors:
            series = self._series(d, ids, bucket)
            keep = series >= 0
            values: F64 | None = None
            metric = d.spec.metric
            if metric not in (Metric.COUNT, Metric.DISTINCT):
                values = num(d.cfg.field_name or "")
                keep &= ~np.isnan(values)
            sel = None if keep.all() else np.flatnonzero(keep)
            b_sel = bucket if sel is None else bucket[sel]
            s_sel = series if sel is None else series[sel]
            if metric is Metric.DISTINCT:
                vals = col(d.cfg.field_name or "")
                if sel is not None:
                    vals = [vals[i] for i in sel.tolist()]
                for b, s, v in zip(b_sel.tolist(), s_sel.tolist(), vals, strict=True):
                    if v is not None:
                        d.agg(b).distinct.setdefault(s, set()).add(ingest.label(v))
            elif metric is Metric.MEDIAN:
                assert values is not None
                v_sel = values if sel is None else values[sel]
                for b in np.unique(b_sel).tolist():
                    in_b = b_sel == b
                    d.agg(b).samples.append((s_sel[in_b], v_sel[in_b]))
            else:
                m_sel = None if values is None else (values if sel is None else values[sel])
                for b, chunk in group(b_sel, s_sel, m_sel):
                    d.agg(b).chunks.append(chunk)
            for name in d.extra_influencers:
                vals = col(name)
                if sel is not None:
                    vals = [vals[i] for i in sel.tolist()]
                for b, s, v in zip(b_sel.tolist(), s_sel.tolist(), vals, strict=True):
                    if v is not None:
                        bucket_map = d.agg(b).influencers.setdefault(name, {})
                        bucket_map.setdefault(s, set()).add(ingest.label(v) or "")

    def _series(self, d: DetectorState, ids: dict[str, I64], bucket: I64) -> I64:
        n = len(bucket)
        pf, bf = d.cfg.partition_field_name, d.cfg.by_field_name
        pid = ids[pf] if pf else np.zeros(n, dtype=np.int64)
        bid = ids[bf] if bf else np.zeros(n, dtype=np.int64)
        unknown = (pid < 0) | (bid < 0)
        key = np.where(unknown, -1, (pid << 32) | bid)
        if not pf and not bf:
            uniq, inv = np.zeros(1, dtype=np.int64), None
        else:
            uniq, inv = np.unique(key, return_inverse=True)
        mapped = []
        refused = []
        for k in uniq.tolist():
            s = -1 if k < 0 else d.keys.get(k)
            if s is None:
                s = self._allocate(d, k)
            if s < 0:
                refused.append(k)
            mapped.append(s)
        series = np.array(mapped, dtype=np.int64)
        out = np.full(n, series[0], dtype=np.int64) if inv is None else series[inv]
        if refused:
            lost = np.isin(key, np.array(refused, dtype=np.int64))
            self.failed_buckets.update(np.unique(bucket[lost]).tolist())
        return out

    def _may_add_series(self) -> bool:
        return not self._at_hard_limit()

    def _at_hard_limit(self) -> bool:
        limit = self.config.model_memory_limit_bytes
        if limit is None:
            return False
        self.refresh_memory()
        return memory_status(self.model_bytes, limit) == "hard_limit"

    def _allocate(self, d: DetectorState, key: int) -> int:
        if self._at_hard_limit():
            return -1
        s = d.model.size
        d.model.add_series(1)
        d.keys[key] = s
        d.pid.append(key >> 32)
        d.bid.append(key & 0xFFFFFFFF)
        return s

    # ---- flush and finalisation ---------------------------------------------------------
    def advance(self, advance_ms: int | None, skip_ms: int | None) -> Output:
        self._check_advance(advance_ms, skip_ms)
        out = Output()
        if skip_ms is not None:
            skip_b = skip_ms // self.span_ms
            for d in self.detectors:
                for b in [b for b in d.open if b < skip_b]:
                    del d.open[b]
            for b in [b for b in self.open_events if b < skip_b]:
                del self.open_events[b]
            self.failed_buckets = {b for b in self.failed_buckets if b >= skip_b}
            if self.final_end is not None:
                self.final_end = max(self.final_end, skip_b)
            elif not self.open_events:
                self.final_end = skip_b
            self.time_ms = skip_ms if self.time_ms is None else max(self.time_ms, skip_ms)
        if advance_ms is not None:
            end = advance_ms // self.span_ms
            self.time_ms = advance_ms if self.time_ms is None else max(self.time_ms, advance_ms)
            if self.final_end is None and not self.open_events:
                self.final_end = end
            self._finalise_until(end, out)
        self._close_op(out)
        return out

    def _check_advance(self, advance_ms: int | None, skip_ms: int | None) -> None:
        """Every bucket an advance passes is analysed, and a skip makes every earlier
        record out of order: neither may reach further than a record could."""
        reference = self._reference_bucket()
        for name, ms in (("skipTime", skip_ms), ("advanceTime", advance_ms)):
            if ms is None:
                continue
            if reference is None:
                reference = ms // self.span_ms
                continue
            gap = ms // self.span_ms - reference
            if gap > MAX_AHEAD_BUCKETS:
                raise DataFormatError(
                    f"{name} is {gap} bucket spans past the job's latest time; at most "
                    f"{MAX_AHEAD_BUCKETS} are allowed at once"
                    + (" (use skipTime to jump a gap)" if name == "advanceTime" else "")
                )
            if name == "skipTime":
                reference = max(reference, ms // self.span_ms)

    def _reference_bucket(self) -> int | None:
        """The job's latest bucket: the last final one or the latest record's."""
        known = [] if self.final_end is None else [self.final_end]
        if self.time_ms is not None:
            known.append(self.time_ms // self.span_ms)
        return max(known, default=None)

    def finalize_all(self) -> Output:
        out = Output()
        if self.open_events:
            self._finalise_until(max(self.open_events) + 1, out)
        self._close_op(out)
        return out

    def interim(self) -> Output:
        out = Output(interim=True)
        bscale, rscale = self.applied
        for b in sorted(self.open_events):
            t_ms = b * self.span_ms
            raws, fraws, hot = [], [], []
            plotted = 0
            first_record = len(out.records)
            for d in self.detectors:
                agg = d.open.get(b)
                idx, x = d.values(agg)
                if not len(idx):
                    continue
                if self.model_plot:
                    plotted += self._plot(out, d, t_ms, idx, x, plotted, interim=True)
                p, raw, typical, z = d.model.score(idx, x, t_ms // 1000)
                fraw = d.model.feature_raw(idx, z)
                raws.append(raw)
                fraws.append(fraw)
                hot.append((d, agg, idx, x, p, raw, typical, fraw))
            top = self.bucket_norm.discounted(
                _continued(
                    b, float(max((r.max() for r in raws if len(r)), default=0.0)), self.last_top
                )
            )
            ftop = float(max((r.max() for r in fraws if len(r)), default=0.0))
            fepisode = _continued(b, ftop, self.last_feature_top)
            score, top = self._bucket_score(bscale, top, self.feature_norm.discounted(fepisode))
            out.buckets.append(
                BucketResult(
                    t_ms, self.config.bucket_span_s, score, score, top, True, self.open_events[b]
                )
            )
            fscale = self.record_feature_norm.scale()
            for d, agg, idx, x, p, raw, typical, fraw in hot:
                self._records(
                    out, d, agg, t_ms, idx, x, p, raw, typical, fraw, rscale, fscale, interim=True
                )
            out.influencers.extend(influencer_results(out.records[first_record:], rscale))
        return out

    def _finalise_until(self, end: int, out: Output) -> None:
        start = self.final_end
        if start is None:
            if not self.open_events:
                return
            start = min(self.open_events)
        b = start
        for busy in self._busy_buckets(start, end):
            self._finalise_quiet(b, busy, out)
            self._finalise_bucket(busy, out)
            self.quiet_run = 0
            b = busy + 1
        self._finalise_quiet(b, end, out)
        if end > start:
            self.final_end = end
            out.finalized += end - start

    def _busy_buckets(self, start: int, end: int) -> list[int]:
        """Buckets in [start, end) holding records, open aggregates or a failed allocation."""
        keys = set(self.open_events).union(self.failed_buckets, *(d.open for d in self.detectors))
        return sorted(b for b in keys if start <= b < end)

    def _finalise_quiet(self, start: int, end: int, out: Output) -> None:
        """Buckets [start, end) have no records: model the zeros that a count or sum
        detector must still see, then record the rest of the run in one step."""
        if end <= start:
            return
        zero_filled = any(d.spec.fill_empty and d.model.size for d in self.detectors)
        modelled = min(end - start, QUIET_BUCKETS_MODELLED - self.quiet_run) if zero_filled else 0
        for b in range(start, start + modelled):
            self._finalise_bucket(b, out)
        self.quiet_run = min(self.quiet_run + end - start, QUIET_BUCKETS_MODELLED)
        rest = range(start + modelled, end)
        if not rest:
            return
        last_ms = (end - 1) * self.span_ms
        self.bucket_norm.observe_quiet(len(rest), last_ms, zero_top=True)
        self.record_norm.observe_quiet(len(rest), last_ms, zero_top=False)
        self.feature_norm.observe_quiet(len(rest), last_ms, zero_top=True)
        self.record_feature_norm.observe_quiet(len(rest), last_ms, zero_top=False)
        self.counts.bucket_count += len(rest)
        self.counts.empty_bucket_count += len(rest)
        score = self.bucket_norm.scale().score_one(0.0)
        span_s = self.config.bucket_span_s
        out.buckets.extend(
            BucketResult(b * self.span_ms, span_s, score, score, 0.0, False, 0) for b in rest
        )

    def _finalise_bucket(self, b: int, out: Output) -> None:
        t_ms = b * self.span_ms
        c = self.counts
        events = self.open_events.pop(b, 0)
        c.bucket_count += 1
        if events == 0:
            c.empty_bucket_count += 1
        if b in self.failed_buckets:
            self.failed_buckets.discard(b)
            self.allocation_failures += 1
        raws: list[F64] = []
        fraws: list[F64] = []
        hot = []
        plotted = 0
        for d in self.detectors:
            agg = d.open.pop(b, None)
            idx, x = d.values(agg)
            if not len(idx):
                continue
            if self.model_plot:
                plotted += self._plot(out, d, t_ms, idx, x, plotted, interim=False)
            p, raw, typical, fraw = d.model.step(idx, x, t_ms // 1000)
            raws.append(raw)
            fraws.append(fraw)
            if (raw >= RECORD_RAW).any() or (fraw >= RECORD_RAW).any():
                hot.append((d, agg, idx, x, p, raw, typical, fraw))
        discounted, self.last_top = _observed(
            b, t_ms, raws, self.last_top, self.bucket_norm, self.record_norm
        )
        fdiscounted, self.last_feature_top = _observed(
            b, t_ms, fraws, self.last_feature_top, self.feature_norm, self.record_feature_norm
        )
        bscale, rscale = self.bucket_norm.scale(), self.record_norm.scale()
        score, top = self._bucket_score(bscale, discounted, fdiscounted)
        out.buckets.append(
            BucketResult(t_ms, self.config.bucket_span_s, score, score, top, False, events)
        )
        first_record = len(out.records)
        fscale = self.record_feature_norm.scale() if hot else rscale
        for d, agg, idx, x, p, raw, typical, fraw in hot:
            self._records(
                out, d, agg, t_ms, idx, x, p, raw, typical, fraw, rscale, fscale, interim=False
            )
        out.influencers.extend(influencer_results(out.records[first_record:], rscale))

    def _bucket_score(
        self, bscale: ScoreScale, raw: float, feature_raw: float
    ) -> tuple[float, float]:
        """A bucket's score and stored raw score from its discounted raw score and its
        feature's discounted raw score (`with_feature`; a feature raw score at or below
        NOISE_RAW scores 0 on any scale, so its scale is not worked out)."""
        score = bscale.score_one(raw)
        if feature_raw <= NOISE_RAW:
            return score, raw
        fscore = self.feature_norm.scale().score(np.array([feature_raw]))
        scores, raws = with_feature(bscale, np.array([raw]), np.array([score]), fscore)
        return float(scores[0]), float(raws[0])

    def _plot(
        self,
        out: Output,
        d: DetectorState,
        t_ms: int,
        idx: I64,
        x: F64,
        plotted: int,
        *,
        interim: bool,
    ) -> int:
        """Model plot rows for the first series of the bucket that still fit its cap,
        from the model as it is before it learns the bucket; returns how many."""
        room = MODEL_PLOT_SERIES_PER_BUCKET - plotted
        if room <= 0:
            return 0
        idx, x = idx[:room], x[:room]
        median, lower, upper = band(d.model, idx, x, t_ms // 1000, non_negative=d.spec.count_like)
        cfg, split_values = d.cfg, self._split_values(d)
        for j, s in enumerate(idx.tolist()):
            pval, bval = split_values(s)
            out.model_plot.append(
                ModelPlotResult(
                    timestamp=t_ms,
                    bucket_span=self.config.bucket_span_s,
                    detector_index=d.index,
                    partition_field_name=cfg.partition_field_name,
                    partition_field_value=pval,
                    by_field_name=cfg.by_field_name,
                    by_field_value=bval,
                    actual=float(x[j]),
                    model_median=float(median[j]),
                    model_lower=float(lower[j]),
                    model_upper=float(upper[j]),
                    is_interim=interim,
                )
            )
        return len(idx)

    def _split_values(self, d: DetectorState) -> Callable[[int], tuple[str | None, str | None]]:
        """The partition and by values of a detector's series, by series index."""
        cfg = d.cfg
        ptab = self.table(cfg.partition_field_name) if cfg.partition_field_name else None
        btab = self.table(cfg.by_field_name) if cfg.by_field_name else None

        def split_values(s: int) -> tuple[str | None, str | None]:
            return (
                ptab.labels[d.pid[s]] if ptab else None,
                btab.labels[d.bid[s]] if btab else None,
            )

        return split_values

    def _records(  # noqa: PLR0913, PLR0917 (the per-bucket arrays of one detector)
        self,
        out: Output,
        d: DetectorState,
        agg: BucketAgg | None,
        t_ms: int,
        idx: I64,
        x: F64,
        p: F64,
        raw: F64,
        typical: F64,
        fraw: F64,
        scale: ScoreScale,
        fscale: ScoreScale,
        *,
        interim: bool,
    ) -> None:
        """Records of the series whose raw score or feature raw score reaches RECORD_RAW,
        each scored max(its score, FEATURE_WEIGHT * its feature's score)."""
        cfg = d.cfg
        pick = np.flatnonzero((raw >= RECORD_RAW) | (fraw >= RECORD_RAW))
        if not len(pick):
            return
        scores, stored = with_feature(
            scale, raw[pick], scale.score(raw[pick]), fscale.score(fraw[pick])
        )
        split_values = self._split_values(d)
        for j, score, raw_j in zip(pick.tolist(), scores.tolist(), stored.tolist(), strict=True):
            s = int(idx[j])
            pval, bval = split_values(s)
            influences = []
            for name in self.config.influencers:
                if name == cfg.partition_field_name:
                    found = [pval] if pval is not None else []
                elif name == cfg.by_field_name:
                    found = [bval] if bval is not None else []
                else:
                    vals = agg.influencers.get(name, {}).get(s, set()) if agg else set()
                    found = sorted(vals)[:INFLUENCER_VALUES_KEPT]
                if found:
                    influences.append(Influence(name, tuple(v for v in found if v is not None)))
            out.records.append(
                RecordResult(
                    timestamp=t_ms,
                    bucket_span=self.config.bucket_span_s,
                    detector_index=d.index,
                    function=cfg.function,
                    field_name=cfg.field_name,
                    by_field_name=cfg.by_field_name,
                    by_field_value=bval,
                    partition_field_name=cfg.partition_field_name,
                    partition_field_value=pval,
                    probability=float(p[j]),
                    raw_score=raw_j,
                    record_score=score,
                    initial_record_score=score,
                    actual=(float(x[j]),),
                    typical=(float(typical[j]),),
                    is_interim=interim,
                    influencers=tuple(influences),
                )
            )

    def _close_op(self, out: Output) -> None:
        self.refresh_memory()
        scales = (self.bucket_norm.scale(), self.record_norm.scale())
        if scales != self.applied and self.final_end is not None:
            out.rescale = scales
            out.rescale_since_ms = (
                self.final_end * self.span_ms - self.config.renormalization_window_ms
            )
            self.applied = scales
