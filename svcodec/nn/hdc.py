"""Hybrid disparity compensation (HDC), Sec. 3.2 of the paper, and its two uses.

HDC aligns one view's features to the other: explicit horizontal shifts build 4D feature
volumes (Eq. 1), their element-wise product is a similarity map (Eq. 2) squashed by
tanh(softplus(.)) into an attention score, and a Conv3D over the score-weighted volume of the
other view aggregates it into reference features (Eq. 3). The shifts give the optimisation a
geometric prior; the learned score and Conv3D let it pick any disparity in range, and the
zero score of tanh(softplus(x)) for very negative x lets it ignore occlusions.

- `HdcFer`: feature extraction/reconstruction (Fig. 2): downsample, HDC, upsample, add.
- `CrossViewAligner`: the HDC-EM variant (Fig. 3b): no resampling, the current view's prior
  is the anchor that decides which shifts of the other view's decoded slices to take.

These are the building blocks of the stereo P-frame model (motion and context coders).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shift_volume(x: torch.Tensor, max_disp: int, sign: int) -> torch.Tensor:
    """Eq. 1: V(d, c, h, w) = x(c, h, w + sign * d) for d = 0 .. max_disp-1, zero outside.

    Returns (B, C, D, H, W). d starts at 0 (the paper's range starts at 1) so that content at
    zero disparity -- far objects, unrectified or nearly co-located cameras -- can be matched.
    """
    b, c, h, w = x.shape
    vol = x.new_zeros(b, c, max_disp, h, w)
    for d in range(max_disp):
        if d >= w:
            break
        if sign > 0:
            vol[:, :, d, :, : w - d] = x[:, :, :, d:]
        else:
            vol[:, :, d, :, d:] = x[:, :, :, : w - d]
    return vol


def attention_score(similarity: torch.Tensor) -> torch.Tensor:
    """Softplus then tanh (after Mish): in [0, 1), near 0 for dissimilar pairs."""
    return torch.tanh(F.softplus(similarity))


class HybridDisparityCompensation(nn.Module):
    """Bidirectional HDC on same-resolution features: returns (ref for left, ref for right)."""

    def __init__(self, channels: int, max_disp: int):
        super().__init__()
        self.max_disp = max_disp
        # kernel spans the whole disparity axis, so the Conv3D both aggregates and collapses it
        kernel, pad = (max_disp, 3, 3), (0, 1, 1)
        self.to_left = nn.Conv3d(channels, channels, kernel, padding=pad)
        self.to_right = nn.Conv3d(channels, channels, kernel, padding=pad)

    def forward(self, k_left: torch.Tensor, k_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_left = shift_volume(k_left, self.max_disp, +1)
        v_right = shift_volume(k_right, self.max_disp, -1)
        score = attention_score(v_left * v_right)  # Eq. 2 + normalisation
        ref_left = self.to_left(score * v_right).squeeze(2)  # Eq. 3
        ref_right = self.to_right(score * v_left).squeeze(2)
        return ref_left, ref_right


class HdcFer(nn.Module):
    """HDC for feature extraction and reconstruction (Fig. 2): each view is enhanced with the
    other view's features aligned to it, computed at half resolution to widen the disparity
    range covered per shift."""

    def __init__(self, channels: int, max_disp: int = 8):
        super().__init__()
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.hdc = HybridDisparityCompensation(channels, max_disp)
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, k_left: torch.Tensor, k_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = k_left.shape[-2:]
        ref_left, ref_right = self.hdc(self.down(k_left), self.down(k_right))
        return (k_left + self.up(ref_left)[..., :h, :w], k_right + self.up(ref_right)[..., :h, :w])


class CrossViewAligner(nn.Module):
    """HDC-EM's alignment of the other view's decoded slices to the current view (Fig. 3b).

    anchor: the current view's spatial-temporal prior; other: the other view's decoded slices.
    `current_is_left` fixes the shift directions of Eq. 1.
    """

    def __init__(self, anchor_ch: int, other_ch: int, channels: int, max_disp: int = 4):
        super().__init__()
        self.max_disp = max_disp
        self.query = nn.Conv2d(anchor_ch, channels, 1)
        self.key = nn.Conv2d(other_ch, channels, 1)
        self.value = nn.Conv2d(other_ch, channels, 1)
        self.aggregate = nn.Conv3d(channels, channels, (max_disp, 3, 3), padding=(0, 1, 1))

    def forward(self, anchor: torch.Tensor, other: torch.Tensor, current_is_left: bool) -> torch.Tensor:
        sign = 1 if current_is_left else -1
        v_query = shift_volume(self.query(anchor), self.max_disp, sign)
        v_key = shift_volume(self.key(other), self.max_disp, -sign)
        v_value = shift_volume(self.value(other), self.max_disp, -sign)
        return self.aggregate(attention_score(v_query * v_key) * v_value).squeeze(2)
