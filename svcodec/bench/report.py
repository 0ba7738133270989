"""Benchmark outputs: bench.json (everything), rd_<clip>.png (RD plot), bench.md (tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from .bdrate import MIN_OVERLAP_DB, OK  # noqa: E402
from .bitshare import PARTS  # noqa: E402
from .compare import PREV_PREFIX, REF_PREFIX  # noqa: E402


def _clean(x):
    """NaN/inf are not JSON; write them as null so any parser can read bench.json."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(path: Path, meta: dict, rows: list[dict], bd: list[dict]) -> None:
    Path(path).write_text(json.dumps(_clean({"meta": meta, "results": rows, "bd_rate": bd}), indent=1))


def _earlier(codec: str) -> bool:
    """Rows not measured by this run: reference anchors and the --baseline's svcodec."""
    return codec.startswith((REF_PREFIX, PREV_PREFIX))


def codec_order(rows: list[dict]) -> list[str]:
    """Measured codecs first (in run order), then the baseline's, then the reference ones."""
    seen = list(dict.fromkeys(r["codec"] for r in rows))
    return ([c for c in seen if not _earlier(c)] + [c for c in seen if c.startswith(PREV_PREFIX)]
            + [c for c in seen if c.startswith(REF_PREFIX)])


def plot_rd(path: Path, clip: str, rows: list[dict]) -> None:
    """bpp vs RGB PSNR, one line per codec; reference and baseline (not re-measured) codecs dashed."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    markers = "osD^v<>ph*"  # distinct markers: near-identical curves (x265 vs sbs) stay visible
    # tab20's ten dark hues, then their light variants: no two of up to 20 codecs share a colour.
    colours = [plt.cm.tab20(k) for k in (*range(0, 20, 2), *range(1, 20, 2))]
    for i, codec in enumerate(codec_order(rows)):
        pts = sorted((r["bpp"], r["psnr_rgb"]) for r in rows if r["codec"] == codec)
        ref = _earlier(codec)
        label = codec + (f" ({rows_frames(rows, codec)} f)" if codec.startswith(REF_PREFIX) else "")
        ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=4, ls="--" if ref else "-", lw=1.2 if ref else 1.8,
                color=colours[i % len(colours)], label=label)
    bpps = [r["bpp"] for r in rows if r["bpp"]]
    if bpps and max(bpps) > 20 * min(bpps):
        ax.set_xscale("log")  # all-intra or very low rates would squash the other curves
    ax.set_xlabel("bits per pixel (both views)")
    ax.set_ylabel("RGB PSNR (dB)")
    ax.set_title(clip)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rows_frames(rows: list[dict], codec: str) -> int:
    return next(r["frames"] for r in rows if r["codec"] == codec)


def _f(x, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _mem(r: dict) -> str:
    if r.get("peak_rss_mb") is None:
        return "n/a"
    return f"{r['peak_rss_mb']:.0f} (+{r.get('peak_rss_delta_mb', 0):.0f})"


def _codec_label(r: dict) -> str:
    """The codec's name, marked where the row was measured by an earlier run (--reuse)."""
    return r["codec"] + (" (reused)" if str(r.get("source", "")).startswith("reused") else "")


def _pct(x) -> str:
    s = _f(x, "+.1f")
    return s if s == "n/a" else s + "%"


def _bd_cell(c: dict) -> str:
    """A BD-rate where the curves overlap enough; otherwise why not, the nearest points, and
    the rate ratio at equal quality of every test point inside the anchor's range."""
    if c["status"] == OK:
        return f"{_pct(c['bd_rate'])} (over {c['overlap_db']:.1f} dB)"
    equal = "".join(f"; at {p['quality']:.2f} dB {p['codec']} {p['q']} spends {100 * p['ratio']:.0f} % of the bits"
                    for p in c.get("equal_quality", []))
    text = c["status"]
    if c["overlap_db"] is not None:
        ov = c["overlap_db"]
        text += f" ({ov:.2f} dB in common)" if ov >= 0 else f" ({-ov:.2f} dB apart)"
    if c["nearest"]:
        t, a = c["nearest"]["test"], c["nearest"]["anchor"]
        text += "; nearest: " + " vs ".join(
            f"{p['codec']} {p['q']}: {_f(p['bpp'], '.4f')} bpp, {_f(p['quality'], '.2f')} dB" for p in (t, a))
    return text + equal


TIMING_ORDER = ("networks", "motion_estimation", "entropy_coding")


def _svcodec_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if (r.get("bit_allocation") or "enc_timings" in r) and not _earlier(r["codec"])]


def _allocation_table(rows: list[dict]) -> list[str]:
    lines = ["## svcodec: where the bits go", "",
             "Read from each .svc file: I-frames = all substreams of I access units; motion and context = the "
             "motion and texture substreams of P access units; container = headers, substream tables, CRCs, "
             "index, trailer. Shares of the whole file. Last column: RGB PSNR of the first frame (I), the "
             "second (the first P-frame) and the last frame of the clip: how much quality the P-frames lose "
             "along a GOP.", "",
             "| clip | codec | rate | I / P frames | bytes | I-frames | motion | context | container | "
             "PSNR first / second / last frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r.get("bit_allocation")
        if not a:
            continue
        shares = " | ".join(f"{100 * a['share'][k]:.1f}%" for k in PARTS)
        pf = r.get("psnr_per_frame") or []
        drift = " / ".join(f"{pf[i]:.2f}" for i in (0, 1, -1)) if len(pf) >= 3 else "n/a"
        lines.append(f"| {r['clip']} | {_codec_label(r)} | {r['q']} | {a['frames']['I']} / {a['frames']['P']} | "
                     f"{r['bytes_raw']} | {shares} | {drift} |")
    return lines


def _speed_table(rows: list[dict]) -> list[str]:
    keys = list(TIMING_ORDER)
    for r in rows:
        keys += [k for k in (r.get("enc_timings") or {}) if k not in keys]
    lines = ["## svcodec: speed and memory", "",
             "Stereo pairs per second, wall clock in the benchmark process (model loading included). Encoder time "
             "split: seconds (share of the encode wall clock) as the encoder reports them; 'rest' = wall clock "
             "minus the reported parts.", "",
             "| clip | codec | rate | W x H | enc pairs/s | dec pairs/s | peak RSS MB (+delta) | "
             + " | ".join(k.replace("_", " ") for k in keys) + " | rest |",
             "|" + "---|" * (8 + len(keys))]
    for r in rows:
        t, enc = r.get("enc_timings"), r.get("enc_seconds")
        if t and enc:
            split = [f"{t[k]:.2f} ({100 * t[k] / enc:.0f}%)" if k in t else "n/a" for k in keys]
            rest = enc - sum(t.values())
            split.append(f"{rest:.2f} ({100 * rest / enc:.0f}%)")
        else:
            split = ["not reported"] * (len(keys) + 1)
        lines.append(f"| {r['clip']} | {_codec_label(r)} | {r['q']} | {r['W']} x {r['H']} | {_f(r.get('enc_fps'), '.3f')} | "
                     f"{_f(r.get('dec_fps'), '.3f')} | {_mem(r)} | " + " | ".join(split) + " |")
    return lines


def markdown(meta: dict, rows: list[dict], bd: list[dict]) -> str:
    lines = ["# svcodec benchmark", ""]
    lines.append(
        f"Frames per clip: {meta['frames']}, GOP {meta['gop']} (column GOP: the intra period each codec used; "
        "`svcodec-intra` and `x265-intra*` code every frame as intra). Peak RSS: see bench.json meta. Quality on "
        "RGB (BT.601 limited 4:2:0 for the classical anchors, bilinear chroma upsampling; `*-444` anchors: 4:4:4, "
        "no subsampling). bpp = bits of both views / (2·W·H·frames). fps = stereo frame pairs per second, wall "
        f"clock, colour conversion included. Rows marked `{REF_PREFIX}` come from --anchor-json (measured "
        "elsewhere, their own frame count). Rows marked (reused) were measured by the earlier run named "
        f"in bench.json (--reuse: same clip, same frame count). Rows marked `{PREV_PREFIX}` are svcodec's rows of "
        "the --baseline bench.json (an earlier release or build; same clip, frame count and GOP)."
    )
    if meta.get("svcodec_models"):
        lines += ["", "svcodec weights measured (as the streams name them): " + "; ".join(
            f"{codec}: {', '.join(m) or 'n/a'}" for codec, m in meta["svcodec_models"].items())]
    lines += ["", "| clip | codec | rate/QP | frames | GOP | bpp | RGB PSNR | MS-SSIM | enc fps | dec fps | "
                  "peak RSS MB (+delta) |"]
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for clip in dict.fromkeys(r["clip"] for r in rows):
        crow = [r for r in rows if r["clip"] == clip]
        for codec in codec_order(crow):
            for r in sorted((r for r in crow if r["codec"] == codec), key=lambda r: r["q"]):
                lines.append(
                    f"| {clip} | {_codec_label(r)} | {r['q']} | {r['frames']} | {r.get('coded_gop', r.get('gop'))} | "
                    f"{_f(r['bpp'], '.5f')} | {_f(r['psnr_rgb'], '.3f')} | {_f(r.get('msssim_rgb'), '.5f')} | "
                    f"{_f(r.get('enc_fps'), '.1f')} | {_f(r.get('dec_fps'), '.1f')} | {_mem(r)} |"
                )
    ours = _svcodec_rows(rows)
    if ours:
        lines += [""] + _allocation_table(ours) + [""] + _speed_table(ours)
    lines += ["", "## BD-rate", ""]
    lines.append(
        "Test codec against anchor, PCHIP over log-rate; negative = fewer bits at equal quality. A number is given "
        f"only where the two curves overlap over at least {MIN_OVERLAP_DB:g} dB of the metric (RGB PSNR, or "
        "MS-SSIM in dB = -10·log10(1 - MS-SSIM)); elsewhere the cell says so and shows the two points closest in "
        f"quality (test first). `{REF_PREFIX}` codecs are compared with `{REF_PREFIX}x265` from the same file; "
        f"`{PREV_PREFIX}` codecs are only anchors (their own comparisons are in the baseline's report)."
    )
    lines += ["", "| clip | codec | anchor | RGB PSNR | MS-SSIM (dB) |", "|---|---|---|---|---|"]
    for b in bd:
        lines.append(f"| {b['clip']} | {b['codec']} | {b['anchor']} | "
                     f"{_bd_cell(b['psnr'])} | {_bd_cell(b['msssim_db'])} |")
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"
