"""Model snapshot encoding: the analyzer state as one compact, compressed blob.

Per-series state is the bulk of a snapshot, so it is stored as raw float64 columns,
byte-shuffled (the exponent bytes of neighbouring values then sit together and compress
well) and zlib-compressed; labels, counts, normalisers and open buckets go in a small JSON
header. float64 keeps a restored model bit-identical to the one that was saved. A detector's
header names the bins of its daily profile; a snapshot from before the profile names none
and restores its daily harmonics, so an upgraded job goes on exactly as it would have. In
the same way a detector's header says whether its model keeps the level from before a
shift (`held`), whether its weekly cycle is a profile of days (`week`) and whether its level
learns fast after a shift (`fast`) and whether it keeps the multi-bucket feature
(`feature`, its last column); a snapshot from before one of them restores a model without
it. The feature's two normalisers and last top are in the header (`fnorm`,
`last_feature_top`); a snapshot from before them restores them empty.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mljob_operator.engine.analyzer import Analyzer, LabelTable
from mljob_operator.engine.buckets import BucketAgg
from mljob_operator.engine.config import JobConfig
from mljob_operator.engine.errors import ConfigError
from mljob_operator.engine.model import SeriesModel
from mljob_operator.engine.results import DataCounts
from mljob_operator.engine.scoring import ScoreScale

MAGIC = b"MLJS"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sII")


def _shuffle(arr: npt.NDArray[Any]) -> bytes:
    data = np.ascontiguousarray(arr)
    width = data.dtype.itemsize
    return bytes(data.view(np.uint8).reshape(-1, width).T.tobytes())


def _unshuffle(raw: bytes, dtype: str, shape: list[int]) -> npt.NDArray[Any]:
    width = np.dtype(dtype).itemsize
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(width, -1)
    return planes.T.copy().view(dtype).reshape(shape)


def encode(an: Analyzer, level: int = 6) -> bytes:
    arrays: dict[str, npt.NDArray[Any]] = {}
    detectors = []
    for d in an.detectors:
        arrays[f"m{d.index}"] = d.model.rows().T
        arrays[f"p{d.index}"] = np.array(d.pid, dtype=np.uint32)
        arrays[f"b{d.index}"] = np.array(d.bid, dtype=np.uint32)
        detectors.append(
            {
                "function": d.cfg.function,
                "columns": d.model.columns,
                "bins": d.model.bins,
                "held": d.model.held,
                "week": d.model.week,
                "fast": d.model.fast,
                "feature": d.model.feature,
                "open": [[b, agg.to_json()] for b, agg in sorted(d.open.items())],
            }
        )
    meta: dict[str, Any] = {
        "counts": an.counts.to_dict(),
        "time_ms": an.time_ms,
        "final_end": an.final_end,
        "labels": {name: t.labels for name, t in an.labels.items()},
        "open_events": sorted(an.open_events.items()),
        "failed": sorted(an.failed_buckets),
        "alloc_failures": an.allocation_failures,
        "peak": an.peak_bytes,
        "quiet_run": an.quiet_run,
        "last_top": None if an.last_top is None else list(an.last_top),
        "norm": [an.bucket_norm.state(), an.record_norm.state()],
        "last_feature_top": None if an.last_feature_top is None else list(an.last_feature_top),
        "fnorm": [an.feature_norm.state(), an.record_feature_norm.state()],
        "applied": [[s.quantile_raw, s.max_raw] for s in an.applied],
        "detectors": detectors,
        "arrays": [],
    }
    body = bytearray()
    for name, arr in arrays.items():
        raw = _shuffle(arr)
        meta["arrays"].append([name, arr.dtype.str, list(arr.shape), len(raw)])
        body += raw
    header = orjson.dumps(meta)
    payload = _HEADER.pack(MAGIC, FORMAT_VERSION, len(header)) + header + bytes(body)
    return zlib.compress(payload, level)


def decode(blob: bytes, config: JobConfig) -> Analyzer:
    payload = zlib.decompress(blob)
    magic, version, hlen = _HEADER.unpack_from(payload)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise ConfigError("model snapshot has an unknown format")
    meta = orjson.loads(payload[_HEADER.size : _HEADER.size + hlen])
    offset = _HEADER.size + hlen
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, dtype, shape, size in meta["arrays"]:
        arrays[name] = _unshuffle(payload[offset : offset + size], dtype, shape)
        offset += size
    an = Analyzer(config)
    if [d["function"] for d in meta["detectors"]] != [d.cfg.function for d in an.detectors]:
        raise ConfigError("the detectors do not match the model snapshot")
    an.counts = DataCounts.from_dict(meta["counts"])
    an.time_ms = meta["time_ms"]
    an.final_end = meta["final_end"]
    an.labels = {name: LabelTable(labels) for name, labels in meta["labels"].items()}
    an.open_events = {int(b): int(n) for b, n in meta["open_events"]}
    an.failed_buckets = {int(b) for b in meta["failed"]}
    an.allocation_failures = meta["alloc_failures"]
    an.peak_bytes = meta["peak"]
    an.quiet_run = meta.get("quiet_run", 0)
    last_top = meta.get("last_top")
    an.last_top = None if last_top is None else (int(last_top[0]), float(last_top[1]))
    an.bucket_norm.restore(meta["norm"][0])
    an.record_norm.restore(meta["norm"][1])
    last_ftop = meta.get("last_feature_top")
    an.last_feature_top = None if last_ftop is None else (int(last_ftop[0]), float(last_ftop[1]))
    if "fnorm" in meta:
        an.feature_norm.restore(meta["fnorm"][0])
        an.record_feature_norm.restore(meta["fnorm"][1])
    an.applied = (ScoreScale(*meta["applied"][0]), ScoreScale(*meta["applied"][1]))
    for d, dm in zip(an.detectors, meta["detectors"], strict=True):
        kind = {
            "bins": dm.get("bins", 0),
            "held": dm.get("held", False),
            "week": dm.get("week", False),
            "fast": dm.get("fast", False),
            "feature": dm.get("feature", False),
        }
        m = d.model
        now = {"bins": m.bins, "held": m.held, "week": m.week, "fast": m.fast, "feature": m.feature}
        if kind != now:
            d.model = SeriesModel(m.bucket_span_s, count_like=m.count_like, side=m.side, **kind)
        if dm["columns"] != d.model.columns:
            raise ConfigError("the bucket span does not match the model snapshot")
        d.model.load(arrays[f"m{d.index}"].T)
        d.pid = arrays[f"p{d.index}"].astype(np.int64).tolist()
        d.bid = arrays[f"b{d.index}"].astype(np.int64).tolist()
        d.keys = {(p << 32) | b: i for i, (p, b) in enumerate(zip(d.pid, d.bid, strict=True))}
        d.open = {int(b): BucketAgg.from_json(agg) for b, agg in dm["open"]}
    an.refresh_memory()
    return an
