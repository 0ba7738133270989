"""Build a small training pack that travels (e.g. to a lent GPU machine with a 64 MiB limit).

    python -m svcodec.train.pack --data ../shared/data --out runs/pack [--max-mb 40]

The pack has the data dir's layout, so every loader reads it through `--data runs/pack`:

    stereo_video/<name>_{left,right}.mp4   mono_video/<name>.mp4   stereo_pairs/<src>/<id>_{L,R}.webp

Each source gives a downscale (short side at most --side px, centre crop to at most
--side x --side) and, when the source is much larger, also a native-resolution centre crop
(name suffix `_native`), so both the scene content and the native pixel statistics travel.
Videos keep a consecutive frame range (P-frame training needs temporal order) and are stored
as H.264 4:4:4 (high quality, untagged BT.601 like the shared data); stills as WebP. Both
views of a stereo source use the same box. The evaluation clips (`<data>/stereo/`) are never
read. manifest.json records every source, box, frame range and file; the pack holds only
real footage (second views derived from mono frames are made on the fly by the training
sampler and are labelled in the manifest as such).

Deterministic: the same input and settings give the same files (single-threaded encoders,
no timestamps). If the pack comes out larger than --max-mb, videos are re-encoded at a
higher crf and stills at a lower quality until it fits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from .data import DEFAULT_DATA

STILL_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


# -- geometry ---------------------------------------------------------------------------------
def plan_boxes(w: int, h: int, side: int, native_ratio: float = 1.5) -> list[dict]:
    """What to keep of a w x h source: a downscale (short side <= side, centre crop to at most
    side x side, even sizes) and, if the source is over native_ratio x larger, a native crop."""
    scale = max(1.0, min(w, h) / side)
    sw, sh = int(round(w / scale)) // 2 * 2, int(round(h / scale)) // 2 * 2
    out = [_centre("scaled", sw, sh, side, scale)]
    if scale > native_ratio:
        out.append(_centre("native", w, h, side, 1.0))
    return out


def _centre(kind: str, w: int, h: int, side: int, scale: float) -> dict:
    cw, ch = min(w, side) // 2 * 2, min(h, side) // 2 * 2
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return {"kind": kind, "scale": round(scale, 4), "scaled_size": [w, h], "crop_box": [x0, y0, x0 + cw, y0 + ch]}


def apply_box(img: np.ndarray, box: dict) -> np.ndarray:
    from PIL import Image

    sw, sh = box["scaled_size"]
    if (img.shape[1], img.shape[0]) != (sw, sh):
        img = np.asarray(Image.fromarray(img).resize((sw, sh), Image.Resampling.BOX))
    x0, y0, x1, y1 = box["crop_box"]
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def frame_range(n: int, frames: int) -> tuple[int, int]:
    """The middle `frames` consecutive frames (all when fewer)."""
    k = min(n, frames)
    start = (n - k) // 2
    return start, start + k


# -- encoders ---------------------------------------------------------------------------------
def encode_video(frames: list[np.ndarray], path: Path, crf: float, fps: int = 25) -> None:
    """H.264 High 4:4:4, single-threaded (so the bytes repeat), no B-frames."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as c:
        c.metadata.clear()
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv444p"
        s.codec_context.thread_count = 1
        s.options = {"crf": f"{crf:g}", "preset": "medium", "x264-params": "threads=1:bframes=0"}
        for a in frames:
            f = av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv444p")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def encode_still(img: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, format="WEBP", quality=quality, method=6)


def _load_still(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# -- sources ----------------------------------------------------------------------------------
def find_sources(root: Path) -> list[dict]:
    """Training sources under root in a fixed order; never root/stereo (evaluation clips)."""
    out = []
    for p in sorted((root / "stereo_video").glob("*_left.mp4")):
        right = p.with_name(p.name[: -len("_left.mp4")] + "_right.mp4")
        if right.exists():
            out.append({"type": "stereo_video", "name": p.name[: -len("_left.mp4")], "files": [p, right]})
    for p in sorted((root / "mono_video").glob("*.mp4")):
        out.append({"type": "mono_video", "name": p.stem, "files": [p]})
    stills = sorted(q for q in (root / "stereo_pairs").rglob("*_L.*") if q.suffix.lower() in STILL_SUFFIXES)
    for left in stills:
        rights = [q for q in left.parent.glob(left.stem[:-2] + "_R.*") if q.suffix.lower() in STILL_SUFFIXES]
        if rights:
            src = left.parent.relative_to(root / "stereo_pairs").as_posix()
            out.append({"type": "stereo_pairs", "name": f"{src}/{left.stem[:-2]}", "files": [left, sorted(rights)[0]]})
    return out


def _out_names(src: dict, kind: str) -> list[str]:
    suffix = "" if kind == "scaled" else "_native"
    if src["type"] == "stereo_video":
        return [f"stereo_video/{src['name']}{suffix}_{v}.mp4" for v in ("left", "right")]
    if src["type"] == "mono_video":
        return [f"mono_video/{src['name']}{suffix}.mp4"]
    return [f"stereo_pairs/{src['name']}{suffix}_{v}.webp" for v in ("L", "R")]


def build(data: Path, out: Path, *, max_mb: float, side: int, frames: int, crf: float, quality: int,
          log=print) -> dict:
    from .data import decode_video

    sources = find_sources(data)
    if not sources:
        raise ValueError(f"{data}: no training sources (stereo_video/, mono_video/, stereo_pairs/)")
    # decode and cut once; encoding may repeat at other settings until the pack fits
    items = []
    for src in sources:
        rel = [f.relative_to(data).as_posix() for f in src["files"]]
        if src["type"] == "stereo_pairs":
            views = [[_load_still(f)] for f in src["files"]]
            h = min(v[0].shape[0] for v in views)
            w = min(v[0].shape[1] for v in views)
            views = [[v[0][:h, :w]] for v in views]  # pairs of unequal size: common top-left area
            rng, n = None, None
        else:
            views = [decode_video(f) for f in src["files"]]
            n = min(len(v) for v in views)
            rng = frame_range(n, frames)
            views = [v[rng[0] : rng[1]] for v in views]
            h, w = views[0][0].shape[:2]
        for box in plan_boxes(w, h, side):
            names = _out_names(src, box["kind"])
            cut = [[apply_box(f, box) for f in v] for v in views]
            items.append({
                "type": src["type"], "source_files": rel, "source_size": [w, h],
                "source_frames": n,
                "frame_range": None if rng is None else list(rng),
                **box, "files": names, "size": [cut[0][0].shape[1], cut[0][0].shape[0]],
                "_cut": cut,
            })
        log(f"  {src['type']}/{src['name']}: {w}x{h} -> " + ", ".join(
            f"{it['kind']} {it['size'][0]}x{it['size'][1]}" for it in items if it["source_files"] == rel))

    for attempt in range(6):
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            total = 0
            for it in items:
                for name, view in zip(it["files"], it["_cut"]):
                    path = tmp / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if it["type"] == "stereo_pairs":
                        encode_still(view[0], path, quality)
                    else:
                        encode_video(view, path, crf)
                    total += path.stat().st_size
                it["bytes"] = sum((tmp / n).stat().st_size for n in it["files"])
            log(f"  crf {crf:g}, webp quality {quality}: {total / 2**20:.2f} MiB")
            if total <= max_mb * 2**20:
                manifest = _manifest(data, items, side, frames, crf, quality, total)
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
                os.replace(tmp, out)
                return manifest
        finally:
            if tmp.exists() and not out.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        crf, quality = crf + 3, max(50, quality - 6)
    raise ValueError(f"pack does not fit in {max_mb} MB even at crf {crf - 3:g}; use fewer --frames or a smaller --side")


def _manifest(data: Path, items: list[dict], side: int, frames: int, crf: float, quality: int, total: int) -> dict:
    clean = [{k: v for k, v in it.items() if not k.startswith("_")} for it in items]
    return {
        "what": "svcodec training pack: crops/downscales of real footage, same layout as the data dir",
        "source_dir": data.name,
        "excluded": "stereo/ (the evaluation clips) is never read",
        "settings": {"side": side, "frames_per_video": frames, "video": f"H.264 yuv444p crf {crf:g} preset medium, "
                     "untagged (BT.601 limited range)", "stills": f"WebP quality {quality} method 6",
                     "downscale": "PIL box filter", "native_crop_when_scale_over": 1.5},
        "derived": {
            "stored": "nothing: every file in this pack is a crop/downscale of real camera footage",
            "made_in_training": "svcodec.train.data.derive_second_view turns some mono crops into a derived "
                                "second view (smooth random disparity, forward warp, occlusions filled, "
                                "per-view gain/offset/noise) inside the training sampler; derived views are "
                                "training data only and never used for evaluation",
        },
        "total_bytes": total,
        "items": clean,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svcodec.train.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(DEFAULT_DATA))
    ap.add_argument("--out", type=Path, required=True, help="new directory (must not exist)")
    ap.add_argument("--max-mb", type=float, default=40.0, help="size limit in MiB")
    ap.add_argument("--side", type=int, default=384, help="largest crop side, px")
    ap.add_argument("--frames", type=int, default=60, help="consecutive frames kept per video")
    ap.add_argument("--crf", type=float, default=12.0, help="starting H.264 crf")
    ap.add_argument("--quality", type=int, default=90, help="starting WebP quality")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data}: no such data directory", file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"error: {args.out}: already exists (choose a new --out or remove it)", file=sys.stderr)
        return 2
    if not 16 <= args.side <= 4096 or args.frames < 1:
        print("error: --side must be 16..4096 and --frames at least 1", file=sys.stderr)
        return 2
    try:
        m = build(args.data, args.out, max_mb=args.max_mb, side=args.side, frames=args.frames,
                  crf=args.crf, quality=args.quality)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kinds = {}
    for it in m["items"]:
        k = kinds.setdefault(it["type"], [0, 0])
        k[0] += len(it["files"])
        k[1] += it["bytes"]
    print(f"wrote {args.out}: {m['total_bytes'] / 2**20:.2f} MiB, " + ", ".join(
        f"{t} {n} files {b / 2**20:.2f} MiB" for t, (n, b) in kinds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
