"""Stereo I-frame coding: ELIC on both views, substreams in the paper's alternating order.

One access unit holds, in coding order: z_L, z_R, then L1, R1, L2, R2, ... (Eq. 4 of the paper).
The slice loop (`_code_latent`) is written once and driven by either a `_SliceEncoder` (which
quantizes and writes symbols) or a `_SliceDecoder` (which reads them); entropy parameters come
from the same calls in the same order with the same tensor shapes on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..container import Substream
from ..entropy import SubstreamDecoder, SubstreamEncoder, gaussian_tables, scale_to_index
from ..errors import BitstreamError, ModelError
from ..nn.elic import ElicIntraCodec, gaussian_bits
from ..nn.layers import checkerboard_mask

KIND_HYPER, KIND_LATENT = 0, 1
VIEWS = (0, 1)


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
    def __init__(self, y_slices: list[torch.Tensor]):
        self.y = y_slices
        self.enc = {}  # (view, slice) -> SubstreamEncoder, created in coding order
        self.est_bits = 0.0

    def symbols(self, k, mu, scale, mask):
        q = torch.round(self.y[k] - mu)
        ids = scale_to_index(scale)
        qn = q.to(torch.int64).cpu().numpy()
        m = mask.cpu().numpy()
        for v in VIEWS:
            e = self.enc.setdefault((v, k), SubstreamEncoder())
            e.encode_symbols(qn[v][m[v]], ids[v][m[v]], gaussian_tables())
        self.est_bits += float(gaussian_bits(q, torch.zeros_like(q), scale)[mask].sum())
        return q


class _SliceDecoder:
    def __init__(self, streams: dict[tuple[int, int], SubstreamDecoder]):
        self.dec = streams

    def symbols(self, k, mu, scale, mask):
        ids = scale_to_index(scale)
        m = mask.cpu().numpy()
        q = np.zeros(mu.shape, dtype=np.float32)
        for v in VIEWS:
            q[v][m[v]] = self.dec[(v, k)].decode_symbols(ids[v][m[v]], gaussian_tables())
        return torch.from_numpy(q).to(mu.device)


def hyper_table_ids(shape) -> np.ndarray:
    """Table index of every hyper-latent symbol (c, h, w): one table per channel."""
    c, h, w = shape
    return np.broadcast_to(np.arange(c, dtype=np.int64)[:, None, None], (c, h, w))


@torch.no_grad()
def encode_intra(model: ElicIntraCodec, z_tables, x: torch.Tensor, rate: float) -> IntraResult:
    """x: (2, 3, H, W) in [0, 1], H and W multiples of 64."""
    y = model.analysis(x.contiguous(), rate)
    if not torch.isfinite(y).all():
        raise ModelError("the model produced non-finite latents (broken weights?)")
    z = model.h_a(y)
    med = model.z_medians().view(1, -1, 1, 1)
    zq = torch.round(z - med)
    substreams = []
    zqn = zq.to(torch.int64).cpu().numpy()
    for v in VIEWS:
        e = SubstreamEncoder()
        e.encode_symbols(zqn[v], hyper_table_ids(zqn.shape[1:]), z_tables)
        substreams.append(Substream(view=v, kind=KIND_HYPER, slot=0, data=e.finish()))
    hyper = model.h_s(zq + med)
    coder = _SliceEncoder(model.split(y))
    y_hat = _code_latent(model, hyper, coder)
    for (v, k), e in coder.enc.items():  # dict order is the coding order L1, R1, L2, R2, ...
        substreams.append(Substream(view=v, kind=KIND_LATENT, slot=k + 1, data=e.finish()))
    _, z_lik = model.entropy_bottleneck(z, training=False)
    est = coder.est_bits + float(-torch.log2(z_lik).sum())
    return IntraResult(substreams, model.synthesis(y_hat, rate).clamp(0, 1), est)


@torch.no_grad()
def decode_intra(model: ElicIntraCodec, z_tables, substreams: list[Substream], size: tuple[int, int], rate: float) -> torch.Tensor:
    """Inverse of `encode_intra`; size = padded (H, W). Returns (2, 3, H, W) in [0, 1]."""
    hz, wz = size[0] // 64, size[1] // 64
    device = next(model.parameters()).device
    expected = [(v, KIND_HYPER, 0) for v in VIEWS] + [
        (v, KIND_LATENT, k + 1) for k in range(len(model.cfg.groups)) for v in VIEWS
    ]
    got = [(s.view, s.kind, s.slot) for s in substreams]
    if got != expected:
        raise BitstreamError(f"I-frame substreams {got} do not match the model's layout")
    nz = model.cfg.Nz
    zq = np.stack([
        SubstreamDecoder(substreams[v].data).decode_symbols(hyper_table_ids((nz, hz, wz)), z_tables)
        for v in VIEWS
    ]).astype(np.float32)
    med = model.z_medians().view(1, -1, 1, 1)
    hyper = model.h_s(torch.from_numpy(zq).to(device) + med)
    streams = {(s.view, s.slot - 1): SubstreamDecoder(s.data) for s in substreams[2:]}
    y_hat = _code_latent(model, hyper, _SliceDecoder(streams))
    return model.synthesis(y_hat, rate).clamp(0, 1)
