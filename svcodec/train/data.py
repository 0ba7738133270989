"""Training images: real frames from the shared stereo/mono footage, decoded once into a cache.

The evaluation clips (`<data>/stereo/`) are never read here: training uses `stereo_video/`,
`mono_video/` and `stereo_pairs/` only, so benchmark figures stay honest. A training pack
(`python -m svcodec.train.pack`) has the same layout, so `--data PACK` works the same way.

Videos decode with PyAV when it is installed, else with OpenCV (the GPU machine has only
opencv-python-headless): neither is imported until a video is read.

`derive_second_view` makes a second camera view from a real mono frame (a derived, never
evaluated, stereo sample); the crop sampler uses it on some mono crops.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = os.environ.get("SVC_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


def cache_dir() -> Path:
    """Where decoded videos are cached (read at call time, so tests can point it elsewhere)."""
    return Path(os.environ.get("SVC_CACHE", Path.home() / ".cache" / "svcodec"))


# older names, still imported by sequences.py
CACHE_DIR = cache_dir()


def _have_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(path: Path, every: int = 1, backend: str | None = None) -> list[np.ndarray]:
    """Every `every`-th frame as RGB uint8 (H, W, 3). backend: "av", "cv2" or None (PyAV if
    importable, else OpenCV)."""
    backend = backend or ("av" if _have_av() else "cv2")
    frames = []
    if backend == "av":
        import av

        with av.open(str(path)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i % every == 0:
                    frames.append(f.to_ndarray(format="rgb24"))
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            i += 1
        cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return frames


_decode_video = decode_video  # older name, still imported by sequences.py


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def training_groups(data_dir: str = DEFAULT_DATA) -> dict[str, list[np.ndarray]]:
    """Groups of frames (one per source video / the still-pair set), cached as .npz."""
    root = Path(data_dir)
    sources: list[tuple[str, Path, int]] = []
    for sub, every in (("stereo_video", 2), ("mono_video", 3)):
        for p in sorted((root / sub).glob("*.mp4")):
            # both views of one stereo clip form one group (the clip, not the view, is the unit)
            name = re.sub(r"_(left|right)$", "", p.stem)
            sources.append((f"{sub}/{name}", p, every))
    groups: dict[str, list[np.ndarray]] = {}
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    for name, path, every in sources:
        key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{every}".encode()).hexdigest()[:12]
        cache = cdir / f"{key}.npy"
        if cache.exists():
            arr = np.load(cache, allow_pickle=False)
        else:
            arr = np.stack(decode_video(path, every))
            tmp = cdir / f".{key}.{os.getpid()}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, cache)
        groups.setdefault(name, []).extend(arr)
    pairs = sorted((root / "stereo_pairs").rglob("*_[LR].*"))
    pairs = [p for p in pairs if p.suffix.lower() in (".png", ".webp", ".jpg", ".jpeg")]
    if pairs:
        groups["stereo_pairs"] = [_load_image(p) for p in pairs]
    if not groups:
        raise FileNotFoundError(f"no training footage under {root}")
    return groups


def smooth_field(h: int, w: int, rng: np.random.Generator, lo: float, hi: float, grid: int = 4) -> np.ndarray:
    """A smooth random field in [lo, hi]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.random((grid, grid))
    ys = np.linspace(0, grid - 1, h)
    xs = np.linspace(0, grid - 1, w)
    y0 = np.minimum(ys.astype(int), grid - 2)
    x0 = np.minimum(xs.astype(int), grid - 2)
    ty, tx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    f = (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty
    return lo + (hi - lo) * f


def warp_horizontal(img: np.ndarray, disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-warps a left view to a right view: the pixel at x moves to x - round(d(x)).
    Where two pixels land on one spot the nearer (larger disparity) wins; spots nothing lands
    on (occlusions, disocclusions) are filled from the nearest landed pixel to their right,
    i.e. from the background side, else from the left. Returns (view, filled mask)."""
    h, w = disparity.shape
    d = np.rint(disparity).astype(np.int64)
    ys, xs = np.mgrid[0:h, 0:w]
    xt = xs - d
    inside = (xt >= 0) & (xt < w)
    # write far (small d) first so near pixels overwrite them
    order = np.argsort(d[inside], kind="stable")
    src_y, src_x, dst_x = ys[inside][order], xs[inside][order], xt[inside][order]
    out = np.zeros_like(img)
    hit = np.zeros((h, w), dtype=bool)
    out[src_y, dst_x] = img[src_y, src_x]
    hit[src_y, dst_x] = True
    cols = np.broadcast_to(np.arange(w), (h, w))
    # nearest hit column to the right (w if none), then to the left (-1 if none)
    right = np.minimum.accumulate(np.where(hit, cols, w)[:, ::-1], axis=1)[:, ::-1]
    left = np.maximum.accumulate(np.where(hit, cols, -1), axis=1)
    fill = np.where(right < w, right, np.maximum(left, 0))
    rows = np.arange(h)[:, None]
    out = np.where(hit[..., None], out, out[rows, fill])
    return out, ~hit


def derive_second_view(img: np.ndarray, rng: np.random.Generator, max_disparity: float | None = None,
                       photometric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A derived second camera view of a real mono frame (training only, never evaluated):
    a smooth random disparity field (0..max_disparity, default 1/16 of the width), a
    horizontal forward warp with occlusion holes filled, then this camera's own gain, offset
    and sensor noise. Returns (view as uint8, disparity field)."""
    h, w = img.shape[:2]
    hi = max_disparity if max_disparity is not None else w / 16
    lo = rng.uniform(0, 0.5) * hi
    disp = smooth_field(h, w, rng, lo, hi)
    view, _ = warp_horizontal(img, disp)
    if not photometric:
        return view, disp
    gain = rng.uniform(0.9, 1.1, size=3)
    offset = rng.uniform(-8, 8, size=3)
    noise = rng.normal(0, rng.uniform(0, 2.0), size=view.shape)
    out = view.astype(np.float32) * gain + offset + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), disp


class CropSampler:
    """Random crops: a source group is drawn uniformly (so one long clip does not dominate),
    then a frame, an optional 2x box downscale of large frames, flips and a crop. With
    probability `derived_p` a crop from a mono source is replaced by its derived second view
    (another camera's look: warp, occlusions, photometric differences)."""

    def __init__(self, groups: dict[str, list[np.ndarray]], crop: int, seed: int = 0, derived_p: float = 0.0):
        names = [k for k, g in groups.items() if len(g)]
        self.groups = [groups[k] for k in names]
        self.mono = [k.startswith("mono_video/") for k in names]
        self.crop = crop
        self.derived_p = derived_p
        self.rng = np.random.default_rng(seed)

    @property
    def state(self) -> dict:
        """Position of the sampler's random stream (saved in checkpoints)."""
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = value

    def _one(self) -> np.ndarray:
        gi = self.rng.integers(len(self.groups))
        g = self.groups[gi]
        img = g[self.rng.integers(len(g))]
        c = self.crop
        if min(img.shape[:2]) >= 4 * c and self.rng.random() < 0.5:
            # 2x box downscale of a 2c x 2c region (same as downscaling the frame, then cropping)
            y, x = self.rng.integers(img.shape[0] - 2 * c + 1), self.rng.integers(img.shape[1] - 2 * c + 1)
            reg = img[y : y + 2 * c, x : x + 2 * c].astype(np.float32)
            out = reg.reshape(c, 2, c, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        else:
            h, w = img.shape[:2]
            if h < c or w < c:
                img = np.pad(img, ((0, max(0, c - h)), (0, max(0, c - w)), (0, 0)), mode="reflect")
                h, w = img.shape[:2]
            y, x = self.rng.integers(h - c + 1), self.rng.integers(w - c + 1)
            out = img[y : y + c, x : x + c]
        if self.mono[gi] and self.derived_p > 0 and self.rng.random() < self.derived_p:
            out, _ = derive_second_view(out, self.rng)
        if self.rng.random() < 0.5:
            out = out[:, ::-1]
        if self.rng.random() < 0.5:
            out = out[::-1]
        return out

    def batch(self, n: int, as_uint8: bool = False) -> torch.Tensor:
        """(n, 3, crop, crop) in [0, 1] float32, or uint8 (4x less to copy to a GPU, which
        then converts with `to_unit`)."""
        arr = torch.from_numpy(np.stack([self._one() for _ in range(n)])).permute(0, 3, 1, 2).contiguous()
        return arr if as_uint8 else to_unit(arr)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 image batch -> float32 in [0, 1]."""
    return x.float().div_(255.0)
