"""Small building blocks shared by the intra (ELIC) and inter (HDC) networks."""

from __future__ import annotations

import torch
from torch import nn


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


class ResidualBottleneck(nn.Module):
    """ELIC's residual bottleneck block: 1x1 down, 3x3, 1x1 up, identity shortcut."""

    def __init__(self, ch: int):
        super().__init__()
        mid = ch // 2
        self.body = nn.Sequential(
            nn.Conv2d(ch, mid, 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, ch, 1),
        )

    def forward(self, x):
        return x + self.body(x)


def checkerboard_mask(y: torch.Tensor) -> torch.Tensor:
    """1 at anchor positions ((row + col) even), 0 elsewhere; shape (1, 1, H, W)."""
    h, w = y.shape[-2:]
    rows = torch.arange(h, device=y.device).view(h, 1)
    cols = torch.arange(w, device=y.device).view(1, w)
    return ((rows + cols) % 2 == 0).to(y.dtype).view(1, 1, h, w)


class CheckerboardContext(nn.Module):
    """Spatial context for the non-anchor pass. Its input is zero at every non-anchor
    position, so a plain 5x5 convolution only ever sees decoded anchors."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 5, padding=2)

    def forward(self, anchors: torch.Tensor) -> torch.Tensor:
        return self.conv(anchors)
