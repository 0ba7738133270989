"""The stereo P-frame network: a DCVC-TCM-style backbone per view with HDC (paper Sec. 3.1,
Fig. 1, appendix D), in a small configuration for 2-core CPUs and the paper-size one.

Per view and frame, given the reference state (previous reconstruction x_{t-1}, feature F_{t-1}):
  1. motion estimation (encoder only, outside the network: codec/motion.py),
  2. motion compression: encoder, hyper-encoder, hyper-decoder, decoder of the flow, with
     HDC-FER in all four and HDC-EM (no context fusion) as entropy model,
  3. motion compensation: multi-scale features of F_{t-1} warped by the decoded flow and
     refined into the contexts Ctx1 (full), Ctx2 (1/2), Ctx3 (1/4),
  4. context compression: contextual encoder conditioned on Ctx1..3, hyper coder, a temporal
     prior from Ctx3 fused with the hyperprior into Phi, HDC-FER, HDC-EM,
  5. frame reconstruction from F_t, which is also handed to the next frame.
Both views run as one batch (left views first), which is the layout HDC-FER expects.

Deviation from DCVC-TCM, and why: the motion-compensated previous reconstruction (the warped
pixels) is a fourth context: it enters Ctx1 and the reconstruction adds its output to it. A
network trained for CPU-hours instead of GPU-weeks then starts from "copy the prediction" and
only has to learn the correction, which is what makes P-frames pay off this early.

`code_p_frame` is the single description of a P-frame that training, the encoder and the
decoder all run; they differ only in the `side` object that supplies latents and symbols.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from .factorized_prior import FactorizedPrior
from torch import nn

from .hdc import HdcFer
from .hdc_em import SliceEntropyModel
from .layers import ResBlock, conv, deconv, rate_gain, signal_preserving_init_

MV_SCALE = 4.0  # flow (pixels) is divided by this before the motion encoder


@dataclass
class InterConfig:
    g_ch: int = 32  # channels of F_t (at 1/2 resolution)
    ctx_ch: list = field(default_factory=lambda: [32, 48, 64])  # Ctx1, Ctx2, Ctx3 (1/2, 1/4, 1/8)
    N: int = 64  # context coder width
    M: int = 96  # context latent channels
    Nz: int = 64  # context hyper-latent channels
    N_mv: int = 48
    M_mv: int = 64
    Nz_mv: int = 32
    slices: int = 4  # HDC-EM channel slices per view
    fer: bool = True  # HDC-FER in encoders, decoders and hyper coders
    cross_view: bool = True  # HDC-EM cross-view priors (False: per-view sliced model)
    hdc_variant: str = "aligned"
    fer_disp: int = 8  # shifts searched by HDC-FER (at 1/16 of full resolution)
    em_disp: int = 6  # shifts searched by HDC-EM (at 1/16)
    num_rates: int = 4
    # I-frames of a GOP are coded at intra rate = min(3, P rate + i_rate_offset): the paper and
    # DCVC code I-frames at a higher quality than the P-frames that predict from them. 2 was
    # measured better than 1 over whole GOPs with the 8db0 P weights (camcorder, GOP 32: P rate 0
    # +0.1 dB for +1 % bits; offset 2 at P rate 1 against offset 1 at P rate 2: +0.04 dB with
    # 13 % fewer bits; indoor, GOP 10: 2-6 % fewer bits at equal PSNR). Weights keep their own.
    i_rate_offset: float = 2.0

    def to_dict(self):
        return asdict(self)


SMALL = InterConfig()
# Paper-like widths (DCVC-TCM* keeps DCVC-TCM's structure with fewer channels).
PAPER = InterConfig(g_ch=64, ctx_ch=[64, 64, 64], N=128, M=128, Nz=96, N_mv=64, M_mv=96, Nz_mv=64,
                    fer_disp=12, em_disp=8)
TINY = InterConfig(g_ch=8, ctx_ch=[8, 8, 8], N=16, M=16, Nz=8, N_mv=8, M_mv=8, Nz_mv=8, slices=2,
                   fer_disp=3, em_disp=3)


def _act():
    return nn.LeakyReLU(0.1, inplace=True)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(p) = x(p + flow(p)), bilinear, border replicate. flow (B, 2, H, W) in
    pixels, channel 0 horizontal."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _fer(cfg: InterConfig, ch: int) -> nn.Module:
    return HdcFer(ch, cfg.fer_disp, cfg.hdc_variant) if cfg.fer else nn.Identity()


def reset_coder_parameters(coder: nn.Module) -> None:
    """Signal-preserving init of a coder's transforms (see layers.signal_preserving_init_); its
    entropy model keeps its own init, HDC-FER gates restart at zero (identity) and a coder with
    a `recon` head restarts close to "copy the motion-compensated prediction"."""
    for name, child in coder.named_children():
        if name not in ("em", "entropy_bottleneck"):
            signal_preserving_init_(child)
    for m in coder.modules():
        if isinstance(m, HdcFer):
            m.zero_gate_()
    if hasattr(coder, "recon"):
        # near "copy the prediction", but not exactly: a zero last layer passes no gradient to
        # the decoder, and the rate term then shrinks the latent to nothing before the decoder
        # has learned to use it (measured: the revived coder collapsed again within 200 steps)
        coder.recon[-1].weight.data.mul_(0.1)


class MotionCoder(nn.Module):
    """Flow <-> latent at 1/16, hyper-latent at 1/64. Optical flow is smooth, so the coder works
    from 1/4 resolution (average-pooled flow in, bilinearly upsampled flow out): the full-
    resolution layers of DCVC's motion coder would cost most of a CPU's time for little gain."""

    def __init__(self, cfg: InterConfig):
        super().__init__()
        n, m, nz = cfg.N_mv, cfg.M_mv, cfg.Nz_mv
        self.enc = nn.Sequential(conv(2, n, 3), _act(), conv(n, n, 3, 1), _fer(cfg, n), _act(), conv(n, m, 3))
        self.dec = nn.Sequential(deconv(m, n, 3), _fer(cfg, n), _act(), deconv(n, n, 3), _act(),
                                 conv(n, 2, 3, 1))
        self.h_a = nn.Sequential(conv(m, n, 3, 1), _act(), conv(n, n, 3), _fer(cfg, n), _act(), conv(n, nz, 3))
        self.h_s = nn.Sequential(deconv(nz, n, 3), _fer(cfg, n), _act(), deconv(n, n, 3), _act(),
                                 conv(n, 2 * m, 3, 1))
        self.entropy_bottleneck = FactorizedPrior(nz)
        self.em = SliceEntropyModel(m, 2 * m, cfg.slices, cfg.cross_view, 32, cfg.em_disp, cfg.hdc_variant)
        reset_coder_parameters(self)

    def analysis(self, flow):
        return self.enc(F.avg_pool2d(flow / MV_SCALE, 4))

    def synthesis(self, y_hat):
        return F.interpolate(self.dec(y_hat), scale_factor=4, mode="bilinear", align_corners=False) * MV_SCALE


class MotionCompensation(nn.Module):
    """Multi-scale contexts from F_{t-1} warped by the decoded flow (DCVC-TCM), at 1/2, 1/4 and
    1/8 of full resolution (DCVC-TCM: 1, 1/2, 1/4; one octave lower for CPU speed), plus the
    motion-compensated previous reconstruction (full resolution)."""

    def __init__(self, cfg: InterConfig):
        super().__init__()
        g, (c1, c2, c3) = cfg.g_ch, cfg.ctx_ch
        self.f1 = nn.Conv2d(g, c1, 3, padding=1)
        self.f2 = nn.Sequential(conv(c1, c2, 3), ResBlock(c2))
        self.f3 = nn.Sequential(conv(c2, c3, 3), ResBlock(c3))
        self.r3 = ResBlock(c3)
        self.up3 = deconv(c3, c2, 3)
        self.r2 = nn.Sequential(nn.Conv2d(2 * c2, c2, 3, padding=1), ResBlock(c2))
        self.up2 = deconv(c2, c1, 3)
        self.r1 = nn.Sequential(nn.Conv2d(2 * c1 + 12, c1, 3, padding=1), ResBlock(c1))

    def forward(self, feature, frame, flow):
        f1 = self.f1(feature)
        f2 = self.f2(f1)
        f3 = self.f3(f2)
        flow1 = F.avg_pool2d(flow, 2) * 0.5
        flow2 = F.avg_pool2d(flow1, 2) * 0.5
        flow3 = F.avg_pool2d(flow2, 2) * 0.5
        pred = flow_warp(frame, flow)
        ctx3 = self.r3(flow_warp(f3, flow3))
        ctx2 = self.r2(torch.cat([flow_warp(f2, flow2), self.up3(ctx3)], dim=1))
        ctx1 = self.r1(torch.cat([flow_warp(f1, flow1), self.up2(ctx2), F.pixel_unshuffle(pred, 2)], dim=1))
        return ctx1, ctx2, ctx3, pred


class ContextCoder(nn.Module):
    """Contextual encoder/decoder conditioned on Ctx1..3, hyper coder, temporal prior, HDC-EM."""

    def __init__(self, cfg: InterConfig):
        super().__init__()
        g, (c1, c2, c3), n, m, nz = cfg.g_ch, cfg.ctx_ch, cfg.N, cfg.M, cfg.Nz
        self.e1 = conv(6, n, 3)  # current frame and its motion-compensated prediction
        self.e2 = nn.Sequential(conv(n + c1, n, 3), ResBlock(n))
        self.e3 = nn.Sequential(conv(n + c2, n, 3), ResBlock(n))
        self.e4 = nn.Sequential(conv(n + c3, n, 3, 1), ResBlock(n), _fer(cfg, n), conv(n, m, 3))
        self.d1 = nn.Sequential(deconv(m, n, 3), _fer(cfg, n), ResBlock(n))
        self.d2 = nn.Sequential(conv(n + c3, n, 3, 1), ResBlock(n), deconv(n, n, 3))
        self.d3 = nn.Sequential(conv(n + c2, n, 3, 1), _act(), deconv(n, n, 3))
        self.d4 = nn.Sequential(conv(n + c1, g, 3, 1), ResBlock(g))
        self.recon = nn.Sequential(conv(g, g, 3, 1), _act(), deconv(g, 3, 3))
        self.h_a = nn.Sequential(conv(m, n, 3, 1), _act(), conv(n, n, 3), _fer(cfg, n), _act(), conv(n, nz, 3))
        self.h_s = nn.Sequential(deconv(nz, n, 3), _fer(cfg, n), _act(), deconv(n, n, 3), _act(), conv(n, m, 3, 1))
        self.temporal = nn.Sequential(conv(c3, n, 3, 1), _act(), conv(n, m, 3))
        self.fuse = nn.Sequential(conv(2 * m, 2 * m, 1, 1), _act(), conv(2 * m, 2 * m, 1, 1))
        self.entropy_bottleneck = FactorizedPrior(nz)
        self.em = SliceEntropyModel(m, 2 * m, cfg.slices, cfg.cross_view, 32, cfg.em_disp, cfg.hdc_variant)
        reset_coder_parameters(self)

    def analysis(self, x, ctx):
        ctx1, ctx2, ctx3, pred = ctx
        e = self.e2(torch.cat([self.e1(torch.cat([x, pred], dim=1)), ctx1], dim=1))
        e = self.e3(torch.cat([e, ctx2], dim=1))
        return self.e4(torch.cat([e, ctx3], dim=1))

    def prior(self, z_hat, ctx):
        return self.fuse(torch.cat([self.h_s(z_hat), self.temporal(ctx[2])], dim=1))

    def synthesis(self, y_hat, ctx):
        """Returns (x_hat, F_t): F_t lives at 1/2 resolution."""
        ctx1, ctx2, ctx3, pred = ctx
        d = self.d2(torch.cat([self.d1(y_hat), ctx3], dim=1))
        d = self.d3(torch.cat([d, ctx2], dim=1))
        feature = self.d4(torch.cat([d, ctx1], dim=1))
        return pred + self.recon(feature), feature


class StereoInterCodec(nn.Module):
    def __init__(self, cfg: InterConfig = SMALL):
        super().__init__()
        self.cfg = cfg
        self.motion = MotionCoder(cfg)
        self.compensation = MotionCompensation(cfg)
        self.context = ContextCoder(cfg)
        # F for the first P-frame after an I-frame: the I-frame has no feature, only pixels
        self.adaptor = conv(3, cfg.g_ch, 3)
        self.log_gain_mv = nn.Parameter(torch.zeros(cfg.num_rates, cfg.M_mv))
        self.log_gain = nn.Parameter(torch.zeros(cfg.num_rates, cfg.M))
        with torch.no_grad():  # rate r starts at 2**((r - top)/2), as the intra model does
            for r in range(cfg.num_rates):
                self.log_gain[r].fill_(0.5 * 0.6931 * (r - (cfg.num_rates - 1)))
                self.log_gain_mv[r].fill_(0.25 * 0.6931 * (r - (cfg.num_rates - 1)))

    def entropy_bottlenecks(self) -> dict[str, FactorizedPrior]:
        return {"motion": self.motion.entropy_bottleneck, "context": self.context.entropy_bottleneck}

    def reference_from_intra(self, x_hat: torch.Tensor) -> "Reference":
        return Reference(x_hat, self.adaptor(x_hat))

    def intra_rate(self, rate: float) -> float:
        return min(3.0, float(rate) + self.cfg.i_rate_offset)


@dataclass
class Reference:
    """What a view pair carries from one frame to the next (both views, left first)."""

    frame: torch.Tensor  # (2B, 3, H, W) reconstruction in [0, 1]
    feature: torch.Tensor  # (2B, g_ch, H/2, W/2)


def code_p_frame(model: StereoInterCodec, ref: Reference, rate, side) -> tuple[torch.Tensor, Reference]:
    """One stereo P-frame, the same steps for training, encoding and decoding.

    side.latent(kind, fn) -> y (fn computes it; only the encoder/training sides call it),
    side.hyper(kind, z_or_none, entropy_bottleneck, shape) -> z_hat,
    side.slices(kind, y_or_none) -> a coder for SliceEntropyModel.run,
    side.prediction(pred): sees the motion-compensated prediction (training's warping loss).
    kind is "motion" or "context". Returns (x_hat, new reference)."""
    ctx = code_motion(model, ref, rate, side)
    return code_context(model, ctx, rate, side)


def _latent_shape(ref_frame: torch.Tensor, channels: int, down: int) -> tuple[int, int, int, int]:
    h, w = ref_frame.shape[-2:]
    return (ref_frame.shape[0], channels, h // down, w // down)


def code_motion(model: StereoInterCodec, ref: Reference, rate, side) -> tuple[torch.Tensor, ...]:
    """First half of a P-frame: motion coding and compensation. Returns the contexts
    (Ctx1, Ctx2, Ctx3, motion-compensated prediction) the context coder works with."""
    mc = model.motion
    g_mv = rate_gain(model.log_gain_mv, rate)
    y_mv = side.latent("motion", lambda: mc.analysis(side.flow) * g_mv)
    z_mv = side.hyper("motion", None if y_mv is None else (lambda: mc.h_a(y_mv)), mc.entropy_bottleneck,
                      _latent_shape(ref.frame, model.cfg.Nz_mv, 64))
    y_mv_hat = mc.em.run(mc.h_s(z_mv), side.slices("motion", y_mv))
    flow_hat = mc.synthesis(y_mv_hat / g_mv)
    ctx = model.compensation(ref.feature, ref.frame, flow_hat)
    side.prediction(ctx[3])
    return ctx


def code_context(model: StereoInterCodec, ctx: tuple[torch.Tensor, ...], rate, side) -> tuple[torch.Tensor, Reference]:
    """Second half of a P-frame: the frame coded against the contexts of `code_motion`."""
    cc = model.context
    g = rate_gain(model.log_gain, rate)
    y = side.latent("context", lambda: cc.analysis(side.x, ctx) * g)
    z = side.hyper("context", None if y is None else (lambda: cc.h_a(y)), cc.entropy_bottleneck,
                   _latent_shape(ctx[3], model.cfg.Nz, 64))
    y_hat = cc.em.run(cc.prior(z, ctx), side.slices("context", y))
    x_hat, feature = cc.synthesis(y_hat / g, ctx)
    x_hat = x_hat.clamp(0, 1)
    return x_hat, Reference(x_hat, feature)
