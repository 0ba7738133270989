"""Stereo I-frame coding: ELIC on both views, slices in the paper's alternating order.

Coding order: z_L, z_R, then L1, R1, L2, R2, ... (Eq. 4 of the paper); each view's symbols go to
that view's texture substream (`substreams.py`).
The slice loop (`_code_latent`) is written once and driven by either a `_SliceEncoder` (which
quantizes and writes symbols) or a `_SliceDecoder` (which reads them); entropy parameters come
from the same calls in the same order with the same tensor shapes on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..container import FrameType, Substream
from ..entropy import gaussian_tables, scale_to_index
from ..errors import ModelError
from ..nn.elic import ElicIntraCodec, gaussian_bits
from ..nn.layers import checkerboard_mask
from .rdo import rd_cost
from .refine import refine_intra
from .substreams import TEXTURE, VIEWS, SymbolReader, SymbolWriter


@dataclass
class IntraResult:
    substreams: list[Substream]
    x_hat: torch.Tensor  # (2, 3, H, W) in [0, 1], padded size
    est_bits: float  # the model's own rate estimate (continuous Gaussian / factorized likelihoods)


def _code_latent(model: ElicIntraCodec, hyper: torch.Tensor, coder) -> torch.Tensor:
    """Shared slice loop: returns y_hat. `coder.symbols(view_slice_key, mu, scale, mask)` must
    return the integer symbols round(y - mu) (as float tensor) at the masked positions."""
    decoded: list[torch.Tensor] = []
    for k in range(len(model.cfg.groups)):
        mu_a, sc_a = model.slice_params(k, hyper, decoded, None)
        mask = checkerboard_mask(mu_a).bool().expand_as(mu_a)
        q_a = coder.symbols(k, mu_a, sc_a, mask)
        anchors = torch.where(mask, q_a + mu_a, torch.zeros_like(mu_a))
        mu_n, sc_n = model.slice_params(k, hyper, decoded, anchors)
        q_n = coder.symbols(k, mu_n, sc_n, ~mask)
        decoded.append(torch.where(mask, q_a + mu_a, q_n + mu_n))
    return torch.cat(decoded, dim=1)


class _SliceEncoder:
    def __init__(self, y_slices: list[torch.Tensor], streams: SymbolWriter):
        self.y, self.streams = y_slices, streams
        self.est_bits = 0.0

    def symbols(self, k, mu, scale, mask):
        q = torch.round(self.y[k] - mu)
        ids = scale_to_index(scale)
        qn = q.to(torch.int64).cpu().numpy()
        m = mask.cpu().numpy()
        for v in VIEWS:
            self.streams(v, TEXTURE, k + 1).encode_symbols(qn[v][m[v]], ids[v][m[v]], gaussian_tables())
        self.est_bits += float(gaussian_bits(q, torch.zeros_like(q), scale)[mask].sum())
        return q


class _SliceDecoder:
    def __init__(self, streams: SymbolReader):
        self.streams = streams

    def symbols(self, k, mu, scale, mask):
        ids = scale_to_index(scale)
        m = mask.cpu().numpy()
        q = np.zeros(mu.shape, dtype=np.float32)
        for v in VIEWS:
            q[v][m[v]] = self.streams(v, TEXTURE, k + 1).decode_symbols(ids[v][m[v]], gaussian_tables())
        return torch.from_numpy(q).to(mu.device)


def hyper_table_ids(shape) -> np.ndarray:
    """Table index of every hyper-latent symbol (c, h, w): one table per channel."""
    c, h, w = shape
    return np.broadcast_to(np.arange(c, dtype=np.int64)[:, None, None], (c, h, w))


@torch.no_grad()
def encode_intra(model: ElicIntraCodec, z_tables, x: torch.Tensor, rate: float,
                 streams: SymbolWriter | None = None, latents: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> IntraResult:
    """x: (2, 3, H, W) in [0, 1], H and W multiples of 64. latents: (y, z) to code instead of
    the analysis transforms' own (refine.py)."""
    streams = streams or SymbolWriter()
    if latents is None:
        y = model.analysis(x.contiguous(), rate)
        z = model.h_a(y)
    else:
        y, z = latents
    if not (torch.isfinite(y).all() and torch.isfinite(z).all()):
        raise ModelError("the model produced non-finite latents (broken weights?)")
    med = model.entropy_bottleneck.medians_map()
    zq = torch.round(z - med)
    zqn = zq.to(torch.int64).cpu().numpy()
    for v in VIEWS:
        streams(v, TEXTURE, 0).encode_symbols(zqn[v], hyper_table_ids(zqn.shape[1:]), z_tables)
    hyper = model.h_s(zq + med)
    coder = _SliceEncoder(model.split(y), streams)
    y_hat = _code_latent(model, hyper, coder)
    _, z_lik = model.entropy_bottleneck(z, training=False)
    est = coder.est_bits + float(-torch.log2(z_lik).sum())
    return IntraResult(streams.substreams(FrameType.I, len(model.cfg.groups)), model.synthesis(y_hat, rate).clamp(0, 1), est)


def encode_intra_refined(model: ElicIntraCodec, z_tables, x: torch.Tensor, rate: float, steps: int,
                         visible: tuple[int, int] | None = None) -> IntraResult:
    """encode_intra, with `steps` steps of latent refinement when steps > 0; keeps the
    refined coding only where its real rate-distortion cost is lower."""
    plain = encode_intra(model, z_tables, x, rate)
    if steps <= 0:
        return plain
    refined = encode_intra(model, z_tables, x, rate, latents=refine_intra(model, x, rate, steps, visible))
    return min((refined, plain), key=lambda r: rd_cost(x, r, rate, visible))


@torch.no_grad()
def decode_intra(model: ElicIntraCodec, z_tables, substreams: list[Substream], size: tuple[int, int], rate: float) -> torch.Tensor:
    """Inverse of `encode_intra`; size = padded (H, W). Returns (2, 3, H, W) in [0, 1]."""
    hz, wz = size[0] // 64, size[1] // 64
    device = next(model.parameters()).device
    streams = SymbolReader(substreams, FrameType.I, len(model.cfg.groups))
    nz = model.cfg.Nz
    zq = np.stack([
        streams(v, TEXTURE, 0).decode_symbols(hyper_table_ids((nz, hz, wz)), z_tables) for v in VIEWS
    ]).astype(np.float32)
    med = model.entropy_bottleneck.medians_map()
    hyper = model.h_s(torch.from_numpy(zq).to(device) + med)
    y_hat = _code_latent(model, hyper, _SliceDecoder(streams))
    return model.synthesis(y_hat, rate).clamp(0, 1)
