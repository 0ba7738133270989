"""`svc bench`: rate-distortion benchmark of svcodec against classical stereo anchors.

Every codec (ours, x265/x264 anchors, an optional external MV-HEVC encoder) is fed the same
RGB frames and judged with the same metric functions, so the numbers are comparable.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import click
import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import anchors as anc
from ..allocator import tune_malloc
from ..codec import DEFAULT_GOP, MAX_REFINE_STEPS
from ..metrics import measure_stereo, psnr_rgb
from .bitshare import bit_allocation
from .bdrate import MIN_OVERLAP_DB
from .compare import PREV_PREFIX, REF_PREFIX, bd_table
from .report import markdown, plot_rd, write_json

console = Console(stderr=True)
IMAGE_EXT = (".webp", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PEAK_RSS_METHOD = (
    "VmHWM of the benchmark process, reset before each codec point via /proc/self/clear_refs "
    "(falls back to getrusage ru_maxrss, a process-lifetime peak, where that is unavailable); "
    "includes the interpreter, source frames and whatever earlier points left resident (torch, "
    "models); peak_rss_delta_mb subtracts the RSS just before the call"
)


# --- inputs ---------------------------------------------------------------------------------


def _frame_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXT)


def find_clips(data: Path | None, pairs: tuple) -> list[tuple[str, Path, Path]]:
    """(name, left_dir, right_dir) for a clip folder, a folder of clip folders, or explicit pairs."""
    clips = []
    if data is not None:
        cands = [data] if (data / "left").is_dir() else sorted(p for p in data.iterdir() if p.is_dir())
        clips += [(c.name, c / "left", c / "right") for c in cands if (c / "left").is_dir() and (c / "right").is_dir()]
    for left, right in pairs:
        left, right = Path(left), Path(right)
        name = left.parent.name if left.parent == right.parent else f"{left.name}+{right.name}"
        clips.append((name, left, right))
    return clips


def load_views(left_dir: Path, right_dir: Path, frames: int) -> tuple[list, list]:
    lf, rf = _frame_files(left_dir)[:frames], _frame_files(right_dir)[:frames]
    n = min(len(lf), len(rf))
    if n == 0:
        raise click.ClickException(f"no frames in {left_dir} / {right_dir}")

    def load(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))

    left, right = [load(p) for p in lf[:n]], [load(p) for p in rf[:n]]
    h, w = left[0].shape[:2]
    # 4:2:0 anchors need even sizes; crop every codec's source alike so all see the same pixels.
    he, we = h - h % 2, w - w % 2
    if (he, we) != (h, w) or any(f.shape[:2] != (h, w) for f in left + right):
        left = [f[:he, :we] for f in left]
        right = [f[:he, :we] for f in right]
    return left, right


# --- resource measurement -----------------------------------------------------------------


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak-RSS watermark (VmHWM) of this process
        return True
    except OSError:
        return False


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB


# --- one codec point ----------------------------------------------------------------------

# svcodec runs as two codecs: its GOP coder (I, P, P, ...) and all-intra, so the gain of its
# P-frames is measured on the same frames, by the same build.
SVCODEC, SVCODEC_INTRA, SVCODEC_REFINE = "svcodec", "svcodec-intra", "svcodec-refine"
SVCODEC_VARIANTS = (SVCODEC, SVCODEC_INTRA, SVCODEC_REFINE)


def _our_codec(left, right, rate: float, gop: int, fps: Fraction, device: str, refine: int = 0,
               weights: dict | None = None) -> dict:
    """One svcodec point. `weights`: weights/inter_weights for encoder and decoder alike, when
    not the shipped ones (a stream names its weights, and only shipped ones are found by name)."""
    from svcodec.codec.api import decode_file, encode_frames

    weights = weights or {}
    with tempfile.TemporaryDirectory(prefix="svc_bench_") as tmp:
        path = os.path.join(tmp, "clip.svc")
        t0 = time.perf_counter()
        rep = encode_frames(left, right, path, rate=rate, gop=gop, fps=fps, device=device, refine=refine, **weights)
        enc_s = time.perf_counter() - t0
        size = os.path.getsize(path)  # everything in the container counts
        allocation = bit_allocation(path)
        model = stream_model(path)
        t0 = time.perf_counter()
        dec_l, dec_r = decode_file(path, device=device, **weights)
        dec_s = time.perf_counter() - t0
    if getattr(rep, "bytes", size) != size:
        console.print(f"[yellow]encoder reported {rep.bytes} bytes, file has {size}; using the file size")
    timings = getattr(rep, "timings", None)
    return {
        "bytes_raw": size,
        "bits": 8 * size,
        "enc_seconds": enc_s,
        "dec_seconds": dec_s,
        "enc_seconds_reported": getattr(rep, "enc_seconds", None),
        # The encoder's own split of its time (networks, motion estimation, entropy coding), if it
        # reports one; seconds, within enc_seconds.
        "enc_timings": {k: float(v) for k, v in timings.items()} if timings else None,
        "bit_allocation": allocation,
        "model": model,  # the weights the stream names: which model this row measured
        # which motion the encoder kept for how many P-frames (svc encode --motion rd tries several)
        "p_frame_motion": getattr(rep, "p_frame_motion", None),
        "decoded": (list(dec_l), list(dec_r)),
    }


def stream_model(path) -> dict:
    """The weights a .svc file names (its sequence header): name and model id."""
    from svcodec.container import SvcReader

    seq = SvcReader(path).sequence
    return {"name": seq.model_name, "id": seq.model_id.hex()}


def measure_point(fn, left, right, msssim: bool) -> dict:
    """Run one encode+decode, then score it; memory peak covers the codec call only."""
    _reset_peak_rss()
    base = _proc_status_mb("VmRSS") or 0.0
    r = fn()
    peak = _peak_rss_mb()
    dec_l, dec_r = r.pop("decoded")
    h, w = left[0].shape[:2]
    if len(dec_l) != len(left) or len(dec_r) != len(right) or dec_l[0].shape != left[0].shape:
        raise RuntimeError(f"decoded {len(dec_l)}+{len(dec_r)} frames of {dec_l[0].shape if dec_l else None}")
    n = len(left)
    r.update(measure_stereo(left, right, dec_l, dec_r, msssim=msssim))
    r.update(
        W=w,
        H=h,
        frames=n,
        bpp=r["bits"] / (2 * w * h * n),
        enc_fps=n / r["enc_seconds"],
        dec_fps=n / r["dec_seconds"],
        peak_rss_mb=peak,
        peak_rss_delta_mb=peak - base,  # what this codec call added on top of the process
    )
    return r


# --- reference anchors from JSON ---------------------------------------------------------


def reference_rows(anchor_dir: Path | None, clip: str) -> list[dict]:
    if anchor_dir is None or not (anchor_dir / f"{clip}.json").exists():
        return []
    data = json.loads((anchor_dir / f"{clip}.json").read_text())
    keep = ("q", "W", "H", "frames", "gop", "bits", "bpp", "psnr_rgb", "msssim_rgb", "enc_fps", "dec_fps")
    return [
        {"clip": clip, "codec": REF_PREFIX + r["anchor"], "source": "reference", **{k: r.get(k) for k in keep}}
        for r in data["results"]
    ]


def _bench_rows(path: Path) -> tuple[list[dict], str]:
    """The result rows (those naming a clip and a codec) and the date of an earlier bench.json.
    Read once, before any measuring, so a wrong file is refused at once and not after the
    first clip."""
    try:
        data = json.loads(path.read_text())
        when = str(data.get("meta", {}).get("date", "?"))
        rows = [r for r in data["results"] if "clip" in r and "codec" in r]
        if not all(isinstance(r, dict) for r in rows):
            raise TypeError("a result row is not an object")
        return rows, when
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise click.UsageError(f"{path}: not a bench.json ({e})") from None


def load_reusable(path: Path | None) -> list[dict]:
    """The measured rows of an earlier bench.json, marked as reused."""
    if path is None:
        return []
    rows, when = _bench_rows(path)
    reusable = []
    for r in rows:
        source = str(r.get("source", ""))
        if source == "measured":
            reusable.append({**r, "source": f"reused from {path.name} ({when})"})
        elif source.startswith("reused from"):
            # keeps the name of the run that measured it (a second --reuse in a row once
            # dropped every such row: the x265 and all-intra rows)
            reusable.append(r)
    return reusable


def load_baseline(path: Path | None) -> list[dict]:
    """svcodec's rows of an earlier bench.json (e.g. the last release's), renamed prev:<codec>, so
    this run's svcodec is compared with them: what a change of weights or code gained."""
    if path is None:
        return []
    rows, when = _bench_rows(path)
    return [{**r, "codec": PREV_PREFIX + r["codec"], "source": f"baseline {path.name} ({when})"}
            for r in rows if r["codec"] in SVCODEC_VARIANTS]


def reused_rows(reusable: list[dict], clip: str, frames: int, gop: int, measured: set[str]) -> list[dict]:
    """Rows for `clip` at the same frame count and GOP (all-intra rows at any GOP), for the
    codecs this run did not measure (their numbers do not change when only svcodec's weights
    do)."""
    return [r for r in reusable if r["clip"] == clip and r.get("frames") == frames and r["codec"] not in measured
            and (r.get("coded_gop") == 1 or r.get("gop") == gop)]


# --- driver ---------------------------------------------------------------------------------


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _rates(s: str) -> list:
    """svcodec rate points may be fractional (variable-rate model); keep integers as ints."""
    vals = [float(x) for x in s.split(",") if x.strip()]
    return [int(v) if v.is_integer() else v for v in vals]


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A clip folder (left/, right/) or a folder of clip folders.")
@click.option("--pair", "pairs", nargs=2, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="LEFT_DIR RIGHT_DIR of one clip (repeatable).")
@click.option("--frames", default=32, show_default=True, help="Frames per clip (from the start).")
@click.option("--gop", type=click.IntRange(min=1), default=DEFAULT_GOP, show_default=True,
              help="Intra period for every codec (svc encode's default; at most the clip's frames); "
                   "all-intra codecs use 1.")
@click.option("--rates", default="0,1,2,3", show_default=True, help="svcodec rate points ('' = skip svcodec).")
@click.option("--svcodec-intra/--no-svcodec-intra", "with_intra", default=True, show_default=True,
              help=f"Also run svcodec all-intra (GOP 1) at every rate point, as codec '{SVCODEC_INTRA}'.")
@click.option("--refine", type=click.IntRange(0, MAX_REFINE_STEPS), default=0, show_default=True, metavar="N",
              help=f"Also run svcodec with `svc encode --refine N` (same GOP) at every rate point, as codec "
                   f"'{SVCODEC_REFINE}', compared with plain svcodec. Slow: 20 steps took 6-13x the encode time.")
@click.option("--qps", default="22,27,32,37", show_default=True, help="Anchor QPs.")
@click.option("--anchors", "anchor_names", default="x265,x265-intra,x264,sbs,x265-444", show_default=True,
              help=f"Classical anchors among {','.join(anc.ANCHORS)} ('' = none).")
@click.option("--anchor-json", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of <clip>.json anchors measured elsewhere (e.g. ../shared/anchors); plotted and tabled as ref:*.")
@click.option("--mvhevc-cmd", default=None,
              help="External MV-HEVC encoder command; placeholders {left} {right} {out} {qp} {gop} {w} {h} {frames} {fps}.")
@click.option("--device", default="cpu", show_default=True, help="Device for svcodec.")
@click.option("--fps", default=30, show_default=True, help="Nominal frame rate passed to encoders.")
@click.option("--no-msssim", is_flag=True, help="Skip MS-SSIM (faster).")
@click.option("--reuse", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An earlier bench.json: rows of codecs this run does not measure (same clip and frame "
                   "count) are taken from it, marked 'reused', so only the changed codec need be rerun.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"An earlier bench.json (e.g. docs/bench/*.json, the shipped release): its svcodec rows "
                   f"(same clip, frame count and GOP) come in as {PREV_PREFIX}svcodec and {PREV_PREFIX}svcodec-intra, "
                   "and each svcodec variant gets a BD-rate against its earlier self.")
@click.option("--weights", default=None, metavar="W",
              help="svcodec's I-frame weights (name in weights/ or .safetensors path), e.g. a training candidate.")
@click.option("--inter-weights", default=None, metavar="W", help="svcodec's P-frame weights (name or path).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench_out"), show_default=True)
def bench_command(data, pairs, frames, gop, rates, with_intra, refine, qps, anchor_names, anchor_json, mvhevc_cmd,
                  device, fps, no_msssim, reuse, baseline, weights, inter_weights, out):
    """Rate-distortion benchmark: svcodec vs x265/x264 anchors on stereo clips."""
    tune_malloc()  # as svc encode/decode do where memory allows (svcodec/allocator.py)
    clips = find_clips(data, pairs)
    if not clips:
        raise click.UsageError("no clips: give --data (folder with left/ and right/) or --pair")
    rate_list, qp_list = _rates(rates), _ints(qps)
    reusable = load_reusable(reuse)
    previous = load_baseline(baseline)
    ours = {k: v for k, v in (("weights", weights), ("inter_weights", inter_weights)) if v}
    names = [a.strip() for a in anchor_names.split(",") if a.strip()]
    unknown = [a for a in names if a not in anc.ANCHORS]
    if unknown:
        raise click.UsageError(f"unknown anchors {unknown}; choose from {list(anc.ANCHORS)}")
    fps_f = Fraction(fps)
    notes = []

    if rate_list:
        try:
            from svcodec.codec.api import decode_file, encode_frames  # noqa: F401
        except ImportError as e:
            notes.append(f"svcodec skipped: cannot import svcodec.codec.api ({e})")
            console.print(f"[yellow]{notes[-1]}")
            rate_list = []

    out.mkdir(parents=True, exist_ok=True)
    rows, clip_meta = [], {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        n_jobs = len(clips) * (len(rate_list) * (1 + with_intra + bool(refine))
                               + len(qp_list) * (len(names) + bool(mvhevc_cmd)))
        task = progress.add_task("bench", total=n_jobs)
        for clip, ldir, rdir in clips:
            left, right = load_views(ldir, rdir, frames)
            g = min(gop, len(left))  # a GOP longer than the clip codes like one of its length
            h, w = left[0].shape[:2]
            clip_meta[clip] = {"W": w, "H": h, "frames": len(left), "gop": g, "left": str(ldir), "right": str(rdir),
                               **_colour_ceilings(left + right)}

            # (codec, rate or QP, GOP it codes with, job); anchors first: their memory peaks are
            # then not inflated by a loaded neural model.
            jobs = [(a, q, 1 if anc.ANCHORS[a].intra else g,
                     lambda a=a, q=q: anc.run_anchor(a, left, right, q, g, fps_f))
                    for a in names for q in qp_list]
            if mvhevc_cmd:
                jobs += [("mvhevc-ext", q, g, lambda q=q: anc.run_mvhevc_cmd(mvhevc_cmd, left, right, q, g, fps_f))
                         for q in qp_list]
            jobs += [(SVCODEC, r, g, lambda r=r: _our_codec(left, right, r, g, fps_f, device, weights=ours))
                     for r in rate_list]
            if with_intra and g > 1:  # at GOP 1 'svcodec' is already all-intra
                jobs += [(SVCODEC_INTRA, r, 1, lambda r=r: _our_codec(left, right, r, 1, fps_f, device, weights=ours))
                         for r in rate_list]
            elif with_intra and rate_list:
                progress.advance(task, len(rate_list))
            if refine:
                jobs += [(SVCODEC_REFINE, r, g,
                          lambda r=r: _our_codec(left, right, r, g, fps_f, device, refine, weights=ours))
                         for r in rate_list]
            for codec, q, coded_gop, fn in jobs:
                progress.update(task, description=f"{clip} {codec} {q}")
                try:
                    r = measure_point(fn, left, right, msssim=not no_msssim)
                except Exception as e:  # one broken point must not lose the whole run
                    notes.append(f"{clip} {codec} {q} failed: {type(e).__name__}: {e}")
                    console.print(f"[red]{notes[-1]}")
                else:
                    rows.append({"clip": clip, "codec": codec, "q": q, "gop": g, "coded_gop": coded_gop,
                                 "source": "measured", **r})
                progress.advance(task)
            rows += reused_rows(reusable, clip, len(left), g, measured={r["codec"] for r in rows if r["clip"] == clip})
            rows += reused_rows(previous, clip, len(left), g, measured=set())
            rows += reference_rows(anchor_json, clip)
            plot_rd(out / f"rd_{clip}.png", clip, [r for r in rows if r["clip"] == clip])

    bd = bd_table(rows)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in click.get_current_context().params.items()},
        "frames": frames,
        "gop": gop,
        "gop_note": "gop = the run's GOP setting; coded_gop = the intra period a codec actually used "
                    "(1 for x265-intra*, svcodec-intra)",
        "fps": fps,
        "clips": clip_meta,
        # the weights each measured svcodec variant used, as its streams name them
        "svcodec_models": {c: sorted({f"{r['model']['name']} {r['model']['id']}" for r in rows
                                      if r["codec"] == c and r.get("source") == "measured" and r.get("model")})
                           for c in SVCODEC_VARIANTS if any(r["codec"] == c for r in rows)},
        "method": "RGB -> YCbCr BT.601 limited -> 4:2:0 (2x2 mean) -> encoder -> decoder -> bilinear chroma "
                  "upsampling -> RGB for anchors (the *-444 anchors: yuv444p, no subsampling); metrics vs "
                  "source RGB for every codec",
        "bd_rate": f"PCHIP over log-rate (bjontegaard package), reported only where the two curves overlap "
                   f"over at least {MIN_OVERLAP_DB} dB of the metric; otherwise the nearest points",
        "bit_allocation": "svcodec only, read from the .svc file: I-frames (all substreams of I access units), "
                          "motion and context (texture) substreams of P access units, container overhead "
                          "(headers, substream tables, CRCs, index, trailer)",
        "timing": "wall clock of RGB in -> bitstream and bitstream -> RGB out, in-process (no start-up); "
                  "enc_timings: the encoder's own split of its time, when it reports one",
        "peak_rss": PEAK_RSS_METHOD,
        "machine": _machine(device),
        "versions": _versions(),
        "anchor_settings": {a: anc.encoder_options(anc.ANCHORS[a], "Q", "G") for a in names},
        "notes": notes,
    }
    write_json(out / "bench.json", meta, rows, bd)
    (out / "bench.md").write_text(markdown(meta, rows, bd))
    console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, rd_<clip>.png")
    for b in bd:
        p = b["psnr"]
        verdict = f"BD-rate {p['bd_rate']:+.1f}%" if p["bd_rate"] is not None else p["status"]
        console.print(f"  {b['clip']}: {b['codec']} vs {b['anchor']}: {verdict}")


def _colour_ceilings(frames: list) -> dict:
    """RGB PSNR of the colour conversion alone: the best any anchor of that chroma format can do."""
    out = {}
    for chroma, suffix in (("420", ""), ("444", "_444")):
        _, to_planes, to_rgb = anc.CHROMA[chroma]
        out["colour_only_psnr_ceiling" + suffix] = float(np.mean([psnr_rgb(f, to_rgb(*to_planes(f))) for f in frames]))
    return out


def _machine(device: str) -> dict:
    m = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
         "svcodec_device": device}
    if device.startswith("cuda"):
        try:
            import torch

            m["gpu"] = torch.cuda.get_device_name(torch.device(device))
        except Exception as e:  # the svcodec points then fail too, and say why
            m["gpu"] = f"unknown ({type(e).__name__})"
    return m


def _versions() -> dict:
    import av

    v = {"pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}
    try:
        import torch

        v["torch"] = torch.__version__
    except ImportError:
        pass
    return v


def main(argv: list[str] | None = None) -> int:
    """Entry point without click's sys.exit, for `python -m svcodec.bench.run` and embedding."""
    try:
        bench_command.main(args=argv, prog_name="svc bench", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
