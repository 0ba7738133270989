"""ELIC intra-frame codec (He et al., CVPR 2022), the paper's I-frame model, per view.

What is kept from ELIC: the residual-bottleneck analysis/synthesis transforms, a mean-scale
hyperprior, and the space-channel context model (SCCTX): unevenly grouped channel slices coded
one after another, each in two checkerboard passes (anchors first, then non-anchors conditioned
on the decoded anchors). What is changed for a 2-core CPU: configurable widths, no attention
blocks in the small configuration, and a variable rate: per-rate channel gains on the latent
(a "gain unit") so one trained model covers the four rate points and any rate in between.

Entropy parameters for every slice and pass come from one method, `slice_params`, which the
encoder and the decoder both call with identically shaped inputs, so they agree bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from .factorized_prior import FactorizedPrior
from torch import nn

from .layers import conv, deconv, rate_gain, ResidualBottleneck, checkerboard_mask, CheckerboardContext, ste_round

# Smallest Gaussian scale the model may predict; the entropy coder's scale table starts here too.
SCALE_MIN = 0.11
SCALE_MAX = 64.0


@dataclass
class ElicConfig:
    N: int = 64  # transform width
    M: int = 128  # latent channels
    Nz: int = 64  # hyper-latent channels
    groups: list = field(default_factory=lambda: [16, 16, 32, 64])  # uneven slices, sum == M
    res_blocks: int = 1  # residual bottleneck blocks per stage (ELIC uses 3)
    num_rates: int = 4  # trained rate points (gain vectors)

    def __post_init__(self):
        if sum(self.groups) != self.M:
            raise ValueError(f"channel groups {self.groups} do not sum to M={self.M}")

    def to_dict(self):
        return asdict(self)


SMALL = ElicConfig()
# The paper-size ELIC (N=192, M=320, groups 16/16/32/64/192, three blocks per stage).
PAPER = ElicConfig(N=192, M=320, Nz=192, groups=[16, 16, 32, 64, 192], res_blocks=3)


def _stage(cin: int, cout: int, blocks: int, up: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [deconv(cin, cout) if up else conv(cin, cout)]
    if blocks:
        layers += [ResidualBottleneck(cout) for _ in range(blocks)]
    return layers


class ElicIntraCodec(nn.Module):
    """One view's intra codec; the stereo I-frame runs it on both views as a batch."""

    def __init__(self, cfg: ElicConfig = SMALL):
        super().__init__()
        self.cfg = cfg
        N, M, Nz, b = cfg.N, cfg.M, cfg.Nz, cfg.res_blocks
        self.g_a = nn.Sequential(
            *_stage(3, N, b, False), *_stage(N, N, b, False), *_stage(N, N, b, False), conv(N, M)
        )
        self.g_s = nn.Sequential(
            *_stage(M, N, b, True), *_stage(N, N, b, True), *_stage(N, N, b, True), deconv(N, 3)
        )
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.ReLU(inplace=True), conv(N, N), nn.ReLU(inplace=True), conv(N, Nz)
        )
        self.h_s = nn.Sequential(
            deconv(Nz, N), nn.ReLU(inplace=True), deconv(N, N * 3 // 2), nn.ReLU(inplace=True),
            conv(N * 3 // 2, 2 * M, 3, 1),
        )
        self.entropy_bottleneck = FactorizedPrior(Nz)
        # Channel context: previous slices -> features for slice k (none for the first slice).
        self.channel_ctx = nn.ModuleList(
            [nn.Identity()]
            + [
                nn.Sequential(
                    conv(sum(cfg.groups[:k]), 96, 5, 1), nn.ReLU(inplace=True),
                    conv(96, 64, 5, 1), nn.ReLU(inplace=True), conv(64, 2 * g, 5, 1),
                )
                for k, g in enumerate(cfg.groups) if k > 0
            ]
        )
        self.spatial_ctx = nn.ModuleList([CheckerboardContext(g, 2 * g) for g in cfg.groups])
        self.param_agg = nn.ModuleList(
            [
                nn.Sequential(
                    conv(2 * M + (4 * g if k else 2 * g), 320, 1, 1), nn.ReLU(inplace=True),
                    conv(320, 256, 1, 1), nn.ReLU(inplace=True), conv(256, 2 * g, 1, 1),
                )
                for k, g in enumerate(cfg.groups)
            ]
        )
        # Gain unit: log-gains per rate point and channel; decoder divides them out again.
        self.log_gain = nn.Parameter(torch.zeros(cfg.num_rates, M))
        with torch.no_grad():
            for r in range(cfg.num_rates):  # start rate r at 2**(r/2) so the rates begin apart
                self.log_gain[r].fill_(0.5 * math.log(2.0) * (r - (cfg.num_rates - 1)))

    # -- rate control -----------------------------------------------------------------
    def gain(self, rate: torch.Tensor | float) -> torch.Tensor:
        """Channel gains (B, M, 1, 1) for rate(s) in [0, num_rates-1]; fractional rates
        interpolate the log-gains linearly, which is how one model serves any rate."""
        return rate_gain(self.log_gain, rate)

    # -- transforms shared by training, encoder and decoder ------------------------------
    def analysis(self, x: torch.Tensor, rate) -> torch.Tensor:
        return self.g_a(x) * self.gain(rate)

    def synthesis(self, y_hat: torch.Tensor, rate) -> torch.Tensor:
        return self.g_s(y_hat / self.gain(rate))

    def split(self, y: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(y, self.cfg.groups, dim=1))

    def slice_params(
        self, k: int, hyper: torch.Tensor, prev: list[torch.Tensor], anchors: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of slice k.

        hyper: h_s output; prev: decoded slices 0..k-1; anchors: None for the anchor pass, or
        slice k with decoded anchors and zeros at non-anchor positions for the second pass.
        The one function both encoder and decoder call (bit-exact agreement).
        """
        feats = [hyper]
        if k > 0:
            feats.append(self.channel_ctx[k](torch.cat(prev, dim=1)))
        if anchors is None:
            shape = (hyper.shape[0], 2 * self.cfg.groups[k], hyper.shape[2], hyper.shape[3])
            feats.append(hyper.new_zeros(shape))
        else:
            feats.append(self.spatial_ctx[k](anchors))
        mu, scale = self.param_agg[k](torch.cat(feats, dim=1)).chunk(2, dim=1)
        return mu, scale.abs().clamp(SCALE_MIN, SCALE_MAX)

    # -- differentiable passes (training, encoder-side refinement) ----------------------
    def code_slices(self, y: torch.Tensor, hyper: torch.Tensor, noisy_rate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice loop with straight-through rounding for what the decoder sees (mean-shifted
        rounding, Eq. 5 of the paper). Returns (y_hat, bits per sample). The rate is priced at
        y plus uniform noise (training: a smooth proxy) or at the rounded values themselves
        (refinement: the bits the coder will spend)."""
        decoded, y_bits = [], []
        for k, y_k in enumerate(self.split(y)):
            mask = checkerboard_mask(y_k)
            mu_a, sc_a = self.slice_params(k, hyper, decoded, None)
            anchors = ste_round(y_k - mu_a) + mu_a
            mu_n, sc_n = self.slice_params(k, hyper, decoded, anchors * mask)
            mu = mu_a * mask + mu_n * (1 - mask)
            sc = sc_a * mask + sc_n * (1 - mask)
            rounded = ste_round(y_k - mu) + mu
            priced = y_k + torch.empty_like(y_k).uniform_(-0.5, 0.5) if noisy_rate else rounded
            y_bits.append(gaussian_bits(priced, mu, sc).sum(dim=(1, 2, 3)))
            decoded.append(rounded)
        return torch.cat(decoded, dim=1), sum(y_bits)

    def forward(self, x: torch.Tensor, rate: torch.Tensor) -> dict:
        """Training pass: noise for the rate terms, straight-through rounding for what the
        decoder sees."""
        y = self.analysis(x, rate)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z)
        y_hat, y_bits = self.code_slices(y, self.h_s(z_hat), noisy_rate=True)
        x_hat = self.synthesis(y_hat, rate)
        return {
            "x_hat": x_hat,
            "y_bits": y_bits,
            "z_bits": (-torch.log2(z_lik)).sum(dim=(1, 2, 3)),
        }


def gaussian_bits(v: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(v) for a unit-bin quantized Gaussian; the model's estimated rate."""
    d = (v - mu).abs()
    upper = _ndtr((0.5 - d) / scale)
    lower = _ndtr((-0.5 - d) / scale)
    return -torch.log2((upper - lower).clamp_min(1e-9))


def _ndtr(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x * (2 ** -0.5))
