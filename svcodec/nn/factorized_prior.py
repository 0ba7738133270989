"""Factorized prior for hyper-latents (Balle et al. 2018, "non-parametric" density per channel).

Each channel's cumulative is a small monotonic network: a chain of positive (softplus) matrices
with biases and tanh "factor" nonlinearities, evaluated at x +- 0.5 for the probability of a unit
bin. The parameter names follow the usual layout (`matrices.i`, `biases.i`, `factors.i`,
`quantiles`, `target`, `likelihood_lower_bound.bound`), so weights trained with CompressAI's
EntropyBottleneck load unchanged.

Why our own: importing CompressAI pulls torchvision, torch-geometric, pandas and matplotlib and
costs several seconds before the first frame; the codec itself needs only this module (the
coder uses integer tables derived from it at export time, `entropy/factorized.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound); the gradient passes where x >= bound, or where it pushes x up."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.maximum(x, bound)

    @staticmethod
    def backward(ctx, grad):
        x, bound = ctx.saved_tensors
        passes = (x >= bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


class LowerBound(nn.Module):
    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x):
        return _LowerBoundFn.apply(x, self.bound.to(x.dtype))


class FactorizedPrior(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9, likelihood_bound: float = 1e-9):
        super().__init__()
        self.filters = tuple(filters)
        dims = (1,) + self.filters + (1,)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        # the 'tail_mass' quantiles and the median of each channel, learned by `loss`
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        target = math.log(2 / tail_mass - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))
        self.likelihood_lower_bound = LowerBound(likelihood_bound)

    def medians(self) -> torch.Tensor:
        """(C,) per-channel medians; hyper-latents are coded as round(z - median)."""
        return self.quantiles[:, 0, 1].detach()

    def medians_map(self) -> torch.Tensor:
        """The medians as (1, C, 1, 1), to shift a (B, C, H, W) hyper-latent."""
        return self.medians().view(1, -1, 1, 1)

    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool) -> torch.Tensor:
        """x: (C, 1, N) -> logits of the cumulative at x, (C, 1, N)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            m, b = (m.detach(), b.detach()) if stop_gradient else (m, b)
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                f = self.factors[i].detach() if stop_gradient else self.factors[i]
                x = x + torch.tanh(f) * torch.tanh(x)
        return x

    def _likelihood(self, x: torch.Tensor) -> torch.Tensor:
        lower = self._logits_cumulative(x - 0.5, stop_gradient=False)
        upper = self._logits_cumulative(x + 0.5, stop_gradient=False)
        # evaluate in the tail where the sigmoid is not saturated
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward(self, z: torch.Tensor, training: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hat, likelihoods) for z (B, C, H, W): uniform noise when training, else
        median-shifted rounding (what the codec transmits)."""
        training = self.training if training is None else training
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        if training:
            v = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        else:
            med = self.quantiles[:, :, 1:2].detach()
            v = torch.round(v - med) + med
        lik = self.likelihood_lower_bound(self._likelihood(v))
        unflat = lambda t: t.reshape(c, b, h, w).permute(1, 0, 2, 3)
        return unflat(v), unflat(lik)

    def loss(self) -> torch.Tensor:
        """Pulls `quantiles` to the tail-mass quantiles and the median of each channel's density."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()
