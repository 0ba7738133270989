"""HDC-EM: the channel-sliced stereo entropy model of the P-frame coders (paper Sec. 3.2.2).

Both views' latents are split into N equal channel slices and coded in the alternating order
L1, R1, L2, R2, ... (Eq. 4). The estimator of slice n of view M sees
  - the intra-view prior: the same view's decoded slices 1..n-1,
  - the cross-view prior: the other view's decoded slices 1..q, aligned to view M by HDC with
    view M's spatial-temporal prior slice as the anchor (q = n-1 for L, q = n for R),
  - the spatial-temporal prior Phi_n^M (hyperprior fused with the temporal contexts),
and a DepthConvBlock turns them into a mean and a scale. Symbols are round(y - mu) and the
decoded value is that integer plus mu (Eq. 5).

`SliceEntropyModel.run` is the one slice loop. Training, the encoder and the decoder drive it
with different `coder` objects (noise/straight-through, range encoder, range decoder) and get
their parameters from the same `params` calls in the same order with the same shapes, so the
encoder and the decoder agree bit for bit. A right-view slice cannot be decoded before the
left-view slice of the same index: the order is a real dependency, not a convention.

Positions whose predicted scale falls in the lowest level of the coder's scale table are not
coded at all: both sides see the same scale, so the decoder rebuilds the mask and takes the mean
(static content then costs almost nothing). `SKIP_SCALE` is that level's upper edge.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .elic import SCALE_MAX, SCALE_MIN
from .hdc import CrossViewAligner
from .layers import DepthConvBlock

# Upper edge of the first of the 64 log-spaced scale levels (entropy/tables.py): below it a
# symbol is not coded. Training uses this threshold; the codec uses the level index itself.
SKIP_SCALE = math.exp(math.log(SCALE_MIN) + 0.5 * (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / 63)


def cross_view_count(view: int, n: int) -> int:
    """How many of the other view's slices are decoded before slice n (0-based) of `view`."""
    return n if view == 0 else n + 1


class SliceEntropyModel(nn.Module):
    def __init__(self, channels: int, prior_channels: int, slices: int = 4, cross_view: bool = True,
                 align_channels: int = 32, max_disp: int = 6, variant: str = "aligned"):
        super().__init__()
        if channels % slices or prior_channels % slices:
            raise ValueError("latent and prior channels must divide into the slices evenly")
        self.slices, self.cross_view = slices, cross_view
        self.slice_ch, self.prior_ch = channels // slices, prior_channels // slices
        self.aligners = nn.ModuleList()
        self.estimators = nn.ModuleList()
        for view in (0, 1):
            for n in range(slices):
                q = cross_view_count(view, n) if cross_view else 0
                if q:
                    self.aligners.append(CrossViewAligner(self.prior_ch, q * self.slice_ch, align_channels,
                                                          max_disp, variant))
                else:
                    self.aligners.append(nn.Identity())
                cin = self.prior_ch + n * self.slice_ch + (align_channels if q else 0)
                self.estimators.append(DepthConvBlock(cin, 2 * self.slice_ch))

    def params(self, view: int, n: int, phi_n: torch.Tensor, same: list[torch.Tensor],
               other: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of slice n of `view` from its priors (decoded slices so far)."""
        k = view * self.slices + n
        feats = [phi_n] + same[:n]
        q = cross_view_count(view, n) if self.cross_view else 0
        if q:
            feats.append(self.aligners[k](phi_n, torch.cat(other[:q], dim=1), view == 0))
        mu, scale = self.estimators[k](torch.cat(feats, dim=1)).chunk(2, dim=1)
        return mu, scale.abs().clamp(SCALE_MIN, SCALE_MAX)

    def run(self, phi: torch.Tensor, coder) -> torch.Tensor:
        """Code both views slice by slice; phi: (2B, P, h, w), left views first. Returns y_hat
        (2B, C, h, w). `coder.slice(view, n, mu, scale)` returns the decoded slice."""
        b = phi.shape[0] // 2
        phis = [list(phi[v * b:(v + 1) * b].chunk(self.slices, dim=1)) for v in (0, 1)]
        decoded: list[list[torch.Tensor]] = [[], []]
        for n in range(self.slices):
            for view in (0, 1):
                mu, scale = self.params(view, n, phis[view][n], decoded[view], decoded[1 - view])
                decoded[view].append(coder.slice(view, n, mu, scale))
        return torch.cat([torch.cat(decoded[0], dim=1), torch.cat(decoded[1], dim=1)], dim=0)
