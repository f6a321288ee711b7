"""Model plot: what the model expected of each series in a bucket, as a median and a band.

The band is the central 95 % of the model's predictive distribution, read from the model
before it learns the bucket (the same state that scores it, so an actual outside the band
is what the score calls unusual). It is derived through `SeriesModel.score` alone: the
signed deviation it returns is linear in the value, so scoring the actual and the actual
plus a step gives the prediction and its spread without reaching into the model's state.
At most MODEL_PLOT_SERIES_PER_BUCKET series a bucket are plotted (the first ones, in
detector order and then the order series first appeared), so one job with many splits
cannot flood the store.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mljob_operator.engine.model import SeriesModel

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MODEL_PLOT_SERIES_PER_BUCKET = 100
BAND_Z = 1.959964
"""The standard normal quantile of 97.5 %: the band holds 95 % of the prediction."""


def band(
    model: SeriesModel, idx: I64, x: F64, t_s: int, *, non_negative: bool
) -> tuple[F64, F64, F64]:
    """Median (the records' typical value), lower and upper bound for the series in idx."""
    _, _, typical, z0 = model.score(idx, x, t_s)
    step = np.maximum(np.maximum(np.abs(x), np.abs(typical)), 1.0)
    _, _, _, z1 = model.score(idx, x + step, t_s)
    dz = z1 - z0
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.where(dz > 0, step / dz, 0.0)
    sd = np.where(np.isfinite(sd), sd, 0.0)
    pred = x - z0 * sd
    lower = pred - BAND_Z * sd
    upper = pred + BAND_Z * sd
    if non_negative:
        lower = np.maximum(lower, 0.0)
        upper = np.maximum(upper, 0.0)
    return typical, np.minimum(lower, typical), np.maximum(upper, typical)
