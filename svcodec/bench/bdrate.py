"""Bjontegaard delta rate: average bit-rate difference at equal quality (negative = fewer bits)."""

from __future__ import annotations

import math
import warnings

import numpy as np


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """BD-rate in percent of `test` against `anchor`: log-rate vs PSNR, PCHIP interpolation,
    integrated over the PSNR interval both curves cover (the `bjontegaard` package).

    NaN when it cannot be computed honestly: fewer than 2 points on a curve, non-finite values,
    PSNR not strictly monotonic in rate, or curves that do not overlap in quality."""
    import matplotlib

    matplotlib.use("Agg")  # bjontegaard imports pyplot at import time; never open a display
    import bjontegaard as bd

    curves = []
    for rate, psnr in ((rate_anchor, psnr_anchor), (rate_test, psnr_test)):
        r, p = np.asarray(rate, dtype=float), np.asarray(psnr, dtype=float)
        if len(r) != len(p) or len(r) < 2 or not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
            return math.nan
        if np.any(r <= 0):
            return math.nan
        order = np.argsort(p)  # the package integrates rate as a function of PSNR
        r, p = r[order], p[order]
        if np.any(np.diff(p) <= 0):
            return math.nan
        curves.append((r, p))
    (ra, pa), (rt, pt) = curves
    if min(pa.max(), pt.max()) <= max(pa.min(), pt.min()):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low-overlap warning: the caller sees the value
        try:
            val = bd.bd_rate(ra, pa, rt, pt, method="pchip", require_matching_points=False)
        except (ValueError, AssertionError):
            return math.nan
    return float(val)
