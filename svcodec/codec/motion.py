"""Motion estimation for P-frames (encoder side only: the decoder reads the coded flow).

No pretrained learned estimator can be had here, so the default is OpenCV's DIS optical flow
(dense inverse search), computed from the current frame to the previous *reconstruction*, which
is what the decoder will warp. Anything with the `MotionEstimator` signature can replace it
(e.g. a RAFT/SpyNet with user-supplied weights): the bitstream carries the coded flow, not the
estimator, so streams stay decodable whatever estimated them.

Determinism: OpenCV runs single-threaded here so that two encodes give identical bytes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from . import DEFAULT_MOTION, MOTION_SEARCHES


class MotionEstimator(Protocol):
    def __call__(self, current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """current, reference: (B, 3, H, W) in [0, 1]. Returns flow (B, 2, H, W) in pixels such
        that current(p) ~ reference(p + flow(p)) (channel 0 horizontal)."""


def _grey_u8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W) uint8 luma (BT.601 weights)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * w).sum(1) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


class DisFlow:
    """OpenCV DIS optical flow, 'medium' preset (a good speed/quality balance on a CPU).

    `workers` > 1 spreads a batch's images over that many threads, each with its own
    single-threaded DIS object (OpenCV releases the GIL in `calc`), so every image's flow is the
    one the serial path computes. Training uses it: on a GPU machine the flows of a batch of
    P-frame samples, computed one by one on the CPU, would leave the GPU waiting."""

    def __init__(self, preset: str = "medium", workers: int = 1):
        import cv2

        cv2.setNumThreads(1)
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                   "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        self._make = lambda: cv2.DISOpticalFlow_create(presets[preset])
        self._dis = self._make()
        self._workers = max(1, workers)
        self._pool = None
        self._local = threading.local()

    def _calc(self, cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
        dis = getattr(self._local, "dis", None)
        if dis is None:  # a DIS object keeps per-call state: one per thread
            dis = self._local.dis = self._make()
        return dis.calc(cur, ref, None)

    def __call__(self, current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        cur, ref = _grey_u8(current), _grey_u8(reference)
        if self._workers > 1 and len(cur) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="dis")
            flows = list(self._pool.map(self._calc, cur, ref))
        else:
            flows = [self._dis.calc(c, r, None) for c, r in zip(cur, ref)]  # (H, W, 2) each
        out = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
        return out.to(current.device)


class ZeroMotion:
    """No motion search (static cameras, or to measure what motion buys)."""

    def __call__(self, current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        b, _, h, w = current.shape
        return current.new_zeros(b, 2, h, w)


def motion_candidates(search: str = DEFAULT_MOTION) -> list[tuple[str, MotionEstimator]]:
    """(name, estimator) of each motion field the encoder codes and compares per P-frame
    (encode_pairs has checked `search`)."""
    return [(name, make_estimator(name)) for name in MOTION_SEARCHES[search]]


def make_estimator(name: str = "dis") -> MotionEstimator:
    if name == "dis":
        return DisFlow()
    if name == "zero":
        return ZeroMotion()
    raise ValueError(f"unknown motion estimator {name!r} (dis or zero)")
