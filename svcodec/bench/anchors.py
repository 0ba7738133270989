"""Classical anchors (x265 / x264 through PyAV), measured the way ../shared/anchors/README.md does.

Pipeline per view: source RGB -> YCbCr BT.601 limited range -> 4:2:0 by 2x2 mean ->
encoder -> decoder -> bilinear chroma upsampling -> RGB. Bits are the bytes of both views'
elementary streams (parameter sets included, encoder-info SEI removed).

The `-444` anchors skip chroma subsampling (yuv444p, HEVC Main 4:4:4): x265's best case when
judged in RGB PSNR, shown beside the 4:2:0 rows that people usually quote.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

# --- colour conversion -------------------------------------------------------------------

# BT.601 limited range, from RGB in [0, 255] (Y 16..235, Cb/Cr 16..240).
_RGB2YCC = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0
_YCC_OFFSET = np.array([16.0, 128.0, 128.0])
# Exact inverse, so the conversion alone loses only rounding and chroma subsampling.
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def _rgb_to_ycc(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ _RGB2YCC.T + _YCC_OFFSET


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HxWx3 uint8 RGB (H, W even) -> uint8 Y (HxW), Cb, Cr (H/2 x W/2); chroma = 2x2 mean."""
    ycc = _rgb_to_ycc(rgb)
    h, w = rgb.shape[:2]
    # Average in float before rounding, so subsampling adds no extra rounding step.
    sub = ycc[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    return _to_u8(ycc[:, :, 0]), _to_u8(sub[:, :, 0]), _to_u8(sub[:, :, 1])


def rgb_to_yuv444(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HxWx3 uint8 RGB -> uint8 Y, Cb, Cr planes, all HxW (same matrix and range as 4:2:0)."""
    ycc = _to_u8(_rgb_to_ycc(rgb))
    return ycc[:, :, 0], ycc[:, :, 1], ycc[:, :, 2]


def _upsample2(c: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling for chroma sited at the centre of each 2x2 block (the siting
    a 2x2 mean produces): output samples sit at 1/4 and 3/4 between input samples, edges clamped.
    Same as torch's interpolate(scale_factor=2, mode='bilinear', align_corners=False)."""
    for axis in (0, 1):
        p = np.pad(c, [(1, 1) if a == axis else (0, 0) for a in range(2)], mode="edge")
        n = c.shape[axis]
        mid = np.take(p, range(1, n + 1), axis=axis)
        lo = np.take(p, range(0, n), axis=axis)
        hi = np.take(p, range(2, n + 2), axis=axis)
        even, odd = 0.75 * mid + 0.25 * lo, 0.75 * mid + 0.25 * hi
        c = np.stack([even, odd], axis=axis + 1)
        shape = list(mid.shape)
        shape[axis] *= 2
        c = c.reshape(shape)
    return c


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    ycc = np.stack(
        [y.astype(np.float64), _upsample2(cb.astype(np.float64)), _upsample2(cr.astype(np.float64))],
        axis=-1,
    )
    return _to_u8((ycc - _YCC_OFFSET) @ _YCC2RGB.T)


def yuv444_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    ycc = np.stack([y, cb, cr], axis=-1).astype(np.float64)
    return _to_u8((ycc - _YCC_OFFSET) @ _YCC2RGB.T)


# chroma format -> (PyAV pixel format, RGB -> planes, planes -> RGB)
CHROMA = {
    "420": ("yuv420p", rgb_to_yuv420, yuv420_to_rgb),
    "444": ("yuv444p", rgb_to_yuv444, yuv444_to_rgb),
}


# --- bitstream helpers -------------------------------------------------------------------


def _nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each Annex B NAL unit including its start code."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        # A 4-byte start code owns the leading zero byte.
        starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(data)])]


def info_sei_bytes(data: bytes, codec: str) -> int:
    """Bytes of SEI NAL units whose first message is user_data_unregistered (payload type 5),
    which is where x264/x265 write their version and option string. Not counted as rate:
    it carries no picture information and would penalise small clips by hundreds of bytes."""
    total = 0
    for s, e in _nal_units(data):
        h = data.index(b"\x00\x00\x01", s) + 3
        if h >= e:
            continue
        if codec == "h264":
            is_sei, payload = (data[h] & 0x1F) == 6, h + 1
        else:  # hevc: prefix (39) or suffix (40) SEI, 2-byte NAL header
            is_sei, payload = ((data[h] >> 1) & 0x3F) in (39, 40), h + 2
        if is_sei and payload < e and data[payload] == 5:
            total += e - s
    return total


# --- encode / decode through PyAV -----------------------------------------------------------


def _encode(codec: str, planes: list, w: int, h: int, options: dict, fps: Fraction,
            pix_fmt: str = "yuv420p") -> bytes:
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base, ctx.framerate = 1 / fps, fps
    ctx.options = options
    out = bytearray()
    for i, (y, u, v) in enumerate(planes):
        if pix_fmt == "yuv420p":
            # PyAV's yuv420p ndarray layout: Y rows, then U and V flattened, as (H*3/2, W).
            arr = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
        else:  # yuv444p: planar (3, H, W)
            arr = np.stack([y, u, v])
        frame = av.VideoFrame.from_ndarray(arr, format=pix_fmt)
        frame.pts = i
        for p in ctx.encode(frame):
            out += bytes(p)
    for p in ctx.encode(None):
        out += bytes(p)
    return bytes(out)


def _frame_planes(frame, w: int, h: int, pix_fmt: str = "yuv420p"):
    if pix_fmt == "yuv444p":
        return tuple(frame.to_ndarray(format="yuv444p"))
    flat = frame.to_ndarray(format="yuv420p").ravel()
    n, c = w * h, (w // 2) * (h // 2)
    return (
        flat[:n].reshape(h, w),
        flat[n : n + c].reshape(h // 2, w // 2),
        flat[n + c : n + 2 * c].reshape(h // 2, w // 2),
    )


def _decode(codec: str, data: bytes, options: dict | None = None) -> list:
    """Decode an Annex B stream; returns av.VideoFrame list in output order."""
    ctx = av.CodecContext.create(codec, "r")
    if options:
        ctx.options = options
    frames = []
    # parse(None) flushes the parser, which holds back the last access unit.
    for pkt in ctx.parse(data) + ctx.parse(None):
        frames += ctx.decode(pkt)
    frames += ctx.decode(None)
    return frames


@dataclass(frozen=True)
class Anchor:
    codec: str  # PyAV encoder
    decoder: str
    intra: bool = False  # keyint 1
    sbs: bool = False  # one stream of the 2W x H side-by-side frame
    chroma: str = "420"  # key of CHROMA


ANCHORS = {
    "x265": Anchor("libx265", "hevc"),
    "x265-intra": Anchor("libx265", "hevc", intra=True),
    "x264": Anchor("libx264", "h264"),
    "sbs": Anchor("libx265", "hevc", sbs=True),
    "x265-444": Anchor("libx265", "hevc", chroma="444"),
    "x265-intra-444": Anchor("libx265", "hevc", intra=True, chroma="444"),
}


def encoder_options(anchor: Anchor, qp: int, gop: int) -> dict:
    """Settings from REFERENCE.md "Classical anchors": constant QP, low-delay P, closed GOP."""
    keyint = 1 if anchor.intra else gop
    if anchor.codec == "libx265":
        params = f"qp={qp}:keyint={keyint}:min-keyint={keyint}:bframes=0:scenecut=0:open-gop=0:info=0"
        params += ":log-level=error"  # console noise only; the bitstream is unaffected
        return {"preset": "medium", "tune": "psnr", "x265-params": params}
    return {
        "preset": "medium",
        "tune": "psnr",
        "qp": str(qp),
        "g": str(keyint),
        "keyint_min": str(keyint),
        "sc_threshold": "0",
        "bf": "0",
        # x264's output depends on its thread count (frame threads limit motion search), and
        # "auto" depends on the machine; one thread is reproducible and matches the shared rows.
        "threads": "1",
    }


def run_anchor(
    name: str, left: list[np.ndarray], right: list[np.ndarray], qp: int, gop: int, fps: Fraction = Fraction(30)
) -> dict:
    """Encode + decode one stereo clip with a classical anchor.

    Returns bits (both views, info SEI removed), raw bytes, timings and decoded RGB views.
    Timings cover RGB in -> bitstream and bitstream -> RGB out (colour conversion included),
    the same span our codec's encode_frames/decode_file cover."""
    a = ANCHORS[name]
    h, w = left[0].shape[:2]
    if a.chroma == "420" and (h % 2 or w % 2):
        raise ValueError(f"4:2:0 anchors need even frame sizes, got {w}x{h}")
    pix_fmt, to_planes, to_rgb = CHROMA[a.chroma]
    views = [[np.concatenate([l, r], axis=1) for l, r in zip(left, right)]] if a.sbs else [left, right]
    opts = encoder_options(a, qp, gop)

    t0 = time.perf_counter()
    streams = [_encode(a.codec, [to_planes(f) for f in v], v[0].shape[1], h, opts, fps, pix_fmt) for v in views]
    enc_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    decoded = []
    for v, s in zip(views, streams):
        vw = v[0].shape[1]
        decoded.append([to_rgb(*_frame_planes(f, vw, h, pix_fmt)) for f in _decode(a.decoder, s)])
    dec_s = time.perf_counter() - t0

    if a.sbs:
        dec_l, dec_r = [f[:, :w] for f in decoded[0]], [f[:, w:] for f in decoded[0]]
    else:
        dec_l, dec_r = decoded
    raw = sum(len(s) for s in streams)
    sei = sum(info_sei_bytes(s, a.decoder) for s in streams)
    return {
        "bytes_raw": raw,
        "bits": 8 * (raw - sei),
        "enc_seconds": enc_s,
        "dec_seconds": dec_s,
        "decoded": (dec_l, dec_r),
    }


def _write_yuv(path: str, frames: list[np.ndarray]) -> None:
    with open(path, "wb") as f:
        for rgb in frames:
            for plane in rgb_to_yuv420(rgb):
                f.write(plane.tobytes())


def run_mvhevc_cmd(
    template: str, left: list[np.ndarray], right: list[np.ndarray], qp: int, gop: int, fps: Fraction = Fraction(30)
) -> dict:
    """Run an external MV-HEVC encoder and decode its two-view stream with FFmpeg's HEVC decoder.

    `template` is a shell-free command line formatted with {left} {right} (raw 8-bit yuv420p
    files), {out} (the Annex B stream it must write), {qp} {gop} {w} {h} {frames} {fps}.
    Decoded frames are taken in output order as base view, then second view, per access unit."""
    h, w = left[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="svc_mvhevc_") as tmp:
        lp, rp, out = (os.path.join(tmp, n) for n in ("left.yuv", "right.yuv", "out.hevc"))
        _write_yuv(lp, left)
        _write_yuv(rp, right)
        cmd = template.format(
            left=lp, right=rp, out=out, qp=qp, gop=gop, w=w, h=h, frames=len(left), fps=float(fps)
        )
        t0 = time.perf_counter()
        subprocess.run(shlex.split(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        enc_s = time.perf_counter() - t0
        data = open(out, "rb").read()
    t0 = time.perf_counter()
    frames = _decode("hevc", data, {"view_ids": "-1"})
    rgb = [yuv420_to_rgb(*_frame_planes(f, w, h)) for f in frames]
    dec_s = time.perf_counter() - t0
    if len(rgb) != 2 * len(left):
        raise RuntimeError(f"MV-HEVC decode gave {len(rgb)} pictures for {len(left)} stereo frames")
    return {
        "bytes_raw": len(data),
        "bits": 8 * (len(data) - info_sei_bytes(data, "hevc")),
        "enc_seconds": enc_s,
        "dec_seconds": dec_s,
        "decoded": (rgb[0::2], rgb[1::2]),
    }
