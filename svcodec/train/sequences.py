"""Training clips for the P-frame model: runs of consecutive frames, both views cropped alike.

Sources are the real stereo videos (`stereo_video/`) and, for temporal pre-training and to widen
stereo training, the real mono videos (`mono_video/`), whose second view is *derived*: the same
frame shifted by a constant disparity with a small photometric difference. Derived clips are
marked as such and never used for evaluation (the evaluation clips in `stereo/` are never read).

Frames larger than 700 px on their short side are kept at half resolution (box filter): it saves
memory and gives more motion per pixel, which the 128-256 px training crops need.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import CACHE_DIR, DEFAULT_DATA, _decode_video

HALVE_ABOVE = 700


@dataclass
class Clip:
    name: str
    left: np.ndarray  # (T, H, W, 3) uint8
    right: np.ndarray | None  # None: mono clip, a right view is derived when sampled


def _halve(frames: np.ndarray) -> np.ndarray:
    t, h, w, _ = frames.shape
    h2, w2 = h // 2 * 2, w // 2 * 2
    f = frames[:, :h2, :w2].reshape(t, h2 // 2, 2, w2 // 2, 2, 3).mean(axis=(2, 4))
    return f.round().astype(np.uint8)


def _cached_frames(path: Path) -> np.ndarray:
    key = hashlib.sha1(f"seq:{path.resolve()}:{path.stat().st_size}:{HALVE_ABOVE}".encode()).hexdigest()[:12]
    cache = CACHE_DIR / f"{key}.npy"
    if cache.exists():
        return np.load(cache, allow_pickle=False)
    frames = np.stack(_decode_video(path, 1))
    if min(frames.shape[1:3]) > HALVE_ABOVE:
        frames = _halve(frames)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".part.npy")
    np.save(tmp, frames)
    tmp.replace(cache)
    return frames


def load_clips(data_dir: str = DEFAULT_DATA, mono: bool = True) -> list[Clip]:
    root = Path(data_dir)
    clips = []
    for lp in sorted((root / "stereo_video").glob("*_left.mp4")):
        rp = lp.with_name(lp.name.replace("_left.mp4", "_right.mp4"))
        if not rp.exists():
            continue
        left, right = _cached_frames(lp), _cached_frames(rp)
        n = min(len(left), len(right))
        if left.shape[1:] != right.shape[1:] or n < 2:
            continue
        clips.append(Clip(f"stereo_video/{re.sub(r'_left$', '', lp.stem)}", left[:n], right[:n]))
    if mono:
        for p in sorted((root / "mono_video").glob("*.mp4")):
            frames = _cached_frames(p)
            if len(frames) >= 2:
                clips.append(Clip(f"mono_video/{p.stem} (derived right view)", frames, None))
    if not clips:
        raise FileNotFoundError(f"no training video under {root} (stereo_video/, mono_video/)")
    return clips


class ClipSampler:
    """Batches of (B, T, 2, 3, h, w) float tensors in [0, 1]: T consecutive frames (temporal
    stride 1 or 2), one crop box for every frame and view. A horizontal flip swaps the views so
    that the left view stays the left one geometrically."""

    def __init__(self, clips: list[Clip], frames: int, crop: tuple[int, int], seed: int = 0,
                 stereo_share: float = 0.75):
        self.stereo = [c for c in clips if c.right is not None]
        self.mono = [c for c in clips if c.right is None]
        self.frames, self.crop = frames, crop
        self.stereo_share = stereo_share if self.mono else 1.0
        self.rng = np.random.default_rng(seed)

    def _pick(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.rng
        use_stereo = self.stereo and (r.random() < self.stereo_share or not self.mono)
        clip = (self.stereo if use_stereo else self.mono)[r.integers(len(self.stereo if use_stereo else self.mono))]
        t_len = len(clip.left)
        stride = 2 if (t_len >= 2 * self.frames and r.random() < 0.3) else 1
        span = (self.frames - 1) * stride + 1
        if span > t_len:
            stride, span = 1, min(self.frames, t_len)
        t0 = r.integers(t_len - span + 1)
        idx = [min(t0 + i * stride, t_len - 1) for i in range(self.frames)]
        ch, cw = self.crop
        h, w = clip.left.shape[1:3]
        if clip.right is None:
            # derived view: right(x) = left(x + d), a fronto-parallel plane at disparity d
            d = int(r.integers(0, min(24, max(1, w - cw))))
            y0 = r.integers(max(1, h - ch + 1))
            x0 = r.integers(max(1, w - cw - d + 1))
            lft = clip.left[idx, y0:y0 + ch, x0:x0 + cw]
            rgt = clip.left[idx, y0:y0 + ch, x0 + d:x0 + d + cw].astype(np.float32)
            gain, offset = r.uniform(0.92, 1.08), r.uniform(-6, 6)
            rgt = np.clip(rgt * gain + offset, 0, 255).astype(np.uint8)
        else:
            y0 = r.integers(max(1, h - ch + 1))
            x0 = r.integers(max(1, w - cw + 1))
            lft = clip.left[idx, y0:y0 + ch, x0:x0 + cw]
            rgt = clip.right[idx, y0:y0 + ch, x0:x0 + cw]
        pair = np.stack([lft, rgt], axis=1)  # (T, 2, h, w, 3)
        pair = _pad_to(pair, ch, cw)
        if r.random() < 0.5:  # mirror: the mirrored left view is the new right view
            pair = pair[:, ::-1, :, ::-1]
        if r.random() < 0.5:
            pair = pair[:, :, ::-1]
        return pair

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self._pick() for _ in range(n)]).astype(np.float32) / 255.0
        return torch.from_numpy(arr).permute(0, 1, 2, 5, 3, 4).contiguous()


def _pad_to(pair: np.ndarray, ch: int, cw: int) -> np.ndarray:
    t, v, h, w, c = pair.shape
    if h >= ch and w >= cw:
        return pair
    return np.pad(pair, ((0, 0), (0, 0), (0, max(0, ch - h)), (0, max(0, cw - w)), (0, 0)), mode="edge")
