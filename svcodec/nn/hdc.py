"""Hybrid disparity compensation (HDC), Sec. 3.2 of the paper, and its two uses.

HDC aligns one view's features to the other: explicit horizontal shifts build 4D feature
volumes (Eq. 1), their element-wise product is a similarity map (Eq. 2) squashed by
tanh(softplus(.)) into an attention score, and a Conv3D over the score-weighted volume of the
other view aggregates it into reference features (Eq. 3). The shifts give the optimisation a
geometric prior; the learned score and Conv3D let it pick any disparity in range, and the
zero score of tanh(softplus(x)) for very negative x lets it ignore occlusions.

Geometry. With rectified views a scene point at column x in the left view sits at x - d in the
right view (d >= 0). Eq. 1 as printed shifts *both* views, V^L(d) = K^L(w + d) and
V^R(d) = K^R(w - d), so the product at shift d compares pixels 2d apart: only even disparities
are found and the selected slice of V^R is misaligned by d/2. The default variant, "aligned",
keeps the view being compensated fixed and shifts only the other one (the standard cost-volume
layout): the candidate at shift d for the left view is K^R(w - d), for the right view
K^L(w + d), so the score at d compares exactly the two features the weighted volume then brings
together. A few negative shifts are included too: unrectified or converged cameras and swapped
eyes produce them. Variants kept for the ablation (Fig. 5 of the paper):

- "literal": Eq. 1 exactly as printed;
- "noscore": no attention score (every shift weighted 1);
- "noshift": a single zero shift: the views interact only through the score (channel attention).

- `HdcFer`: feature extraction/reconstruction (Fig. 2): downsample, HDC, upsample, add.
- `CrossViewAligner`: the HDC-EM variant (Fig. 3b): no resampling, the current view's prior
  is the anchor that decides which shifts of the other view's decoded slices to take.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("aligned", "literal", "noscore", "noshift")


def shift_w(x: torch.Tensor, s: int) -> torch.Tensor:
    """out[..., w] = x[..., w + s], zero where w + s falls outside the map."""
    if s == 0:
        return x
    w = x.shape[-1]
    if abs(s) >= w:
        return torch.zeros_like(x)
    if s > 0:
        return F.pad(x[..., s:], (0, s))
    return F.pad(x[..., : w + s], (-s, 0))


def shifts_for(max_disp: int, variant: str = "aligned") -> list[int]:
    """Disparities searched: 0 .. max_disp-1 plus max_disp//4 negative ones (a single zero for
    'noshift')."""
    if variant == "noshift":
        return [0]
    return list(range(-(max_disp // 4), max_disp))


def candidates(other: torch.Tensor, shifts: list[int], for_left: bool) -> torch.Tensor:
    """The other view moved onto the compensated view: (B, C, D, H, W).

    For the left view the candidate at disparity d is right(w - d); for the right view it is
    left(w + d)."""
    sign = -1 if for_left else 1
    return torch.stack([shift_w(other, sign * d) for d in shifts], dim=2)


def attention_score(similarity: torch.Tensor) -> torch.Tensor:
    """Softplus then tanh (after Mish): in [0, 1), near 0 for dissimilar pairs."""
    return torch.tanh(F.softplus(similarity))


def hdc_volume(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, shifts: list[int],
               for_left: bool, variant: str) -> torch.Tensor:
    """Score-weighted volume of the other view, aligned to the compensated view (B, C, D, H, W).

    query: the compensated view's features; key/value: the other view's."""
    if variant == "literal":
        # Eq. 1 as printed: V^L(d) = K^L(w + d), V^R(d) = K^R(w - d), whichever view is compensated
        q_sign, k_sign = (1, -1) if for_left else (-1, 1)
        v_q = torch.stack([shift_w(query, q_sign * d) for d in shifts], dim=2)
        v_k = torch.stack([shift_w(key, k_sign * d) for d in shifts], dim=2)
        v_v = torch.stack([shift_w(value, k_sign * d) for d in shifts], dim=2)
        return attention_score(v_q * v_k) * v_v
    v_v = candidates(value, shifts, for_left)
    if variant == "noscore":
        return v_v
    v_k = v_v if key is value else candidates(key, shifts, for_left)
    return attention_score(query.unsqueeze(2) * v_k) * v_v


class HybridDisparityCompensation(nn.Module):
    """Bidirectional HDC on same-resolution features: returns (ref for left, ref for right)."""

    def __init__(self, channels: int, max_disp: int, variant: str = "aligned"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown HDC variant {variant!r} (one of {VARIANTS})")
        self.variant = variant
        self.shifts = shifts_for(max_disp, variant)
        # the kernel spans the whole disparity axis, so the Conv3D both aggregates and collapses it
        kernel, pad = (len(self.shifts), 3, 3), (0, 1, 1)
        self.to_left = nn.Conv3d(channels, channels, kernel, padding=pad)
        self.to_right = nn.Conv3d(channels, channels, kernel, padding=pad)

    def forward(self, k_left: torch.Tensor, k_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vol_l = hdc_volume(k_left, k_right, k_right, self.shifts, True, self.variant)  # Eq. 2-3
        vol_r = hdc_volume(k_right, k_left, k_left, self.shifts, False, self.variant)
        return self.to_left(vol_l).squeeze(2), self.to_right(vol_r).squeeze(2)


class HdcFer(nn.Module):
    """HDC for feature extraction and reconstruction (Fig. 2): each view is enhanced with the
    other view's features aligned to it, computed at half resolution to widen the disparity
    range covered per shift.

    Input and output: (2B, C, H, W) with the left views first, then the right views (the
    layout the stereo codec runs its per-view layers in). The reference features enter through
    a zero-initialised 1x1 convolution, so a freshly added HDC-FER starts as the identity and
    can be inserted into a pre-trained single-view network (paper, stage 3)."""

    def __init__(self, channels: int, max_disp: int = 8, variant: str = "aligned"):
        super().__init__()
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.hdc = HybridDisparityCompensation(channels, max_disp, variant)
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.zero_gate_()

    def zero_gate_(self) -> None:
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        h, w = k.shape[-2:]
        k_left, k_right = k.chunk(2, dim=0)
        d = self.down(k)
        ref_left, ref_right = self.hdc(*d.chunk(2, dim=0))
        ref = self.up(torch.cat([ref_left, ref_right], dim=0))[..., :h, :w]
        return k + self.gate(ref)


class CrossViewAligner(nn.Module):
    """HDC-EM's alignment of the other view's decoded slices to the current view (Fig. 3b).

    anchor: the current view's spatial-temporal prior; other: the other view's decoded slices.
    `for_left` says which view is current (it fixes the shift direction)."""

    def __init__(self, anchor_ch: int, other_ch: int, channels: int, max_disp: int = 4,
                 variant: str = "aligned"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown HDC variant {variant!r} (one of {VARIANTS})")
        self.variant = variant
        self.shifts = shifts_for(max_disp, variant)
        self.query = nn.Conv2d(anchor_ch, channels, 1)
        self.key = nn.Conv2d(other_ch, channels, 1)
        self.value = nn.Conv2d(other_ch, channels, 1)
        self.aggregate = nn.Conv3d(channels, channels, (len(self.shifts), 3, 3), padding=(0, 1, 1))

    def forward(self, anchor: torch.Tensor, other: torch.Tensor, for_left: bool) -> torch.Tensor:
        vol = hdc_volume(self.query(anchor), self.key(other), self.value(other), self.shifts,
                         for_left, self.variant)
        return self.aggregate(vol).squeeze(2)
