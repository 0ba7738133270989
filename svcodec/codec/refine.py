"""Encoder-side latent refinement (`svc encode --refine N`).

The analysis transforms map a frame to latents in one pass, tuned for the average training crop
(an "amortized" encoder). For the frame at hand, gradient steps on the latents themselves,
against the training loss lambda * MSE + bits with the decoder's networks fixed, find latents
that code it for less (the idea of Campos et al. 2019 and Yang et al. 2020). Only the encoder
changes: the decoder decodes whatever symbols it reads, so streams stay in the same format.

Choices, and why:
- The rate is priced at the rounded values the coder will send (straight-through rounding), not
  at noisy ones: here the latents are the variables, and noise would reward latents that sit
  between integers.
- The distortion counts only the visible pixels: the decoder crops the padding to a multiple of
  64 away, so the refinement may spend nothing there.
- Adam at 3e-3 with a cosine decay: measured on camcorder / surgical frames, 1e-2 and 3e-2 made
  worse latents than none (the rate of rounded latents is a step function; large steps hop
  between its plateaus), 1e-3 gained half as much.
- P-frames refine the context latents only, with the motion already chosen: motion changes the
  contexts every other term depends on, and costs more to search than it saves.
The caller compares the refined coding with the plain one by `rd_cost` and keeps the better.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..nn.elic import ElicIntraCodec, gaussian_bits
from ..nn.hdc_em import SKIP_SCALE
from ..nn.inter import StereoInterCodec, code_context
from ..nn.layers import ste_round
from .rdo import rd_loss, visible_mse

REFINE_LR = 3e-3


def _descend(latents: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int) -> list[torch.Tensor]:
    variables = [t.detach().clone().requires_grad_(True) for t in latents]
    opt = torch.optim.Adam(variables, lr=REFINE_LR)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = REFINE_LR * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad()
        loss_fn(*variables).backward()
        opt.step()
    return [v.detach() for v in variables]


def _hyper_bits(eb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rounded hyper-latent (z is coded as round(z - median)) and its bits."""
    med = eb.medians_map()
    z_hat = ste_round(z - med) + med
    _, likelihood = eb(z_hat, training=False)
    return z_hat, (-torch.log2(likelihood)).sum()


def refine_intra(model: ElicIntraCodec, x: torch.Tensor, rate: float, steps: int,
                 visible: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined (y, z) of a stereo I-frame pair x (2, 3, H, W); encode_intra codes them."""
    def loss(y, z):
        z_hat, z_bits = _hyper_bits(model.entropy_bottleneck, z)
        y_hat, y_bits = model.code_slices(y, model.h_s(z_hat), noisy_rate=False)
        mse = visible_mse(model.synthesis(y_hat, rate), x, visible)
        return rd_loss(mse, y_bits.sum() + z_bits, rate, x, visible)

    with torch.enable_grad(), _frozen(model):
        with torch.no_grad():
            y0 = model.analysis(x, rate)
            z0 = model.h_a(y0)
        y, z = _descend([y0, z0], loss, steps)
    return y, z


class _RefineSide:
    """`code_context` side whose context latents are the variables being refined."""

    def __init__(self, y: torch.Tensor, z: torch.Tensor):
        self.y, self.z, self.bits = y, z, 0.0

    def latent(self, kind, fn):
        return self.y

    def hyper(self, kind, fn, eb, shape):
        z_hat, bits = _hyper_bits(eb, self.z)
        self.bits = self.bits + bits
        return z_hat

    def slices(self, kind, y):
        return self

    def slice(self, view, n, mu, scale):
        c = mu.shape[1]
        y = self.y[view:view + 1, n * c:(n + 1) * c]
        coded = (scale > SKIP_SCALE).to(mu.dtype)  # the coder sends no symbol below this scale
        y_hat = ste_round(y - mu) * coded + mu
        self.bits = self.bits + (gaussian_bits(y_hat, mu, scale) * coded).sum()
        return y_hat


def refine_context(model: StereoInterCodec, ctx: tuple[torch.Tensor, ...], x: torch.Tensor, rate: float,
                   y0: torch.Tensor, z0: torch.Tensor, steps: int,
                   visible: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined context latents (y, z) of a stereo P-frame pair, given the contexts of its
    chosen motion (`code_motion`) and the analysis transform's own latents y0, z0."""
    def loss(y, z):
        side = _RefineSide(y, z)
        x_hat, _ = code_context(model, ctx, rate, side)
        return rd_loss(visible_mse(x_hat, x, visible), side.bits, rate, x, visible)

    with torch.enable_grad(), _frozen(model):
        return tuple(_descend([y0, z0], loss, steps))


class _frozen:
    """No parameter gradients while refining (the latents are the only variables)."""

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)
