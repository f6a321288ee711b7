"""The residual tail: normal up to TAIL_Z sigmas, a power law beyond."""

from __future__ import annotations

import numpy as np

from mljob_operator.engine.model import MAX_RAW, TAIL_Z, heavy_tail, two_sided_tail


def test_normal_inside_and_a_power_law_beyond_without_saturating() -> None:
    inside = np.linspace(-TAIL_Z, TAIL_Z, 241)
    p, raw = heavy_tail(inside)
    p0, raw0 = two_sided_tail(inside)
    assert np.array_equal(raw, raw0)
    assert np.array_equal(p, p0)

    z = np.geomspace(TAIL_Z, 1e6, 400)  # the normal tail saturates at 37 sigmas
    p, raw = heavy_tail(z)
    assert np.all(np.diff(raw) > 0)  # still ranks every residual, none ties at the cap
    assert raw[-1] < MAX_RAW
    assert np.all(raw <= two_sided_tail(z)[1] + 1e-9)  # lighter than normal past TAIL_Z
    assert np.allclose(p, 10.0**-raw, rtol=1e-9, atol=0.0)
    assert np.all(np.isfinite(raw))
    assert np.all((p >= 0) & (p <= 1))
    # Continuous at the join, and symmetric.
    lo, hi = heavy_tail(np.array([TAIL_Z - 1e-9, TAIL_Z + 1e-9]))[1]
    assert abs(hi - lo) < 1e-6
    assert np.array_equal(heavy_tail(-z)[1], raw)
