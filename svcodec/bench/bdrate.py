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


# A BD-rate averages the rate gap over the quality interval both curves cover; over a sliver of
# that interval it is an extrapolation of two curve ends, and can come out as any four-digit number.
MIN_OVERLAP_DB = 1.0
OK = "ok"
NO_OVERLAP = "curves do not overlap"
TOO_FEW_POINTS = "fewer than 2 points on a curve"
NOT_COMPUTABLE = "not computable (a curve repeats a quality value)"


def compare_curves(anchor: list[tuple[float, float]], test: list[tuple[float, float]],
                   min_overlap_db: float = MIN_OVERLAP_DB) -> dict:
    """BD-rate of `test` against `anchor` (each a list of (rate, quality in dB) points), reported
    only where their quality ranges overlap by at least `min_overlap_db`.

    Points with a missing or non-finite quality or a non-positive rate are left out (e.g.
    MS-SSIM of a lossless frame). Returns a dict:
      status      OK | NO_OVERLAP | TOO_FEW_POINTS | NOT_COMPUTABLE
      bd_rate     percent (negative = test needs fewer bits), None unless status is OK
      overlap_db  width of the common quality interval (negative = gap between the curves)
      nearest     (anchor index, test index) of the two points closest in quality: where
                  there is no number, these are what a reader can compare instead.
      equal_quality  per test point inside the anchor's quality range: (test index, the
                  anchor's rate at that quality, test rate / that rate); the anchor's log-rate
                  is interpolated linearly in quality between its two neighbouring points. This
                  needs no overlap of the curves, only one test point within the anchor's range
                  (the measure of "at equal PSNR, X % of the bits")."""
    def usable(points):
        def ok(x):
            return isinstance(x, (int, float)) and math.isfinite(x)

        return [i for i, (r, q) in enumerate(points) if ok(r) and ok(q) and r > 0]

    ia, it = usable(anchor), usable(test)
    result = {"status": TOO_FEW_POINTS, "bd_rate": None, "overlap_db": None, "nearest": None,
              "equal_quality": []}
    if not ia or not it:
        return result
    qa, qt = [anchor[i][1] for i in ia], [test[i][1] for i in it]
    result["overlap_db"] = min(max(qa), max(qt)) - max(min(qa), min(qt))
    # Closest in quality first; among equals, closest in rate (log scale, as the BD integral).
    result["nearest"] = min(
        ((a, t) for a in ia for t in it),
        key=lambda p: (abs(anchor[p[0]][1] - test[p[1]][1]), abs(math.log(anchor[p[0]][0] / test[p[1]][0]))),
    )
    result["equal_quality"] = rate_at_equal_quality([anchor[i] for i in ia], [(j, test[j]) for j in it])
    if len(ia) < 2 or len(it) < 2:
        return result
    if result["overlap_db"] < min_overlap_db:
        result["status"] = NO_OVERLAP
        return result
    val = bd_rate([anchor[i][0] for i in ia], qa, [test[i][0] for i in it], qt)
    if math.isfinite(val):
        result.update(status=OK, bd_rate=val)
    else:
        result["status"] = NOT_COMPUTABLE
    return result


def rate_at_equal_quality(anchor: list[tuple[float, float]], test: list[tuple[int, tuple[float, float]]]) -> list:
    """[(test index, anchor rate at the test point's quality, ratio)] for the test points whose
    quality lies within the anchor's range (see compare_curves). An anchor whose quality is not
    strictly increasing in rate gives nothing."""
    pts = sorted(anchor)
    if len(pts) < 2 or any(b[1] <= a[1] for a, b in zip(pts, pts[1:])):
        return []
    out = []
    for j, (rate, q) in test:
        for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
            if q0 <= q <= q1:
                w = (q - q0) / (q1 - q0)
                at = math.exp((1 - w) * math.log(r0) + w * math.log(r1))
                out.append((j, at, rate / at))
                break
    return out
