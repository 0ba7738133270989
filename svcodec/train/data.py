"""Training images: real frames from the shared stereo/mono footage, decoded once into a cache.

The evaluation clips (`<data>/stereo/`) are never read here: training uses `stereo_video/`,
`mono_video/` and `stereo_pairs/` only, so benchmark figures stay honest.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = os.environ.get("SVC_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
CACHE_DIR = Path(os.environ.get("SVC_CACHE", Path.home() / ".cache" / "svcodec"))


def _decode_video(path: Path, every: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                frames.append(f.to_ndarray(format="rgb24"))
    return frames


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
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for name, path, every in sources:
        key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{every}".encode()).hexdigest()[:12]
        cache = CACHE_DIR / f"{key}.npy"
        if cache.exists():
            arr = np.load(cache, allow_pickle=False)
        else:
            arr = np.stack(_decode_video(path, every))
            np.save(cache, arr)
        groups.setdefault(name, []).extend(arr)
    pairs = sorted((root / "stereo_pairs").rglob("*_[LR].*"))
    pairs = [p for p in pairs if p.suffix.lower() in (".png", ".webp", ".jpg", ".jpeg")]
    if pairs:
        groups["stereo_pairs"] = [_load_image(p) for p in pairs]
    if not groups:
        raise FileNotFoundError(f"no training footage under {root}")
    return groups


class CropSampler:
    """Random crops: a source group is drawn uniformly (so one long clip does not dominate),
    then a frame, an optional 2x box downscale of large frames, flips and a crop."""

    def __init__(self, groups: dict[str, list[np.ndarray]], crop: int, seed: int = 0):
        self.groups = [g for g in groups.values() if g]
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def _one(self) -> np.ndarray:
        g = self.groups[self.rng.integers(len(self.groups))]
        img = g[self.rng.integers(len(g))]
        c = self.crop
        if min(img.shape[:2]) >= 4 * c and self.rng.random() < 0.5:
            h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
            img = img[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        h, w = img.shape[:2]
        if h < c or w < c:
            img = np.pad(img, ((0, max(0, c - h)), (0, max(0, c - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y, x = self.rng.integers(h - c + 1), self.rng.integers(w - c + 1)
        out = img[y : y + c, x : x + c]
        if self.rng.random() < 0.5:
            out = out[:, ::-1]
        if self.rng.random() < 0.5:
            out = out[::-1]
        return out

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self._one() for _ in range(n)]).astype(np.float32) / 255.0
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
