"""`make quality`: the engine on the Numenta Anomaly Benchmark's development folders.

Every development series goes through the engine in-process as a user would send it: one
job per series with one `mean` detector on `value`, `bucketSpan` = the series' sampling
interval (its most common step), the rows posted in order in chunks, each row given its
bucket's `initialAnomalyScore` / 100 (the first published score: no look-ahead). Then the
benchmark's three profiles score it with one corpus-wide threshold each (our own scorer,
`nab_score`), per folder and overall.

NAB_DIR (default ~/.cache/mljob-operator/NAB) is a checkout of numenta/NAB, or a copy of
its development folders only. Nothing is fetched at run time. The folders
realAWSCloudwatch and realKnownCause are held out: this tool never reads them.

If NAB_DIR holds bundled detector results (results/<detector>/...), the scorer is first
checked against their published per-file scores (dev rows only).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
from bench.quality.nab_score import (
    PROFILES,
    CorpusScore,
    LabelledFile,
    Profile,
    calibration_gap,
    detections,
    score_corpus,
    score_file,
)

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import ResultsQuery, SQLiteStore

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DEV_FOLDERS = (
    "artificialNoAnomaly",
    "artificialWithAnomaly",
    "realAdExchange",
    "realTraffic",
    "realTweets",
)
HELD_OUT = ("realAWSCloudwatch", "realKnownCause")
DEFAULT_NAB_DIR = "~/.cache/mljob-operator/NAB"
CHUNK_ROWS = 2_000
REFERENCE_DETECTORS = ("null", "numenta", "windowedGaussian", "ARTime", "knncad", "contextOSE")

HOW_TO_GET = f"""\
NAB_DIR must point at a copy of the Numenta Anomaly Benchmark (github.com/numenta/NAB)
holding at least data/<folder>/*.csv for the development folders
({", ".join(DEV_FOLDERS)}) and labels/combined_windows.json, e.g.

    git clone --depth 1 https://github.com/numenta/NAB ~/src/NAB
    export NAB_DIR=~/src/NAB        # or copy those paths under {DEFAULT_NAB_DIR}

Only the development folders are ever read; {" and ".join(HELD_OUT)} are held out."""


@dataclass
class Series:
    folder: str
    name: str  # "<folder>/<file>.csv", the benchmark's key
    times: I64  # epoch seconds (the benchmark's timestamps are UTC)
    values: F64
    windows: list[tuple[int, int]]

    @property
    def span_s(self) -> int:
        steps = np.diff(self.times)
        steps = steps[steps > 0]
        return int(Counter(steps.tolist()).most_common(1)[0][0]) if len(steps) else 60


def _epoch_s(stamps: Sequence[str]) -> I64:
    return np.array([s.replace(" ", "T") for s in stamps], dtype="datetime64[s]").astype(np.int64)


def nab_dir() -> Path:
    return Path(os.environ.get("NAB_DIR", DEFAULT_NAB_DIR)).expanduser()


def check_folders(folders: Sequence[str]) -> None:
    for f in folders:
        if f in HELD_OUT:
            sys.exit(f"{f} is held out of development: this tool does not read it")
        if f not in DEV_FOLDERS:
            sys.exit(f"unknown folder {f!r}; the development folders are {', '.join(DEV_FOLDERS)}")


def load_labels(root: Path) -> dict[str, list[list[str]]]:
    path = root / "labels" / "combined_windows.json"
    if not path.is_file():
        sys.exit(f"no {path}\n\n{HOW_TO_GET}")
    labels: dict[str, list[list[str]]] = json.loads(path.read_text())
    return {k: v for k, v in labels.items() if k.split("/", 1)[0] in DEV_FOLDERS}


def load_series(root: Path, folders: Sequence[str]) -> list[Series]:
    check_folders(folders)
    labels = load_labels(root)
    out = []
    for folder in folders:
        d = root / "data" / folder
        files = sorted(d.glob("*.csv")) if d.is_dir() else []
        if not files:
            sys.exit(f"no data files in {d}\n\n{HOW_TO_GET}")
        for path in files:
            name = f"{folder}/{path.name}"
            with path.open(newline="") as fh:
                rows = list(csv.reader(fh))[1:]
            times = _epoch_s([r[0] for r in rows])
            values = np.array([float(r[1]) for r in rows], dtype=np.float64)
            if name not in labels:
                sys.exit(f"{name} has no entry in labels/combined_windows.json")
            windows = []
            for lo, hi in labels[name]:
                (a, b) = _epoch_s([lo.split(".")[0], hi.split(".")[0]]).tolist()
                ia, ib = np.flatnonzero(times == a), np.flatnonzero(times == b)
                if not len(ia) or not len(ib):
                    sys.exit(f"{name}: window {lo}..{hi} does not match its rows")
                windows.append((int(ia[0]), int(ib[-1])))
            out.append(Series(folder, name, times, values, windows))
    return out


# ---- the engine ------------------------------------------------------------------------------
def engine_scores(s: Series, store: SQLiteStore) -> F64:
    """Each row's bucket initialAnomalyScore / 100, from a real job on a real store."""
    span = s.span_s
    job_id = s.name.replace("/", "-").removesuffix(".csv")
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "value"),),
        bucket_span_s=span,
        background_persist_interval_s=None,
    )
    job = Job.open(store, job_id, cfg)
    for i in range(0, len(s.times), CHUNK_ROWS):
        job.post_data(
            b"\n".join(
                orjson.dumps({"time": int(t), "value": float(v)})
                for t, v in zip(
                    s.times[i : i + CHUNK_ROWS], s.values[i : i + CHUNK_ROWS], strict=True
                )
            )
        )
    end_s = (int(s.times[-1]) // span + 1) * span
    job.flush(advance_time_ms=end_s * 1000)
    _, buckets = store.query_buckets(job_id, ResultsQuery(size=10_000_000))
    job.release()
    by_bucket = {b.timestamp // 1000: b.initial_anomaly_score for b in buckets}
    first = s.times // span * span
    return np.array([by_bucket.get(int(t), 0.0) / 100.0 for t in first], dtype=np.float64)


def _run_chunk(series: list[Series]) -> dict[str, F64]:
    with tempfile.TemporaryDirectory(prefix="mljob-nab-") as tmp:
        store = SQLiteStore(Path(tmp) / "nab.sqlite")
        try:
            return {s.name: engine_scores(s, store) for s in series}
        finally:
            store.close()


def run_engine(series: list[Series], workers: int) -> dict[str, F64]:
    if workers <= 1:
        return _run_chunk(series)
    # Big series first, dealt round-robin, so the workers finish together.
    order = sorted(series, key=lambda s: -len(s.times))
    parts = [order[i::workers] for i in range(workers)]
    out: dict[str, F64] = {}
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(_run_chunk, parts):
            out.update(part)
    return out


# ---- reporting -------------------------------------------------------------------------------
def labelled(series: list[Series], scores: dict[str, F64]) -> list[LabelledFile]:
    return [LabelledFile.build(s.name, scores[s.name], s.windows) for s in series]


def score_all(files: list[LabelledFile], folder_of: dict[str, str]) -> dict[str, CorpusScore]:
    return {p.name: score_corpus(files, p, folder_of) for p in PROFILES}


def table(results: dict[str, CorpusScore]) -> str:
    names = [g.name for g in next(iter(results.values())).groups]
    head = f"{'folder':<24}{'files':>6}{'windows':>8}" + "".join(f"{p.name:>20}" for p in PROFILES)
    lines = [head, "-" * len(head)]
    for i, name in enumerate(names):
        g0 = results[PROFILES[0].name].groups[i]
        cells = [results[p.name].groups[i] for p in PROFILES]
        lines.append(
            f"{name:<24}{g0.files:>6}{g0.windows:>8}"
            # Without windows a folder has no scale: its raw score (false positives) shows.
            + "".join(
                f"{g.score:>20.1f}" if g.windows else f"{f'raw {g.raw:.2f}':>20}" for g in cells
            )
        )
    t0 = results[PROFILES[0].name].total
    lines.append(
        f"{'all development folders':<24}{t0.files:>6}{t0.windows:>8}"
        + "".join(f"{results[p.name].total.score:>20.1f}" for p in PROFILES)
    )
    lines.append(
        f"{'threshold':<38}" + "".join(f"{results[p.name].threshold:>20.4f}" for p in PROFILES)
    )
    return "\n".join(lines)


def diagnostics(series: list[Series], files: list[LabelledFile], result: CorpusScore) -> str:
    """Where the standard score comes from, and what one score scale across series costs."""
    p = PROFILES[0]
    folder_of = {s.name: s.folder for s in series}
    lines = [f"at the standard threshold {result.threshold:.4f}:"]
    for folder in sorted({s.folder for s in series}):
        d = detections([f for f in files if folder_of[f.name] == folder], result.threshold)
        lines.append(
            f"  {folder:<24} windows found {d.found:>3} of {d.windows:<3}"
            f" false positives {d.false_positives:>4}"
        )
    one, per_group, per_file = calibration_gap(files, p, folder_of)
    lines.append(
        f"standard score with one threshold {one:.1f}; with one per folder {per_group:.1f};"
        f" one per series {per_file:.1f} (diagnostic: the gap is score scales that differ"
        " between series)"
    )
    return "\n".join(lines)


def per_file_report(series: list[Series], result: CorpusScore) -> str:
    lines = [f"per file ({result.profile}, threshold {result.threshold:.4f}):"]
    lines.append(f"  {'file':<52}{'span':>6}{'win':>4}{'raw':>8}{'null':>7}{'TP':>5}{'FP':>5}")
    for s in series:
        f = result.per_file[s.name]
        lines.append(
            f"  {s.name:<52}{s.span_s:>6}{len(s.windows):>4}{f.raw:>8.2f}"
            f"{-len(s.windows):>7}{f.tp:>5}{f.fp:>5}"
        )
    return "\n".join(lines)


# ---- scorer agreement with the benchmark's published results ------------------------------------
def _detector_output(
    det_dir: Path, name: str, windows: list[tuple[int, int]]
) -> LabelledFile | None:
    folder, fname = name.split("/", 1)
    path = det_dir / folder / f"{det_dir.name}_{fname}"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        scores = [float(r["anomaly_score"]) for r in csv.DictReader(fh)]
    return LabelledFile.build(name, scores, windows)


def _published_rows(det_dir: Path, p: Profile) -> list[dict[str, str]]:
    """The published per-file rows of the development files (never the held-out ones)."""
    path = det_dir / f"{det_dir.name}_{p.name}_scores.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["File"].split("/", 1)[0] in DEV_FOLDERS]


def check_scorer(root: Path, series: list[Series]) -> str | None:
    """Score the bundled detectors' per-file outputs at their published thresholds and
    compare with the published per-file scores (development rows only)."""
    results = root / "results"
    if not results.is_dir():
        return None
    windows = {s.name: s.windows for s in series}
    lines = ["scorer agreement with the published per-file scores (development files only):"]
    for det_dir in sorted(p for p in results.iterdir() if p.is_dir()):
        equal = compared = 0
        worst = 0.0
        files: dict[str, LabelledFile | None] = {}
        for p in PROFILES:
            for row in _published_rows(det_dir, p):
                name = row["File"]
                if name not in windows:
                    continue
                if name not in files:
                    files[name] = _detector_output(det_dir, name, windows[name])
                f = files[name]
                if f is None:
                    continue
                got = score_file(f, p, float(row["Threshold"]))
                diff = abs(got.raw - float(row["Score"]))
                want_counts = tuple(int(row[k]) for k in ("TP", "FP", "FN", "TN"))
                compared += 1
                worst = max(worst, diff)
                equal += diff <= 1e-6 and (got.tp, got.fp, got.fn, got.tn) == want_counts
        if compared:
            lines.append(
                f"  {det_dir.name:<18} {compared:>3} file scores, {equal:>3} equal (score within"
                f" 1e-6, same TP/FP/FN/TN counts), largest |difference| {worst:.1e}"
            )
    return "\n".join(lines) if len(lines) > 1 else None


def reference_scores(root: Path, series: list[Series]) -> dict[str, dict[str, float]]:
    """Normalised development-folder scores of bundled detectors (threshold optimised on
    these folders), for comparison."""
    out: dict[str, dict[str, float]] = {}
    folder_of = {s.name: s.folder for s in series}
    for det in REFERENCE_DETECTORS:
        scores = {}
        for s in series:
            path = root / "results" / det / s.folder / f"{det}_{s.name.split('/', 1)[1]}"
            if not path.is_file():
                break
            with path.open(newline="") as fh:
                scores[s.name] = np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])
        else:
            files = labelled(series, scores)
            out[det] = {p.name: score_corpus(files, p, folder_of).total.score for p in PROFILES}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--folders", nargs="+", default=list(DEV_FOLDERS), help="a subset to run")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--per-file", action="store_true", help="print per-file raw scores")
    ap.add_argument("--save", type=Path, help="write every row's score to this .npz")
    ap.add_argument("--json", type=Path, help="write the scores to this JSON file")
    ap.add_argument("--no-check", action="store_true", help="skip the scorer agreement check")
    args = ap.parse_args(argv)

    root = nab_dir()
    if not root.is_dir():
        print(f"NAB_DIR {root} does not exist.\n\n{HOW_TO_GET}", file=sys.stderr)
        return 2
    series = load_series(root, args.folders)
    if not args.no_check and set(args.folders) == set(DEV_FOLDERS):
        check = check_scorer(root, series)
        if check:
            print(check)
            refs = reference_scores(root, series)
            if refs:
                print(
                    f"{'bundled detectors here':<24}"
                    + "".join(f"{p.name:>20}" for p in PROFILES)
                    + "   (threshold optimised on these folders)"
                )
                for det, sc in refs.items():
                    print(f"  {det:<22}" + "".join(f"{sc[p.name]:>20.1f}" for p in PROFILES))
            print()

    t0 = time.perf_counter()
    scores = run_engine(series, args.workers)
    took = time.perf_counter() - t0
    rows = sum(len(s.times) for s in series)
    print(f"engine: {len(series)} series, {rows} rows in {took:.1f} s\n")
    if args.save:
        np.savez_compressed(args.save, **{s.name: scores[s.name] for s in series})  # type: ignore[arg-type]

    files = labelled(series, scores)
    folder_of = {s.name: s.folder for s in series}
    results = score_all(files, folder_of)
    print("NAB scores of the engine (one `mean` detector per series, initialAnomalyScore):")
    print(table(results))
    print()
    print(diagnostics(series, files, results[PROFILES[0].name]))
    if args.per_file:
        print()
        print(per_file_report(series, results[PROFILES[0].name]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    name: {
                        "threshold": r.threshold,
                        "total": r.total.score,
                        "folders": {g.name: g.score for g in r.groups},
                    }
                    for name, r in results.items()
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
