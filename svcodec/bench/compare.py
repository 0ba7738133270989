"""Which BD-rates the benchmark reports, and how each one is computed (bdrate.compare_curves)."""

from __future__ import annotations

import math

from .bdrate import compare_curves

REF_PREFIX = "ref:"  # codecs read from --anchor-json (measured elsewhere)
PREV_PREFIX = "prev:"  # svcodec rows of an earlier run (--baseline), e.g. the last release
PRIMARY_ANCHOR = "x265"  # per view, low-delay P: what every codec is compared with

# Comparisons beyond "every codec against x265": svcodec's GOP codec against the other ways of
# coding the same two views (all-intra, side by side, 4:4:4, the MV-HEVC reference rows) and
# against itself all-intra; the all-intra variant against the all-intra anchors (like for like).
# Each svcodec variant also against its earlier self (--baseline), last.
EXTRA_ANCHORS = {
    "svcodec": ("x265-intra", "sbs", "x265-444", "svcodec-intra", REF_PREFIX + "mvhevc", REF_PREFIX + "htm_ldp",
                PREV_PREFIX + "svcodec"),
    "svcodec-intra": ("x265-intra", "x265-intra-444", PREV_PREFIX + "svcodec-intra"),
    # svc encode --refine N against the same encoder without it
    "svcodec-refine": ("svcodec", PREV_PREFIX + "svcodec-refine"),
}

# quality key of a comparison -> (row field, conversion to a dB scale the BD integral runs over)
METRICS = {
    "psnr": ("psnr_rgb", lambda v: v),
    "msssim_db": ("msssim_rgb", lambda m: -10 * math.log10(1 - m) if m is not None and 0 <= m < 1 else math.nan),
}


def _point(row: dict, quality: float) -> dict:
    return {"codec": row["codec"], "q": row.get("q"), "bpp": row["bpp"], "quality": quality}


def compare(clip: str, codec: str, pts: list[dict], anchor: str, anchor_pts: list[dict]) -> dict:
    """One BD-rate row: per metric its status, overlap and nearest points; the numbers
    (bd_rate_psnr, bd_rate_msssim_db) are None wherever the curves do not overlap enough."""
    out = {"clip": clip, "codec": codec, "anchor": anchor}
    for key, (field, to_db) in METRICS.items():
        a = [(r["bpp"], to_db(r.get(field))) for r in anchor_pts]
        t = [(r["bpp"], to_db(r.get(field))) for r in pts]
        c = compare_curves(a, t)
        if c["nearest"] is not None:
            i, j = c["nearest"]
            c["nearest"] = {"anchor": _point(anchor_pts[i], a[i][1]), "test": _point(pts[j], t[j][1])}
        c["equal_quality"] = [{**_point(pts[j], t[j][1]), "anchor_bpp": at, "ratio": ratio}
                              for j, at, ratio in c["equal_quality"]]
        out[key] = c
        out["bd_rate_" + key] = c["bd_rate"]
    return out


def _comparable(test_pts: list[dict], anchor: str, anchor_pts: list[dict]) -> bool:
    """Reference rows were measured on their own frame count and GOP: usable only when those
    match the measured run."""
    if not anchor.startswith(REF_PREFIX) or test_pts[0]["codec"].startswith(REF_PREFIX):
        return True
    a, t = anchor_pts[0], test_pts[0]
    return a.get("frames") == t.get("frames") and a.get("gop") in (None, t.get("gop"))


def bd_table(rows: list[dict]) -> list[dict]:
    """Each codec against x265 per view: measured codecs vs our x265 run (or the reference x265
    when it was not run and the frame count matches), reference codecs vs the reference x265;
    then the EXTRA_ANCHORS comparisons of the svcodec variants. Baseline rows (PREV_PREFIX) are
    only anchors here: their own comparisons are in the run that measured them."""
    out = []
    for clip in dict.fromkeys(r["clip"] for r in rows):
        by: dict[str, list[dict]] = {}
        for r in rows:
            if r["clip"] == clip:
                by.setdefault(r["codec"], []).append(r)
        for codec, pts in by.items():
            if codec.startswith(PREV_PREFIX):
                continue
            ref = codec.startswith(REF_PREFIX)
            primary = REF_PREFIX + PRIMARY_ANCHOR if ref or PRIMARY_ANCHOR not in by else PRIMARY_ANCHOR
            for anchor in (primary, *EXTRA_ANCHORS.get(codec, ())):
                if anchor != codec and anchor in by and _comparable(pts, anchor, by[anchor]):
                    out.append(compare(clip, codec, pts, anchor, by[anchor]))
    return out
