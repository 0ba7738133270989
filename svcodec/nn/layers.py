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


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Rounding whose gradient is the identity (straight-through): the decoder sees integers,
    the gradient still reaches the encoder."""
    return x + (torch.round(x) - x).detach()


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


# The MSE weights the rate points were trained for (the paper's 256..2048 for rates 0..3, with
# [0, 1] pixels): loss = lambda * MSE + bits per pixel.
RATE_LAMBDAS = (256.0, 512.0, 1024.0, 2048.0)


def rd_lambda(rate: torch.Tensor | float) -> torch.Tensor | float:
    """lambda of a (fractional) rate index, log-linear like the gain interpolation. Training
    weighs its loss with it, and the encoder's rate-distortion decisions use the same trade."""
    return RATE_LAMBDAS[0] * (2.0 ** rate)


def rate_gain(log_gain: torch.Tensor, rate: torch.Tensor | float) -> torch.Tensor:
    """Gain unit: channel gains (B, C, 1, 1) for rate(s) in [0, R-1] from log-gains (R, C).
    Fractional rates interpolate the log-gains linearly, which is how one model serves any
    rate between its trained points."""
    num_rates = log_gain.shape[0]
    rate = torch.as_tensor(rate, dtype=torch.float32, device=log_gain.device).reshape(-1)
    rate = rate.clamp(0, num_rates - 1)
    lo = rate.floor().long().clamp(max=num_rates - 2)
    t = (rate - lo.float()).unsqueeze(1)
    lg = log_gain[lo] * (1 - t) + log_gain[lo + 1] * t
    return lg.exp()[:, :, None, None]


class ResBlock(nn.Module):
    """3x3 conv, leaky ReLU, 3x3 conv, identity shortcut (DCVC's residual block)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class DepthConvBlock(nn.Module):
    """DCVC-DC's depth-wise convolution block: 1x1 in, depth-wise 3x3, 1x1 (shortcut), then a
    1x1 feed-forward (shortcut). Cheap per pixel, wide receptive field over channels; HDC-EM
    uses it to turn its priors into a mean and a scale."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.adapt = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.dw = nn.Sequential(
            nn.Conv2d(cout, cout, 1), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, groups=cout), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(cout, cout, 1),
        )
        self.ffn = nn.Sequential(
            nn.Conv2d(cout, cout * 2, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(cout * 2, cout, 1),
        )

    def forward(self, x):
        x = self.adapt(x)
        x = x + self.dw(x)
        return x + self.ffn(x)


def signal_preserving_init_(module: nn.Module) -> None:
    """Fan-in initialisation (std 1/sqrt(fan_in)) of every 2D (transposed) convolution inside
    `module`, biases zero, so a signal keeps its scale through the layers.

    Why: PyTorch's default init shrinks the variance about threefold per layer. Through the
    context coder's ~10 layers a fresh encoder then emitted latents of std ~0.04, which all
    round to the prior's mean, and a unit change of the decoder's latent moved the
    reconstruction by 1e-4: the coder started, and stayed, collapsed (measured on the first
    shipped P weights, whose context weights had barely left their initial values after 5,000
    steps). With this init the fresh context latent has std ~0.5 and a unit change of it moves
    the decoder's feature by ~0.5. (He's leaky-ReLU gain made the feature explode to std ~70
    through the residual blocks.)"""
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            # each output sees in_ch * k * k / stride^2 inputs
            fan_in = m.weight.shape[0] * m.weight[0, 0].numel() / (m.stride[0] * m.stride[1])
        elif isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
        else:
            continue
        nn.init.normal_(m.weight, std=fan_in ** -0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
