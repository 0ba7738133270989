"""Shared fixtures for the codec tests: a tiny random-init intra model saved as weights, and
small synthetic stereo clips (PNG folders or lossless video) written under tmp_path.

Nothing here reads ../shared or the network; the only shipped file used is
weights/elic_small_vr.safetensors (by the few tests that ask for `shipped_codec`).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

TINY_CONFIG = dict(N=16, M=32, Nz=16, groups=[8, 8, 16], res_blocks=0)


def make_tiny_model(seed: int):
    """The tiny ELIC (N=16, M=32) with random weights. The gain unit is raised by e**2.5 so the
    random analysis transform yields latents of a few units: then the latent substreams carry
    real symbols (and escapes), not only zeros, and the exactness tests exercise the coder."""
    from svcodec.nn.elic import ElicConfig, ElicIntraCodec

    torch.manual_seed(seed)
    model = ElicIntraCodec(ElicConfig(**TINY_CONFIG))
    with torch.no_grad():
        model.log_gain.add_(2.5)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    from svcodec.zoo import save_intra

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_intra(make_tiny_model(1234), path)
    return path


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    """Same architecture, another seed: a different model id."""
    from svcodec.zoo import save_intra

    path = tmp_path_factory.mktemp("weights_other") / "other.safetensors"
    save_intra(make_tiny_model(99), path)
    return path


@pytest.fixture(scope="session")
def tiny_codec(tiny_weights):
    from svcodec.zoo import load_intra

    return load_intra(tiny_weights)


@pytest.fixture(scope="session")
def other_codec(other_weights):
    from svcodec.zoo import load_intra

    return load_intra(other_weights)


@pytest.fixture(scope="session")
def shipped_codec():
    from svcodec.zoo import WEIGHTS_DIR, load_intra

    path = WEIGHTS_DIR / "elic_small_vr.safetensors"
    if not path.is_file():
        pytest.skip(f"shipped weights missing: {path}")
    return load_intra(path)


@pytest.fixture
def one_thread():
    """Torch on one thread while a test runs (restored after). The reference convolutions
    used for deterministic inference slow down by ~50x when two torch threads compete with
    another job for two cores; results are identical for any thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- clips


def smooth_frames(n: int, h: int, w: int, seed: int = 0, grey: bool = False) -> list[np.ndarray]:
    """n HxWx3 uint8 frames: moving gradients plus mild noise (R=G=B when grey)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for i in range(n):
        base = np.stack([
            (xx * 200 / max(w, 1) + 7 * i + 20 * seed) % 256,
            yy * 180 / max(h, 1) + 30,
            (xx + yy) * 100 / max(w + h, 1) + 60 + 10 * np.sin((xx + 3 * i) / 5),
        ], axis=-1)
        if grey:
            base = np.repeat(base.mean(axis=-1, keepdims=True), 3, axis=-1)
        noise = rng.normal(0, 6, base.shape[:2] + ((1,) if grey else (3,)))
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return out


def stereo_frames(n: int, h: int, w: int, seed: int = 0, grey: bool = False):
    """(lefts, rights): the right view is the left one shifted by 3 px plus its own noise."""
    lefts = smooth_frames(n, h, w, seed, grey)
    rights = [np.ascontiguousarray(np.roll(f, 3, axis=1)) for f in smooth_frames(n, h, w, seed + 100, grey)]
    return lefts, rights


def write_png_folder(folder, frames, grey: bool = False) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(frames):
        Image.fromarray(a[:, :, 0] if grey else a).save(os.path.join(folder, f"{i:04d}.png"))
    return str(folder)


def write_png_pair(root, lefts, rights, grey: bool = False) -> tuple[str, str]:
    root = Path(root)
    return (write_png_folder(root / "left", lefts, grey), write_png_folder(root / "right", rights, grey))


def write_video(path, frames, *, fps=30, codec="ffv1", grey: bool = False, display=None, sar=None,
                pts_ms=None) -> str:
    """Lossless clip: FFV1 (bgr0 / gray) in .mkv, or libx264rgb qp 0 in .mp4. ``display``:
    (degrees counter-clockwise, hflip, vflip) written as the stream's display matrix (.mp4).
    ``sar``: sample aspect ratio (a Fraction; MP4 keeps it, PyAV's Matroska does not).
    ``pts_ms``: each frame's timestamp in milliseconds (variable frame rate)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        if display is not None:
            degrees, hflip, vflip = display
            s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264rgb":
            s.pix_fmt, s.options = "rgb24", {"qp": "0"}
        else:
            s.pix_fmt = "gray" if grey else "bgr0"
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[:, :, 0]) if grey else a,
                                           format="gray" if grey else "rgb24")
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            if codec == "ffv1" and not grey:
                f = f.reformat(format="bgr0")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def read_video(path) -> list[np.ndarray]:
    """All frames as HxWx3 RGB (grey streams: HxW)."""
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="gray") if f.format.name.startswith("gray") else f.to_ndarray(format="rgb24"))
        return out


def read_png_folder(folder) -> list[np.ndarray]:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    out = []
    for n in names:
        with Image.open(os.path.join(folder, n)) as im:
            out.append(np.asarray(im).copy())
    return out


def to_grey(a: np.ndarray) -> np.ndarray:
    """How the decoder reduces an RGB reconstruction to one channel (rounded channel mean)."""
    return ((a.astype(np.uint16).sum(axis=2) + 1) // 3).astype(np.uint8)
