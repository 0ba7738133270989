"""Stereo P-frame coding: the entropy-coding sides of `nn.inter.code_p_frame`.

Coding order of one P access unit (docs/CODING.md); each view's symbols of each coder go to
that view's MOTION or TEXTURE substream (`substreams.py`). Motion comes first: the decoder needs
both views' decoded flow before it can build the contexts the texture is coded with.
    motion:   z_L, z_R, then slices L1, R1, L2, R2, ...
    context:  z_L, z_R, then slices L1, R1, L2, R2, ...
The network steps are written once (`code_p_frame`); the encoder runs them with an
`_EncoderSide` (it computes latents, quantizes and writes symbols), the decoder with a
`_DecoderSide` (it reads symbols). Both compute every entropy parameter with the same calls, in
the same order, on tensors of the same shapes, so they agree bit for bit. A latent position whose
scale index is at most `streams.skip_max_index` is not coded: the decoder sees the same index and
takes the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..container import FrameType, Substream
from ..entropy import gaussian_tables, scale_to_index
from ..errors import ModelError
from ..nn.elic import gaussian_bits
from ..nn.inter import Reference, StereoInterCodec, code_context, code_motion, code_p_frame
from .intra import hyper_table_ids
from .rdo import rd_cost
from .refine import refine_context
from .substreams import MOTION, TEXTURE, VIEWS, SymbolReader, SymbolWriter

CODER = {"motion": MOTION, "context": TEXTURE}  # code_p_frame's coder names -> substream kind


@dataclass
class InterResult:
    substreams: list[Substream]
    x_hat: torch.Tensor  # (2, 3, H, W) in [0, 1], padded size
    reference: Reference
    est_bits: float


class _EncoderSide:
    """given: {kind: (y, z)} latents to code instead of the analysis transforms' own."""

    def __init__(self, x: torch.Tensor, flow: torch.Tensor, z_tables: dict, streams: SymbolWriter,
                 given: dict | None = None):
        self.x, self.flow, self.z_tables, self.streams = x, flow, z_tables, streams
        self.given = given or {}
        self.est_bits = 0.0
        self.latents: dict[str, list[torch.Tensor]] = {}  # kind -> [y, z] as coded

    def latent(self, kind, fn):
        y = self.given[kind][0] if kind in self.given else fn()
        if not torch.isfinite(y).all():
            raise ModelError("the model produced non-finite latents (broken weights?)")
        self.latents[kind] = [y]
        return y

    def hyper(self, kind, fn, eb, shape):
        z = self.given[kind][1] if kind in self.given else fn()
        if not torch.isfinite(z).all():
            raise ModelError("the model produced non-finite latents (broken weights?)")
        self.latents[kind].append(z)
        med = eb.medians_map()
        zq = torch.round(z - med)
        zqn = zq.to(torch.int64).cpu().numpy()
        for v in VIEWS:
            self.streams(v, CODER[kind], 0).encode_symbols(zqn[v], hyper_table_ids(zqn.shape[1:]), self.z_tables[kind])
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
        coded = ids > self.side.streams.skip_max_index
        q = torch.round(y - mu) * torch.from_numpy(coded).to(mu.device, mu.dtype)
        qn = q.to(torch.int64).cpu().numpy()
        self.side.streams(view, CODER[self.kind], n + 1).encode_symbols(qn[coded], ids[coded], gaussian_tables())
        m = torch.from_numpy(coded).to(mu.device)
        self.side.est_bits += float(gaussian_bits(q, torch.zeros_like(q), scale)[m].sum())
        return q + mu


class _DecoderSide:
    def __init__(self, streams: SymbolReader, z_tables: dict):
        self.streams, self.z_tables = streams, z_tables

    def latent(self, kind, fn):
        return None

    def hyper(self, kind, fn, eb, shape):
        b, c, h, w = shape
        zq = np.stack([
            self.streams(v, CODER[kind], 0).decode_symbols(hyper_table_ids((c, h, w)), self.z_tables[kind])
            for v in VIEWS
        ]).astype(np.float32)
        med = eb.medians_map()
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
        coded = ids > self.side.streams.skip_max_index
        q = np.zeros(mu.shape, dtype=np.float32)
        stream = self.side.streams(view, CODER[self.kind], n + 1)
        q[coded] = stream.decode_symbols(ids[coded], gaussian_tables())
        return torch.from_numpy(q).to(mu.device) + mu


@torch.no_grad()
def encode_inter(model: StereoInterCodec, z_tables: dict, x: torch.Tensor, flow: torch.Tensor,
                 ref: Reference, rate: float, streams: SymbolWriter | None = None,
                 given: dict | None = None) -> InterResult:
    """x: (2, 3, H, W) in [0, 1] (H, W multiples of 64); flow: (2, 2, H, W) from the motion
    estimator against ref.frame. given: {"context": (y, z)} latents to code instead of the
    analysis transforms' own (refine.py)."""
    side = _EncoderSide(x.contiguous(), flow.contiguous(), z_tables, streams or SymbolWriter(), given)
    x_hat, new_ref = code_p_frame(model, ref, rate, side)
    return InterResult(side.streams.substreams(FrameType.P, model.cfg.slices), x_hat, new_ref, side.est_bits)


def encode_inter_best(model: StereoInterCodec, z_tables: dict, x: torch.Tensor, flows: list[torch.Tensor],
                      ref: Reference, rate: float, refine_steps: int = 0,
                      visible: tuple[int, int] | None = None) -> tuple[InterResult, int]:
    """Codes the P-frame once per candidate motion field and keeps the one of lowest rd_cost;
    returns it and its index. The decoder needs no word of the choice: it decodes the flow.
    With refine_steps > 0 the kept candidate's context latents are then refined (refine.py),
    and the refined coding is kept where its cost is lower."""
    best, best_cost, best_k = None, float("inf"), 0
    for k, flow in enumerate(flows):
        res = encode_inter(model, z_tables, x, flow, ref, rate)
        cost = rd_cost(x, res, rate, visible) if len(flows) > 1 or refine_steps > 0 else 0.0
        if best is None or cost < best_cost:
            best, best_cost, best_k = res, cost, k
    if refine_steps > 0:
        with torch.no_grad():  # the chosen motion's contexts and the analysis transform's latents
            side = _EncoderSide(x.contiguous(), flows[best_k].contiguous(), z_tables, SymbolWriter())
            ctx = code_motion(model, ref, rate, side)
            code_context(model, ctx, rate, side)
        y, z = refine_context(model, ctx, x, rate, *side.latents["context"], refine_steps, visible)
        refined = encode_inter(model, z_tables, x, flows[best_k], ref, rate, given={"context": (y, z)})
        if rd_cost(x, refined, rate, visible) < best_cost:
            best = refined
    return best, best_k


@torch.no_grad()
def decode_inter(model: StereoInterCodec, z_tables: dict, substreams: list[Substream], ref: Reference,
                 rate: float) -> tuple[torch.Tensor, Reference]:
    streams = SymbolReader(substreams, FrameType.P, model.cfg.slices)
    return code_p_frame(model, ref, rate, _DecoderSide(streams, z_tables))
