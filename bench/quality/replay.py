"""A fast replica of the engine's bucket path for one `mean` detector per series.

`make quality` runs every development series through a real job on a real store (about a
minute). Trying a change to the model or the scoring needs many runs, so this module
replays the same path in memory: bucket means, `SeriesModel.step`, the episode discount
(`scoring.continued`), the repeat discount and the bucket normaliser, and the same for the
multi-bucket feature on its own normaliser (`scoring.with_feature`), each bucket given its
initial score. It imports the engine's own model and scoring, so a change there is replayed
as the engine would run it; `tests/engine/test_replay.py` checks that it gives the engine's
initial bucket scores. It reproduces `make quality`'s figures to the digit in about 20 s:

    python -m bench.quality.replay [--per-file]

Only the development folders are read (the same loader as `run_nab`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import numpy.typing as npt
from bench.quality import run_nab

from mljob_operator.engine.functions import FUNCTIONS
from mljob_operator.engine.model import SeriesModel
from mljob_operator.engine.scoring import Normaliser, continued, with_feature

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
DAY_S = 86_400


def bucket_scores(times: I64, values: F64, span_s: int) -> tuple[I64, F64, F64]:
    """The buckets holding rows, their initial anomaly scores (0-100) and their largest raw
    scores before any discount, as a job with one `mean` detector on `value` gives them."""
    spec = FUNCTIONS["mean"]
    model = SeriesModel(span_s, count_like=spec.count_like, side=spec.side)
    model.add_series(1)
    window_ms = max(30 * DAY_S, 100 * span_s) * 1000
    norm = Normaliser(window_ms, span_s * 1000, recent=True)
    fnorm = Normaliser(window_ms, span_s * 1000, recent=True)
    buckets, inverse = np.unique(times // span_s, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    idx = np.zeros(1, dtype=np.int64)
    scores = np.zeros(len(buckets))
    raws = np.zeros(len(buckets))
    last: tuple[int, float] | None = None
    flast: tuple[int, float] | None = None
    for i, (b, x) in enumerate(zip(buckets.tolist(), means.tolist(), strict=True)):
        if last is not None and b > last[0] + 1:  # empty buckets: nothing to model for mean
            norm.observe_quiet(b - last[0] - 1, (b - 1) * span_s * 1000, zero_top=True)
            fnorm.observe_quiet(b - last[0] - 1, (b - 1) * span_s * 1000, zero_top=True)
        _, raw, _, fraw = model.step(idx, np.array([x]), b * span_s)
        top = float(raw.max())
        episode = continued(top, last[1] if last is not None and last[0] == b - 1 else 0.0)
        last = (b, top)
        discounted = norm.discounted(episode)
        norm.observe(b * span_s * 1000, np.array([episode]))
        ftop = float(fraw.max())
        fepisode = continued(ftop, flast[1] if flast is not None and flast[0] == b - 1 else 0.0)
        flast = (b, ftop)
        fdiscounted = fnorm.discounted(fepisode)
        fnorm.observe(b * span_s * 1000, np.array([fepisode]))
        bscale = norm.scale()
        main = bscale.score(np.array([discounted]))
        fscore = fnorm.scale().score(np.array([fdiscounted]))
        scores[i] = float(with_feature(bscale, np.array([discounted]), main, fscore)[0][0])
        raws[i] = top
    return buckets, scores, raws


def _series_scores(s: run_nab.Series) -> tuple[str, F64]:
    span = s.span_s
    buckets, scores, _ = bucket_scores(s.times, s.values, span)
    return s.name, scores[np.searchsorted(buckets, s.times // span)] / 100.0


def replay(series: list[run_nab.Series], workers: int) -> dict[str, F64]:
    order = sorted(series, key=lambda s: -len(s.times))
    if workers <= 1:
        return dict(map(_series_scores, order))
    with ProcessPoolExecutor(workers) as pool:
        return dict(pool.map(_series_scores, order, chunksize=1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--per-file", action="store_true", help="print per-file raw scores")
    args = ap.parse_args(argv)
    series = run_nab.load_series(run_nab.nab_dir(), run_nab.DEV_FOLDERS)
    scores = replay(series, args.workers)
    files = run_nab.labelled(series, scores)
    results = run_nab.score_all(files, {s.name: s.folder for s in series})
    print(run_nab.table(results))
    print()
    print(run_nab.diagnostics(series, files, results[run_nab.PROFILES[0].name]))
    if args.per_file:
        print()
        print(run_nab.per_file_report(series, results[run_nab.PROFILES[0].name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
