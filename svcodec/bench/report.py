"""Benchmark outputs: bench.json (everything), rd_<clip>.png (RD plot), bench.md (tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

REF_PREFIX = "ref:"  # codecs read from --anchor-json (measured elsewhere)


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


def codec_order(rows: list[dict]) -> list[str]:
    """Measured codecs first (in run order), then the reference ones."""
    seen = list(dict.fromkeys(r["codec"] for r in rows))
    return [c for c in seen if not c.startswith(REF_PREFIX)] + [c for c in seen if c.startswith(REF_PREFIX)]


def plot_rd(path: Path, clip: str, rows: list[dict]) -> None:
    """bpp vs RGB PSNR, one line per codec; reference (not re-measured) codecs dashed."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    markers = "osD^v<>ph*"  # distinct markers: near-identical curves (x265 vs sbs) stay visible
    for i, codec in enumerate(codec_order(rows)):
        pts = sorted((r["bpp"], r["psnr_rgb"]) for r in rows if r["codec"] == codec)
        ref = codec.startswith(REF_PREFIX)
        label = codec + (f" ({rows_frames(rows, codec)} f)" if ref else "")
        ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=4, ls="--" if ref else "-", lw=1.2 if ref else 1.8, label=label)
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


def _pct(x) -> str:
    s = _f(x, "+.1f")
    return s if s == "n/a" else s + "%"


def markdown(meta: dict, rows: list[dict], bd: list[dict]) -> str:
    lines = ["# svcodec benchmark", ""]
    lines.append(
        f"Frames per clip: {meta['frames']}, GOP {meta['gop']}. Peak RSS: see bench.json meta. Quality on RGB (BT.601 limited 4:2:0 "
        "for the classical anchors, bilinear chroma upsampling). bpp = bits of both views / "
        "(2·W·H·frames). fps = stereo frame pairs per second, wall clock, colour conversion "
        f"included. Rows marked `{REF_PREFIX}` come from --anchor-json (measured elsewhere, "
        "their own frame count)."
    )
    lines += ["", "| clip | codec | rate/QP | frames | bpp | RGB PSNR | MS-SSIM | enc fps | dec fps | peak RSS MB (+delta) |"]
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for clip in dict.fromkeys(r["clip"] for r in rows):
        crow = [r for r in rows if r["clip"] == clip]
        for codec in codec_order(crow):
            for r in sorted((r for r in crow if r["codec"] == codec), key=lambda r: r["q"]):
                lines.append(
                    f"| {clip} | {codec} | {r['q']} | {r['frames']} | {_f(r['bpp'], '.5f')} | "
                    f"{_f(r['psnr_rgb'], '.3f')} | {_f(r.get('msssim_rgb'), '.5f')} | "
                    f"{_f(r.get('enc_fps'), '.1f')} | {_f(r.get('dec_fps'), '.1f')} | "
                    f"{_mem(r)} |"
                )
    lines += ["", "## BD-rate against x265 per view (low-delay P)", ""]
    lines.append(
        "PCHIP over log-rate; negative = fewer bits at equal quality; n/a = curves do not overlap. "
        f"`{REF_PREFIX}` codecs are compared with `{REF_PREFIX}x265` from the same file."
    )
    lines += ["", "| clip | codec | anchor | BD-rate (RGB PSNR) | BD-rate (MS-SSIM dB) |", "|---|---|---|---|---|"]
    for b in bd:
        lines.append(
            f"| {b['clip']} | {b['codec']} | {b['anchor']} | {_pct(b['bd_rate_psnr'])} | "
            f"{_pct(b['bd_rate_msssim_db'])} |"
        )
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"
