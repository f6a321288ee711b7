"""The per-series online model, vectorised over every series of a detector.

Each series is one row of a float64 matrix: an update count, a level, three exponentially
weighted residual variances (level only, +daily, +daily+weekly), the daily cycle and the
weekly cycle (then the held level, two slower variances and a shift count). With buckets
of 15 minutes or less the daily cycle is a profile of half-hour bins, linearly
interpolated, because operational days are sharp (a load that switches on at nine and off
at six): a few harmonics ring around such steps, the misfit inflates the residual variance
of every bucket, and a missing or flat day then scores no higher than an ordinary
transition. Longer buckets, where a bin would hold a single bucket a day, and models
restored from snapshots taken before the profile, use up to 4 daily harmonics. A bucket
scores every series at once with the state from before that bucket (no look-ahead), then
updates it. The prediction uses a seasonal component only once two full periods were seen
and it cuts the residual variance clearly: that is the periodicity test, and it keeps
noise from being fitted as a cycle. A residual's probability is normal up to TAIL_Z sigmas
and follows a power-law tail beyond, as bursty real data does. Outliers update the model
clipped at three sigma so one spike does not blind it, and a run of same-signed anomalies
is accepted as a level shift. For HOLD_BUCKETS updates after a shift the level from before
it is kept as a second hypothesis: a value is scored against whichever of the two levels
explains it better, so a burst that ends just after it was taken for a shift is not
reported a second time as a drop back to normal; meanwhile the new level learns fast, as
the running mean of the values since the shift. A series that has shifted often (a decayed
count of accepted shifts over about three days) accepts no more shifts until the count
decays: a sharp daily wave is at first learnt as two shifts a day, and a level that
followed it would leave the daily profile nothing to learn.

The weekly cycle is a level per day of the week (seven bins, UTC days), because the
usual weekly pattern is a step (a quieter weekend) that three harmonics misfit every
Saturday and Monday. Whether it is used is decided on two slower residual variances
(a week's memory) with and without it: the scoring variances remember about 50 buckets,
so by a Friday the weekdays that the weekly cycle does not change have made them equal
and the weekend step came unpredicted. Models restored from snapshots taken before the
weekly profile keep their weekly harmonics and fast test.

Last, one column holds a multi-bucket feature: an exponentially weighted mean of the
signed deviation z (clipped at FEATURE_CLIP) over about FEATURE_BUCKETS buckets, learnt
with the bucket. Its raw score is the tail of that mean against its spread for unit noise:
a sustained moderate rise that no single bucket makes extreme stands out in it. The job
scores it on normalisers of its own (`Analyzer`); models restored from snapshots taken
before it go on without it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mljob_operator.engine.functions import Side

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DAY_S = 86_400
WEEK_S = 7 * DAY_S

N, LEVEL, EV0, EV1, EV2, RUN = range(6)
BASE_COLUMNS = 6
HELD, HOLD = range(2)
"""After the seasonal columns: the level from before the last accepted shift, and how many
more updates it is kept as a second hypothesis (0: none)."""
HELD_COLUMNS = 2
WEEK_BINS = 7
SLOW_EV1, SLOW_EV2 = range(2)
"""After the held columns, with the weekly profile: residual variances with a week's
memory, + daily and + daily + weekly, for the weekly periodicity test."""
SLOW_COLUMNS = 2
SHIFTS_COLUMNS = 1
"""Last, with the fast level: the decayed count of accepted level shifts."""
SHIFT_LIMIT = 3.0
SHIFTS_MEMORY_DAYS = 3.0
"""A level shift is accepted only while fewer than SHIFT_LIMIT shifts (decayed over
SHIFTS_MEMORY_DAYS) were: a series that shifts more often than that is following a pattern
of its own. 2.5, 3 and 4 score alike on the benchmark's development folders and find 38 of
40 missing peaks of square daily waves; at 5 the limit comes too late (docs/engine.md)."""

FEATURE_COLUMNS = 1
FEATURE_BUCKETS = 6.0
FEATURE_CLIP = 3.0
"""The feature is f <- f + (clip(z, +-FEATURE_CLIP) - f) / FEATURE_BUCKETS (z 0 while the
series is too young to be scored), and its raw score heavy_tail(f / FEATURE_SD). K = 3 to 8
and C = 2.5 to 4 score 71.5-74.0 on the benchmark's development folders, K = 6 and C = 3
73.1 (docs/engine.md, ninth and tenth passes)."""
FEATURE_SD = math.sqrt(1.0 / (2.0 * FEATURE_BUCKETS - 1.0))
"""The spread of that mean for independent unit-normal z (unclipped)."""

MIN_SCORED_UPDATES = 10
CLIP_SIGMAS = 3.0
SHIFT_RUN = 6
HOLD_BUCKETS = float(SHIFT_RUN)
"""Updates after an accepted level shift during which the level before it still explains
a value: as many as it took to accept the shift. 6 to 36 score alike on the benchmark's
development folders; longer holds move the synthetic corpus (docs/engine.md)."""
SEASONAL_GAIN = (0.85, 0.9)
VARIANCE_RATE = 0.02
MAX_RAW = 300.0
DAILY_BINS = 48
TAIL_Z = 12.0
TAIL_POWER = 48.0
"""Residuals are normal up to TAIL_Z sigmas and heavy-tailed beyond: past it -log10 p grows
with TAIL_POWER * log10(|z| / TAIL_Z) (a power-law tail) instead of with z squared, so
one huge burst does not saturate at MAX_RAW and flatten the scale of every later anomaly."""

_erfc = np.frompyfunc(math.erfc, 1, 1)


def harmonics(period_s: int, bucket_span_s: int, most: int) -> int:
    buckets_per_period = period_s / bucket_span_s
    if buckets_per_period < 4:
        return 0
    return int(min(most, (buckets_per_period - 1) // 2))


def two_sided_tail(z: F64) -> tuple[F64, F64]:
    """P(|Z| >= z) for a standard normal and its -log10, exact far into the tail."""
    z = np.abs(z)
    p = np.empty_like(z)
    small = z <= 2.0
    u = z[small] / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * u)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    p[small] = poly * np.exp(-u * u)
    mid = ~small & (z <= 37.0)
    if mid.any():
        p[mid] = np.asarray(_erfc(z[mid] / math.sqrt(2.0)), dtype=np.float64)
    raw = np.zeros_like(z)
    ok = small | mid
    raw[ok] = -np.log10(np.maximum(p[ok], 1e-320))
    far = ~ok
    if far.any():
        u_far = z[far] / math.sqrt(2.0)
        p[far] = 0.0
        raw[far] = (u_far * u_far + np.log(u_far * math.sqrt(math.pi))) / math.log(10.0)
    np.minimum(raw, MAX_RAW, out=raw)
    np.clip(p, 0.0, 1.0, out=p)
    return p, raw


def heavy_tail(z: F64) -> tuple[F64, F64]:
    """P(|residual| >= |z| sigmas) and its -log10: normal up to TAIL_Z, a power law beyond."""
    az = np.abs(z)
    p, raw = two_sided_tail(np.minimum(az, TAIL_Z))
    far = az > TAIL_Z
    if far.any():
        raw[far] = np.minimum(raw[far] + TAIL_POWER * np.log10(az[far] / TAIL_Z), MAX_RAW)
        p[far] = 10.0 ** -raw[far]
    return p, raw


def daily_bins(bucket_span_s: int) -> int:
    """Bins of the daily profile for this span: 0 (harmonics) unless each bin gets 2+ buckets."""
    return DAILY_BINS if DAY_S / bucket_span_s >= 2 * DAILY_BINS else 0


def _profile_pair(t_s: int, bins: int) -> tuple[int, int, float, float]:
    """The two bins whose centres enclose t, and their linear interpolation weights."""
    phase = (t_s % DAY_S) / DAY_S * bins - 0.5
    j = math.floor(phase)
    f = phase - j
    return j % bins, (j + 1) % bins, 1.0 - f, f


def _basis(t_s: int, period_s: int, k: int) -> F64:
    theta = 2.0 * math.pi * (t_s % period_s) / period_s
    ks = np.arange(1, k + 1, dtype=np.float64) * theta
    return np.concatenate([np.cos(ks), np.sin(ks)])


class SeriesModel:
    """State of all series of one detector; rows are series indices."""

    def __init__(
        self,
        bucket_span_s: int,
        *,
        count_like: bool,
        side: Side,
        bins: int | None = None,
        held: bool = True,
        week: bool = True,
        fast: bool = True,
        feature: bool = True,
    ) -> None:
        self.bucket_span_s = bucket_span_s
        self.count_like = count_like
        self.side = side
        self.bins = daily_bins(bucket_span_s) if bins is None else bins
        self.kd = self.bins // 2 if self.bins else harmonics(DAY_S, bucket_span_s, 4)
        self.kw = harmonics(WEEK_S, bucket_span_s, 3)
        self.week = week
        """False for a model restored from a snapshot taken before the weekly profile: it
        keeps three weekly harmonics and decides on them with the scoring variances."""
        self.wbins = WEEK_BINS if week and self.kw else 0
        self.per_day = DAY_S / bucket_span_s
        self.per_week = WEEK_S / bucket_span_s
        self.level_rate = float(np.clip(1.0 / max(self.per_day, 1e-9), 0.005, 0.05))
        self.daily_rate = 1.0 / (3.0 * self.per_day)
        self.weekly_rate = 1.0 / (2.0 * self.per_week)
        self.d0 = BASE_COLUMNS
        self.w0 = self.d0 + 2 * self.kd
        self.h0 = self.w0 + (self.wbins or 2 * self.kw)
        self.held = held
        """False for a model restored from a snapshot taken before the held level: it goes
        on without it, exactly as it would have."""
        self.fast = fast and held
        """While the level before a shift is held, the new level is the running mean of the
        values since the shift (False: restored from a snapshot taken before that)."""
        self.v0 = self.h0 + (HELD_COLUMNS if held else 0)
        self.f0 = self.v0 + (SLOW_COLUMNS if self.wbins else 0)
        self.m0 = self.f0 + (SHIFTS_COLUMNS if self.fast else 0)
        self.feature = feature
        """False for a model restored from a snapshot taken before the multi-bucket feature:
        its feature raw scores are all 0, so the job scores exactly as it would have."""
        self.columns = self.m0 + (FEATURE_COLUMNS if feature else 0)
        self.shifts_decay = 1.0 - 1.0 / (SHIFTS_MEMORY_DAYS * max(self.per_day, 1.0))
        self.slow_rate = 1.0 / self.per_week
        self.state: F64 = np.zeros((0, self.columns), dtype=np.float64)
        self.size = 0
        self._basis_at = -1
        self._basis: tuple[F64, F64] = (np.zeros(0), np.zeros(0))
        self._pair = (0, 0, 0.0, 0.0)
        self._wday = 0

    def _bases(self, t_s: int) -> tuple[F64, F64]:
        if self._basis_at != t_s:
            if self.bins:
                j0, j1, f0, f1 = _profile_pair(t_s, self.bins)
                self._pair = (self.d0 + j0, self.d0 + j1, f0, f1)
                daily = np.zeros(0)
            else:
                daily = _basis(t_s, DAY_S, self.kd)
            if self.wbins:
                self._wday = self.w0 + (t_s % WEEK_S) // DAY_S
                weekly = np.zeros(0)
            else:
                weekly = _basis(t_s, WEEK_S, self.kw)
            self._basis = (daily, weekly)
            self._basis_at = t_s
        return self._basis

    def add_series(self, count: int) -> None:
        need = self.size + count
        if need > len(self.state):
            grown = np.zeros((max(need, 2 * len(self.state), 8), self.columns), dtype=np.float64)
            grown[: self.size] = self.state[: self.size]
            self.state = grown
        self.size = need

    def rows(self) -> F64:
        return self.state[: self.size]

    def load(self, rows: F64) -> None:
        self.state = np.array(rows, dtype=np.float64).reshape(-1, self.columns)
        self.size = len(self.state)

    def _predict(self, s: F64, t_s: int) -> tuple[F64, F64, F64, F64, F64, F64, F64]:
        """Prediction and variance of the selected model, its seasonal parts, level and n."""
        n = s[:, N]
        level = s[:, LEVEL]
        zero = np.zeros_like(level)
        bd, bw = self._bases(t_s)
        if self.bins:
            c0, c1, f0, f1 = self._pair
            sd = s[:, c0] * f0 + s[:, c1] * f1
        else:
            sd = s[:, self.d0 : self.w0] @ bd if self.kd else zero
        if self.wbins:
            sw = s[:, self._wday]
        elif self.kw:
            sw = s[:, self.w0 : self.h0] @ bw
        else:
            sw = zero
        ev = s[:, EV0].copy()
        use_d = zero
        use_w = zero
        if self.kd:
            daily = (n >= 2 * self.per_day) & (s[:, EV1] < SEASONAL_GAIN[0] * ev)
            use_d = daily.astype(np.float64)
            ev = np.where(daily, s[:, EV1], ev)
        if self.kw:
            if self.wbins:
                gain = s[:, self.v0 + SLOW_EV2] < SEASONAL_GAIN[1] * s[:, self.v0 + SLOW_EV1]
            else:
                gain = s[:, EV2] < SEASONAL_GAIN[1] * ev
            weekly = (n >= 2 * self.per_week) & gain
            use_w = weekly.astype(np.float64)
            use_d = np.where(weekly, 1.0, use_d)
            ev = np.where(weekly, s[:, EV2], ev)
        sd_sel = use_d * sd
        sw_sel = use_w * sw
        return level + sd_sel + sw_sel, ev, level, sd, sw, sd_sel, sw_sel

    def _variance(self, ev: F64, pred: F64, n: F64) -> F64:
        if self.count_like:
            floor = 0.5 * np.maximum(np.abs(pred), 1.0)
        else:
            floor = (1e-3 * pred) ** 2 + 1e-12
        return np.maximum(ev, floor) * (1.0 + 4.0 / np.maximum(n, 1.0))

    def score(self, idx: I64, x: F64, t_s: int) -> tuple[F64, F64, F64, F64]:
        """Probability, raw score (-log10 p), typical value and signed z, without learning.
        z is the deviation from the prediction (linear in x, as the model plot needs it);
        while a level is held, p is the larger of the two levels' probabilities."""
        s = self.state[idx]
        pred, ev, level, *_ = self._predict(s, t_s)
        return self._probability(x, pred, ev, s[:, N], self._held_offset(s, level))

    def feature_raw(self, idx: I64, z: F64) -> F64:
        """The feature's raw score if the series in idx learnt signed deviations z now,
        without learning (interim results)."""
        if not self.feature:
            return np.zeros(len(idx), dtype=np.float64)
        s = self.state[idx]
        return self._feature_raw(self._feature_next(s, z))

    def _learn_feature(self, s: F64, z: F64) -> F64:
        """Learn the feature in the rows s (a copy of the state's) from the deviations z;
        returns its raw scores (0 without the feature)."""
        if not self.feature:
            return np.zeros(len(s), dtype=np.float64)
        f = self._feature_next(s, z)
        s[:, self.m0] = f
        return self._feature_raw(f)

    def _feature_next(self, s: F64, z: F64) -> F64:
        zc = np.where(s[:, N] >= MIN_SCORED_UPDATES, np.clip(z, -FEATURE_CLIP, FEATURE_CLIP), 0.0)
        f = s[:, self.m0]
        return f + (zc - f) / FEATURE_BUCKETS

    def _feature_raw(self, f: F64) -> F64:
        _, raw = heavy_tail(f / FEATURE_SD)
        if self.side is Side.HIGH:
            raw[f <= 0] = 0.0
        elif self.side is Side.LOW:
            raw[f >= 0] = 0.0
        return raw

    def _held_offset(self, s: F64, level: F64) -> F64 | None:
        """How far the held level is below the current one, for the series holding one."""
        if not self.held:
            return None
        holding = s[:, self.h0 + HOLD] > 0
        if not holding.any():
            return None
        return np.where(holding, level - s[:, self.h0 + HELD], 0.0)

    def _probability(
        self, x: F64, pred: F64, ev: F64, n: F64, offset: F64 | None
    ) -> tuple[F64, F64, F64, F64]:
        sd = np.sqrt(self._variance(ev, pred, n))
        z = (x - pred) / sd
        zp = z
        if offset is not None:
            z_held = z + offset / sd
            zp = np.where(np.abs(z_held) < np.abs(z), z_held, z)
        p, raw = heavy_tail(zp)
        blocked = n < MIN_SCORED_UPDATES
        if self.side is Side.HIGH:
            blocked = blocked | (zp <= 0)
        elif self.side is Side.LOW:
            blocked = blocked | (zp >= 0)
        p[blocked] = 1.0
        raw[blocked] = 0.0
        typical = np.maximum(pred, 0.0) if self.count_like else pred
        return p, raw, typical, z

    def step(self, idx: I64, x: F64, t_s: int) -> tuple[F64, F64, F64, F64]:
        """Score the bucket values of the series in idx, then learn from them. Returns
        probability, raw score, typical value and the feature's raw score (after this
        bucket: it includes the bucket's own deviation, nothing later)."""
        s = self.state[idx]
        n = s[:, N]
        pred, ev, level, sd, sw, sd_sel, sw_sel = self._predict(s, t_s)
        p, raw, typical, z = self._probability(x, pred, ev, n, self._held_offset(s, level))
        before = level.copy() if self.held else level
        f_raw = self._learn_feature(s, z)

        warm = n >= MIN_SCORED_UPDATES
        flagged = warm & (np.abs(z) > CLIP_SIGMAS)
        sign = np.where(flagged, np.sign(z), 0.0)
        run = s[:, RUN]
        run = np.where(sign == 0, 0.0, np.where(np.sign(run) == sign, run + sign, sign))
        shifted = np.abs(run) >= SHIFT_RUN
        if self.fast:
            shifted &= s[:, self.f0] < SHIFT_LIMIT
        run[shifted] = 0.0

        r = x - pred
        lim = np.where(warm, CLIP_SIGMAS * np.sqrt(self._variance(ev, pred, n)), np.inf)
        rc = np.where(shifted, r, np.clip(r, -lim, lim))
        xc = pred + rc

        inv = 1.0 / (n + 1.0)
        a_level = np.where(shifted, 1.0, np.maximum(inv, self.level_rate))
        if self.fast:
            hold = s[:, self.h0 + HOLD]  # HOLD_BUCKETS right after the shift, then down to 1
            fast = ~shifted & (hold > 0)
            a_level = np.where(
                fast, np.maximum(a_level, 1.0 / (HOLD_BUCKETS + 2.0 - hold)), a_level
            )
        a_var = np.maximum(inv, VARIANCE_RATE)
        out = s
        out[:, N] = n + 1.0
        new_level = level + a_level * rc
        out[:, LEVEL] = new_level
        r1, r2 = x - level - sd, x - level - sd - sw
        variances = [(EV0, x - level, a_var), (EV1, r1, a_var), (EV2, r2, a_var)]
        if self.wbins:
            a_slow = np.maximum(inv, self.slow_rate)
            variances += [(self.v0 + SLOW_EV1, r1, a_slow), (self.v0 + SLOW_EV2, r2, a_slow)]
        for col, resid, a in variances:
            old = s[:, col]
            bound = np.where(warm, CLIP_SIGMAS * np.sqrt(np.maximum(old, 1e-300)), np.inf)
            clipped = np.clip(resid, -bound, bound)
            out[:, col] = np.where(shifted, old, old + a * (clipped * clipped - old))
        out[:, RUN] = run
        if self.fast:
            out[:, self.f0] = s[:, self.f0] * self.shifts_decay + shifted
        if self.held:
            h = self.h0
            out[:, h + HELD] = np.where(shifted, before, s[:, h + HELD])
            out[:, h + HOLD] = np.where(
                shifted, HOLD_BUCKETS, np.maximum(s[:, h + HOLD] - 1.0, 0.0)
            )
        self._learn_cycles(out, n, xc - new_level, t_s, sd=sd, sd_sel=sd_sel, sw=sw, sw_sel=sw_sel)
        self.state[idx] = out
        return p, raw, typical, f_raw

    def _learn_cycles(
        self, out: F64, n: F64, y: F64, t_s: int, *, sd: F64, sd_sel: F64, sw: F64, sw_sel: F64
    ) -> None:
        """Update the daily and weekly cycles in `out` from y, the clipped value less the new
        level (each cycle from y less the other's selected part)."""
        inv = 1.0 / (n + 1.0)
        if self.bins:
            a_bin = np.maximum(self.bins / (n + self.bins), self.bins * self.daily_rate)
            c0, c1, f0, f1 = self._pair
            gain = a_bin * (y - sw_sel - sd)
            out[:, c0] += gain * f0
            out[:, c1] += gain * f1
        elif self.kd:
            a = np.maximum(inv, self.daily_rate)[:, None]
            target = 2.0 * (y - sw_sel)[:, None] * self._bases(t_s)[0][None, :]
            out[:, self.d0 : self.w0] += a * (target - out[:, self.d0 : self.w0])
        if self.wbins:
            a_day = np.maximum(self.wbins / (n + self.wbins), self.wbins * self.weekly_rate)
            out[:, self._wday] += a_day * (y - sd_sel - sw)
        elif self.kw:
            a = np.maximum(inv, self.weekly_rate)[:, None]
            target = 2.0 * (y - sd_sel)[:, None] * self._bases(t_s)[1][None, :]
            out[:, self.w0 : self.h0] += a * (target - out[:, self.w0 : self.h0])
