"""Stereo P-frame coding: the entropy-coding sides of `nn.inter.code_p_frame`.

One P access unit holds, in coding order (docs/CODING.md):
    motion:   z_L, z_R, then slices L1, R1, L2, R2, ...   (MOTION_HYPER, MOTION_LATENT)
    context:  z_L, z_R, then slices L1, R1, L2, R2, ...   (TEXTURE_HYPER, TEXTURE_LATENT)
The network steps are written once (`code_p_frame`); the encoder runs them with an
`_EncoderSide` (it computes latents, quantizes and writes symbols), the decoder with a
`_DecoderSide` (it reads symbols). Both compute every entropy parameter with the same calls, in
the same order, on tensors of the same shapes, so they agree bit for bit. A latent position whose
scale falls in the table's lowest level is not coded: the decoder sees the same scale and takes
the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..container import Substream, SubstreamKind
from ..entropy import SubstreamDecoder, SubstreamEncoder, gaussian_tables, scale_to_index
from ..errors import BitstreamError, ModelError
from ..nn.elic import gaussian_bits
from ..nn.inter import Reference, StereoInterCodec, code_p_frame
from .intra import hyper_table_ids

VIEWS = (0, 1)
HYPER_KIND = {"motion": SubstreamKind.MOTION_HYPER, "context": SubstreamKind.TEXTURE_HYPER}
LATENT_KIND = {"motion": SubstreamKind.MOTION_LATENT, "context": SubstreamKind.TEXTURE_LATENT}


@dataclass
class InterResult:
    substreams: list[Substream]
    x_hat: torch.Tensor  # (2, 3, H, W) in [0, 1], padded size
    reference: Reference
    est_bits: float


def z_medians(eb) -> torch.Tensor:
    """Per-channel medians of a factorized prior as (1, C, 1, 1); z is coded as round(z - median)."""
    return eb.medians().view(1, -1, 1, 1)


def p_frame_layout(model: StereoInterCodec) -> list[tuple[int, int, int]]:
    """(view, kind, slot) of every substream of a P access unit, in coding order."""
    out = []
    for kind in ("motion", "context"):
        out += [(v, HYPER_KIND[kind], 0) for v in VIEWS]
        out += [(v, LATENT_KIND[kind], n + 1) for n in range(model.cfg.slices) for v in VIEWS]
    return out


class _EncoderSide:
    def __init__(self, x: torch.Tensor, flow: torch.Tensor, z_tables: dict):
        self.x, self.flow, self.z_tables = x, flow, z_tables
        self.encoders: dict[tuple[int, int, int], SubstreamEncoder] = {}  # insertion = coding order
        self.est_bits = 0.0

    def _enc(self, view, kind, slot) -> SubstreamEncoder:
        return self.encoders.setdefault((view, int(kind), slot), SubstreamEncoder())

    def latent(self, kind, fn):
        y = fn()
        if not torch.isfinite(y).all():
            raise ModelError("the model produced non-finite latents (broken weights?)")
        return y

    def hyper(self, kind, fn, eb, shape):
        z = fn()
        med = z_medians(eb)
        zq = torch.round(z - med)
        zqn = zq.to(torch.int64).cpu().numpy()
        for v in VIEWS:
            self._enc(v, HYPER_KIND[kind], 0).encode_symbols(zqn[v], hyper_table_ids(zqn.shape[1:]), self.z_tables[kind])
        _, lik = eb(z, training=False)
        self.est_bits += float(-torch.log2(lik).sum())
        return zq + med

    def slices(self, kind, y):
        return _SliceWriter(self, kind, y)

    def prediction(self, pred):
        pass


class _SliceWriter:
    def __init__(self, side: _EncoderSide, kind: str, y: torch.Tensor):
        self.side, self.kind, self.y = side, kind, y

    def slice(self, view, n, mu, scale):
        c = mu.shape[1]
        y = self.y[view:view + 1, n * c:(n + 1) * c]
        ids = scale_to_index(scale)
        coded = ids > 0
        q = torch.round(y - mu) * torch.from_numpy(coded).to(mu.device, mu.dtype)
        qn = q.to(torch.int64).cpu().numpy()
        self.side._enc(view, LATENT_KIND[self.kind], n + 1).encode_symbols(qn[coded], ids[coded], gaussian_tables())
        m = torch.from_numpy(coded).to(mu.device)
        self.side.est_bits += float(gaussian_bits(q, torch.zeros_like(q), scale)[m].sum())
        return q + mu


class _DecoderSide:
    def __init__(self, streams: dict[tuple[int, int, int], SubstreamDecoder], z_tables: dict):
        self.streams, self.z_tables = streams, z_tables

    def latent(self, kind, fn):
        return None

    def hyper(self, kind, fn, eb, shape):
        b, c, h, w = shape
        zq = np.stack([
            self.streams[(v, int(HYPER_KIND[kind]), 0)].decode_symbols(hyper_table_ids((c, h, w)), self.z_tables[kind])
            for v in VIEWS
        ]).astype(np.float32)
        med = z_medians(eb)
        return torch.from_numpy(zq).to(med.device) + med

    def slices(self, kind, y):
        return _SliceReader(self, kind)

    def prediction(self, pred):
        pass


class _SliceReader:
    def __init__(self, side: _DecoderSide, kind: str):
        self.side, self.kind = side, kind

    def slice(self, view, n, mu, scale):
        ids = scale_to_index(scale)
        coded = ids > 0
        q = np.zeros(mu.shape, dtype=np.float32)
        stream = self.side.streams[(view, int(LATENT_KIND[self.kind]), n + 1)]
        q[coded] = stream.decode_symbols(ids[coded], gaussian_tables())
        return torch.from_numpy(q).to(mu.device) + mu


@torch.no_grad()
def encode_inter(model: StereoInterCodec, z_tables: dict, x: torch.Tensor, flow: torch.Tensor,
                 ref: Reference, rate: float) -> InterResult:
    """x: (2, 3, H, W) in [0, 1] (H, W multiples of 64); flow: (2, 2, H, W) from the motion
    estimator against ref.frame."""
    side = _EncoderSide(x.contiguous(), flow.contiguous(), z_tables)
    x_hat, new_ref = code_p_frame(model, ref, rate, side)
    subs = [Substream(view=v, kind=SubstreamKind(k), slot=s, data=e.finish())
            for (v, k, s), e in side.encoders.items()]
    if [(s.view, s.kind, s.slot) for s in subs] != p_frame_layout(model):
        raise ModelError("internal error: P-frame substreams out of the documented order")
    return InterResult(subs, x_hat, new_ref, side.est_bits)


@torch.no_grad()
def decode_inter(model: StereoInterCodec, z_tables: dict, substreams: list[Substream], ref: Reference,
                 rate: float) -> tuple[torch.Tensor, Reference]:
    got = [(s.view, s.kind, s.slot) for s in substreams]
    if got != p_frame_layout(model):
        raise BitstreamError(f"P-frame substreams {got[:4]}... do not match the model's layout")
    streams = {(s.view, int(s.kind), s.slot): SubstreamDecoder(s.data) for s in substreams}
    return code_p_frame(model, ref, rate, _DecoderSide(streams, z_tables))
