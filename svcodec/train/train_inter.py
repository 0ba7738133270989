"""Resumable training of the stereo P-frame model (DCVC-TCM* backbone + HDC-FER + HDC-EM).

    python -m svcodec.train.train_inter --ckpt runs/inter.pt --minutes 60 [--stage full]

A sample is a run of 1 + P consecutive stereo frames (P = --frames, default 2). The first is
coded by the shipped intra model (frozen) at the I-frame rate the GOP will use; the P-frames
follow, each predicted from the previous reconstruction, with motion estimated by DIS optical
flow on the previous *reconstruction*, exactly as the encoder does. Loss (Eq. 6 of the paper),
summed over both views and the P-frames:
    sum_t  lambda_r * MSE(x_t, x_hat_t) + bpp_t   (motion + context, latents + hyper-latents)
With --cascade (the default) gradients flow across the P-frames (the paper's cascaded loss);
--no-cascade detaches the reference between frames (the 1-frame stage).
A warping term, w * lambda_r * MSE(x_t, motion-compensated prediction), teaches the motion
coder to deliver usable flow early (DCVC trains its motion stage on this distortion first); w
decays linearly from --warp-weight to a tenth of it over --warp-decay-steps.

Stages (paper appendix A, Table S2), chosen with --stage:
  single  no HDC-FER and no cross-view priors (the single-view backbone, both views batched)
  em      + HDC-EM cross-view priors (all parameters train)
  fer     + HDC-FER, and only the HDC-FER modules train
  full    everything trains (the default for a new run)
A run started with --init from a checkpoint or weights of an earlier stage keeps every tensor
the two have in common; new modules start from their initialisation (HDC-FER as identity).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import time
from pathlib import Path

import torch

from ..codec.motion import DisFlow
from ..nn.elic import gaussian_bits
from ..nn.hdc import HdcFer
from ..nn.hdc_em import SKIP_SCALE
from ..nn.inter import PAPER, SMALL, TINY, InterConfig, StereoInterCodec, code_p_frame, reset_coder_parameters
from ..nn.layers import RATE_LAMBDAS, rd_lambda, ste_round
from ..zoo import load_intra
from .common import (WeightAverage, add_average_arg, autocast_submodules, clipped_finite, finite_weights,
                     save_atomic)
from .data import DEFAULT_DATA
from .sequences import ClipSampler, load_clips
from .train_intra import sample_rates

# Same lambdas as the intra model (rd_lambda): P-frame rate r trains at 256 * 2**r (MSE of
# [0, 1] RGB); the I-frame before them is coded at intra rate r + cfg.i_rate_offset.
CONFIGS = {"small": SMALL, "paper": PAPER, "tiny": TINY}
STAGES = ("single", "em", "fer", "full")


class TrainingSide:
    """The `side` of code_p_frame for training: additive noise for the rate terms; the decoders
    see either the same noisy latents or straight-through mean-shifted rounding (every
    position; see slice).

    Why noise at all: a freshly initialised encoder emits latents of std ~0.04, so rounding
    maps every one of them to the prior's mean and the decoder receives no information; it
    learns to ignore its latent, the encoder gets no useful gradient, and the context coder
    stays collapsed for good (measured on the first shipped P weights: a unit change of the
    context latent moved the reconstruction by 1.6e-4). Noisy latents carry information at any
    scale, so the coder can grow out of that state; the rounded steps teach the decoder what
    the real codec sends."""

    def __init__(self, x: torch.Tensor, flow: torch.Tensor, noisy_decoder: bool = False):
        self.x, self.flow, self.noisy_decoder = x, flow, noisy_decoder
        self.bits = {"motion": x.new_zeros(x.shape[0]), "context": x.new_zeros(x.shape[0])}
        self.skipped = 0.0

    def latent(self, kind, fn):
        return fn()

    def hyper(self, kind, fn, eb, shape):
        z_hat, lik = eb(fn())
        self.bits[kind] = self.bits[kind] + (-torch.log2(lik)).sum(dim=(1, 2, 3))
        return z_hat

    def slices(self, kind, y):
        return _TrainingSlices(self, kind, y)

    def prediction(self, pred):
        self.pred = pred


class _TrainingSlices:
    def __init__(self, side: TrainingSide, kind: str, y: torch.Tensor):
        self.side, self.kind, self.y = side, kind, y

    def slice(self, view, n, mu, scale):
        # Every position is rounded and priced here, also those the codec will skip (scale in
        # the lowest table level): masking them out in training would cut their gradients, and
        # a latent whose scale once fell below the threshold could never come back (measured:
        # the context coder collapsed to sending nothing). At the smallest scale a symbol equal
        # to its mean costs ~0 bits anyway, so skipping at inference changes almost nothing.
        b = self.y.shape[0] // 2
        c = mu.shape[1]
        y = self.y[view * b:(view + 1) * b, n * c:(n + 1) * c]
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        bits = gaussian_bits(noisy, mu, scale).sum(dim=(1, 2, 3))
        pad = [bits.new_zeros(b)] * 2
        pad[view] = bits
        self.side.bits[self.kind] = self.side.bits[self.kind] + torch.cat(pad)
        self.side.skipped += float((scale <= SKIP_SCALE).float().mean())
        if self.side.noisy_decoder:
            return noisy
        return mu + ste_round(y - mu)


# The paper's ablation (Fig. 5a) as model variants: which HDC parts the model has, and which form
# of HDC they use (nn/hdc.py). A variant is kept by its checkpoint and re-applied on resume.
VARIANTS = {
    "full": {},
    "backbone": {"fer": False, "cross_view": False},
    "fer-only": {"cross_view": False},
    "em-only": {"fer": False},
    "literal": {"hdc_variant": "literal"},
    "noscore": {"hdc_variant": "noscore"},
    "noshift": {"hdc_variant": "noshift"},
}


def configure_stage(cfg: InterConfig, stage: str, variant: str = "full") -> InterConfig:
    parts = {"single": {"fer": False, "cross_view": False},
             "em": {"fer": False, "cross_view": True}}.get(stage, {"fer": True, "cross_view": True})
    return InterConfig(**{**cfg.to_dict(), **parts, **VARIANTS[variant]})


def trainable(model: StereoInterCodec, stage: str) -> list[torch.nn.Parameter]:
    """The parameters the stage trains ('fer': only those inside HDC-FER modules); the
    entropy bottlenecks' quantiles have their own optimizer and always train."""
    fer = tuple(n + "." for n, m in model.named_modules() if isinstance(m, HdcFer))
    params = []
    for n, p in model.named_parameters():
        train = n.endswith(".quantiles") or stage != "fer" or n.startswith(fer)
        p.requires_grad_(train)
        if train and not n.endswith(".quantiles"):
            params.append(p)
    return params


def clipping_groups(model: StereoInterCodec) -> list[list[torch.nn.Parameter]]:
    """Trainable parameters grouped by top-level part (motion coder, compensation, context coder,
    the rest), each group clipped on its own. Why: the motion decoder's gradient (flow -> warp ->
    lambda * MSE) swings between 2 and 120 from step to step; clipped as one vector with the
    rest, it rescaled the context coder's gradient by a random factor of 1/3 to 1/150 every step
    and the context coder never learned (measured while reviving it)."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and not name.endswith(".quantiles"):
            part = name.split(".")[0]
            groups.setdefault(part if part in ("motion", "compensation", "context") else "rest", []).append(p)
    return list(groups.values())


def load_partial(model: torch.nn.Module, state: dict) -> list[str]:
    """Load every tensor whose name and shape match; returns the names left at init."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(k for k in own if k not in keep)


def frames_per_view(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3, h, w) -> (2B, 3, h, w), left views first (the codec's batch layout)."""
    return torch.cat([x[:, 0], x[:, 1]], dim=0)


def with_zero_motion(flow: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """flow (2B, 2, h, w), views stacked as frames_per_view does: each sample's flow (both views
    alike, as the encoder decides per frame pair) is replaced by zero motion with probability
    `share`. Why: `svc encode --motion rd` keeps zero motion for most P-frames of real footage,
    a case training on DIS flow alone never shows the networks. share 0 draws no random numbers."""
    if share <= 0:
        return flow
    moving = (torch.rand(flow.shape[0] // 2, generator=gen) >= share).to(flow.dtype).repeat(2)
    return flow * moving.to(flow.device).view(-1, 1, 1, 1)


# The convolution stacks that may run in bf16: neither the entropy models and hyper coders (their
# likelihoods decide the rate term) nor the warping (bf16 positions are off by up to a pixel at
# 192 columns) are among them. Every ablation variant has all of them.
BF16_TRANSFORMS = ("adaptor", "motion.enc", "motion.dec",
                   *(f"compensation.{n}" for n in ("f1", "f2", "f3", "r3", "up3", "r2", "up2", "r1")),
                   *(f"context.{n}" for n in ("e1", "e2", "e3", "e4", "d1", "d2", "d3", "d4", "recon")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--stage", choices=STAGES, default=None, help="default: the checkpoint's, or full")
    ap.add_argument("--init", default=None, help="checkpoint (.pt) or inter weights to start a new run from")
    ap.add_argument("--intra", default=None, help="intra weights for the I-frames (default: shipped)")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", default="128x192", help="HxW (or one size for square crops), multiples of 64")
    ap.add_argument("--frames", type=int, default=4,
                    help="P-frames per sample, cascaded (every shipped P-frame model since the 3rd session "
                         "trained on 4: with 2, the quality fell 0.13 dB per frame along a GOP)")
    ap.add_argument("--warmup-frames", type=int, default=11,
                    help="before a sample's trained P-frames, code up to this many (0..N, drawn per step) "
                         "without gradients, so that training also starts from references deep in a GOP, "
                         "whose quality has drifted, as the codec's later P-frames do (11 + 4 trained: every "
                         "P position of the default GOP 16; 0: off, each sample starts at its I-frame)")
    ap.add_argument("--cascade", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warp-weight", type=float, default=1.0)
    ap.add_argument("--warp-decay-steps", type=int, default=3000)
    ap.add_argument("--context-rate-weight", type=float, default=1.0,
                    help="scale of the context bits in the loss (a warm-up below 1 lets a collapsed "
                         "context coder learn to carry the residual again; report bpp is unscaled)")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient norm limit per part (see clipping_groups)")
    ap.add_argument("--decoder-noise", type=float, default=0.5,
                    help="share of steps whose decoders see noisy latents instead of rounded ones "
                         "(see TrainingSide; 0: always rounded, as the codec)")
    ap.add_argument("--zero-motion", type=float, default=0.0,
                    help="share of samples whose P-frames train with zero motion instead of the DIS flow "
                         "(the encoder's --motion rd often keeps zero motion; see with_zero_motion)")
    ap.add_argument("--save-minutes", type=float, default=3.0)
    ap.add_argument("--log-seconds", type=float, default=30.0, help="log line interval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flow-workers", type=int, default=None,
                    help="threads computing the batch's optical flows (default: 1 on a CPU, where the "
                         "torch threads use the cores; up to 8 on cuda)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast for the transforms (BF16_TRANSFORMS); entropy models, hyper coders "
                         "and warping stay float32 (default: on for cuda)")
    ap.add_argument("--no-mono", action="store_true", help="stereo clips only")
    ap.add_argument("--i-rate-offset", type=float, default=None,
                    help="I-frames of a GOP are coded at intra rate P rate + this (capped at 3); kept by the "
                         "checkpoint and the exported weights (default: the checkpoint's; a new run: "
                         "InterConfig's, 2)")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                    help="ablation variant (paper Fig. 5a): full (default), backbone (no HDC), fer-only, "
                         "em-only, or the HDC forms literal (Eq. 1 as printed), noscore, noshift; "
                         "a resumed run keeps its checkpoint's")
    ap.add_argument("--fresh-optimizer", action="store_true",
                    help="do not resume the optimizer state (its second moments may still hold an "
                         "earlier loss's gradient scale)")
    ap.add_argument("--reinit-context", action="store_true",
                    help="restart the context coder's transforms from their initialisation (revives "
                         "a collapsed context coder; motion coder and entropy models keep theirs)")
    add_average_arg(ap)
    args = ap.parse_args(argv)
    if args.warmup_frames < 0:
        ap.error("--warmup-frames must be >= 0")
    torch.set_num_threads(args.threads)
    minutes = args.minutes if args.minutes is not None else (args.hours or 1.0) * 60
    crop = tuple(int(v) for v in args.crop.lower().split("x")) * (1 if "x" in args.crop.lower() else 2)
    if len(crop) != 2 or crop[0] % 64 or crop[1] % 64:
        ap.error(f"--crop {args.crop}: expected HxW, multiples of 64")

    state = torch.load(args.ckpt, map_location="cpu", weights_only=False) if args.ckpt.exists() else None
    stage = args.stage or (state or {}).get("stage") or "full"
    if state:
        cfg = InterConfig(**state["config"])
    else:
        cfg = CONFIGS[args.config]
    variant = state.get("variant", "full") if state else (args.variant or "full")
    if state and args.variant and args.variant != variant:
        ap.error(f"--variant {args.variant}: {args.ckpt} is a {variant!r} run (start a new checkpoint)")
    cfg = configure_stage(cfg, stage, variant)
    if args.i_rate_offset is not None:
        cfg = dataclasses.replace(cfg, i_rate_offset=args.i_rate_offset)
    model = StereoInterCodec(cfg).to(args.device)
    step, seconds, history = 0, 0.0, []
    if state:
        missing = load_partial(model, state["model"])
        step, seconds, history = state["step"], state["seconds"], state.get("history", [])
        if missing:
            print(f"stage {stage}: {len(missing)} tensors start from their initialisation")
    elif args.init:
        init_state = _init_state(args.init)
        missing = load_partial(model, init_state)
        print(f"init from {args.init}: {len(missing)} tensors start from their initialisation")

    bf16 = args.bf16 if args.bf16 is not None else torch.device(args.device).type == "cuda"
    autocast_submodules(model, list(BF16_TRANSFORMS), torch.device(args.device).type, bf16)
    intra = load_intra(args.intra, device=args.device)
    for p in intra.model.parameters():
        p.requires_grad_(False)

    params = trainable(model, stage)
    if not params:
        ap.error(f"stage {stage!r} trains only HDC-FER, and variant {variant!r} has none")
    clip_groups = clipping_groups(model)
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    if args.reinit_context:
        reset_coder_parameters(model.context)
    same_stage = bool(state) and state.get("stage") == stage
    # a new run, a new stage or a restarted context coder starts its average from the weights
    # it starts with
    keep_average = same_stage and not args.reinit_context
    average = WeightAverage(model, args.average_decay, state.get("average") if keep_average else None)
    if same_stage and "opt" in state and not args.fresh_optimizer:
        try:
            opt.load_state_dict(state["opt"])
            aux_opt.load_state_dict(state["aux_opt"])
        except ValueError:
            print("optimizer state does not match (new stage?): starting it fresh")
        for g in opt.param_groups:
            g["lr"] = args.lr

    clips = load_clips(args.data, mono=not args.no_mono)
    sampler = ClipSampler(clips, 1 + args.warmup_frames + args.frames, crop, seed=step)
    gen = torch.Generator().manual_seed(step + 1)
    cuda = torch.device(args.device).type == "cuda"
    dis = DisFlow(workers=args.flow_workers or (min(8, os.cpu_count() or 1) if cuda else 1))
    # seconds spent on sampling and on optical flow since the last log line: on a GPU machine they
    # run on the CPU and show whether the GPU waits for them (the first H100 burst ran at 1-2.5
    # s/step beside the intra trainer, and nothing said why)
    phase = {"data": 0.0, "flow": 0.0, "steps": 0}

    def flow_of(x: torch.Tensor, ref_frame: torch.Tensor) -> torch.Tensor:
        if cuda:
            torch.cuda.synchronize()  # the flow's .cpu() would otherwise wait for queued GPU work
        t = time.perf_counter()
        flow = dis(x, ref_frame)
        phase["flow"] += time.perf_counter() - t
        return flow
    warmup = f" + up to {args.warmup_frames} P untrained" if args.warmup_frames else ""
    print(f"device {args.device}, {args.threads} threads, bf16 {bf16}, batch {args.batch} x (1 I{warmup} + {args.frames} P) "
          f"x {crop[0]}x{crop[1]}, LR {args.lr}", flush=True)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))

    def checkpoint():
        if not finite_weights(model):  # never overwrite a good checkpoint with a broken model
            raise SystemExit(f"error: the model's weights are no longer finite at step {step}; "
                             f"{args.ckpt} keeps its last good state")
        save_atomic({
            "config": cfg.to_dict(), "stage": stage, "variant": variant, "model": model.state_dict(),
            "average": average.state_dict(), "opt": opt.state_dict(),
            "aux_opt": aux_opt.state_dict(), "step": step, "seconds": seconds, "history": history,
            "lambda0": RATE_LAMBDAS[0], "crop": crop, "batch": args.batch, "frames": args.frames,
            "cascade": args.cascade, "data": str(args.data), "intra": intra.name,
            "intra_id": intra.model_id.hex(), "init": (state or {}).get("init") or args.init,
            "clips": [c.name for c in clips], "device": str(args.device), "runs": runs,
        }, args.ckpt)

    # every invocation's flags, so the exported manifest can say how the weights were trained
    runs = (state or {}).get("runs", []) + [{"start_step": step, "date": time.strftime("%Y-%m-%d %H:%M"),
                                             "args": {k: str(v) for k, v in vars(args).items()}}]
    t_end = time.time() + minutes * 60
    last_save = last_log = time.time()
    ema, skipped = None, 0
    while step < args.steps and time.time() < t_end and not stop["now"]:
        t0 = time.time()
        seq = sampler.batch(args.batch).to(args.device)  # (B, T, 2, 3, h, w)
        phase["data"] += time.time() - t0
        phase["steps"] += 1
        b = seq.shape[0]
        rate = sample_rates(b, cfg.num_rates, gen).to(args.device)
        rate2 = rate.repeat(2)
        with torch.no_grad():
            x0 = frames_per_view(seq[:, 0])
            i_rate = (rate2 + cfg.i_rate_offset).clamp(max=3.0)
            x_i = intra.model(x0, i_rate)["x_hat"].clamp(0, 1)
        ref = model.reference_from_intra(x_i)
        # warm-up P-frames, coded as the codec does (rounded latents) and without gradients: the
        # trained cascade then starts from their drifted reconstruction
        first = 1 + int(torch.randint(args.warmup_frames + 1, (1,), generator=gen)) if args.warmup_frames else 1
        with torch.no_grad():
            for t in range(1, first):
                x = frames_per_view(seq[:, t])
                _, ref = code_p_frame(model, ref, rate2, TrainingSide(x, flow_of(x, ref.frame), False))
        noisy_decoder = bool(torch.rand(1, generator=gen) < args.decoder_noise)
        loss = 0.0
        w_warp = args.warp_weight * max(0.1, 1.0 - 0.9 * step / max(1, args.warp_decay_steps))
        mses, bpps, bpp_mv, wmses = [], [], [], []
        for t in range(first, first + args.frames):
            x = frames_per_view(seq[:, t])
            flow = with_zero_motion(flow_of(x, ref.frame.detach()), args.zero_motion, gen)
            side = TrainingSide(x, flow, noisy_decoder)
            x_hat, ref = code_p_frame(model, ref, rate2, side)
            mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
            pixels = x.shape[2] * x.shape[3]
            bpp = (side.bits["motion"] + side.bits["context"]) / pixels
            warp_mse = ((side.pred - x) ** 2).mean(dim=(1, 2, 3))
            bpp_loss = (side.bits["motion"] + args.context_rate_weight * side.bits["context"]) / pixels
            loss = loss + (rd_lambda(rate2) * (mse + w_warp * warp_mse) + bpp_loss).mean()
            mses.append(mse.detach())
            wmses.append(warp_mse.detach())
            bpps.append(bpp.detach().mean())
            bpp_mv.append((side.bits["motion"] / pixels).detach().mean())
            if not args.cascade:
                ref = type(ref)(ref.frame.detach(), ref.feature.detach())
        loss = loss / args.frames
        opt.zero_grad(set_to_none=True)
        loss.backward()
        finite = clipped_finite(clip_groups, args.clip)  # a non-finite step is dropped, not applied
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        sum(eb.loss() for eb in model.entropy_bottlenecks().values()).backward()
        clipped_finite([aux_params], float("inf"))
        aux_opt.step()
        step += 1
        seconds += time.time() - t0
        if not finite:
            skipped += 1
            print(f"step {step}: non-finite loss or gradient, step dropped ({skipped} so far)", flush=True)
            continue
        average.update(model)
        mse_all = torch.cat(mses)
        psnr = float((-10 * torch.log10(mse_all.clamp_min(1e-10))).mean())
        warp_psnr = float((-10 * torch.log10(torch.cat(wmses).clamp_min(1e-10))).mean())
        cur = (float(loss.detach()), float(torch.stack(bpps).mean()), float(torch.stack(bpp_mv).mean()), psnr,
               warp_psnr)
        if ema is None:
            ema = cur
        # the PSNRs shown are the codec's (rounded latents): noisy-decoder steps leave them alone
        keep = (3, 4) if noisy_decoder else ()
        ema = tuple(a if i in keep else 0.98 * a + 0.02 * c for i, (a, c) in enumerate(zip(ema, cur)))
        if time.time() - last_log >= args.log_seconds:
            last_log = time.time()
            px = b * 2 * args.frames * seq.shape[-1] * seq.shape[-2]
            dt = time.time() - t0
            n = max(1, phase["steps"])
            print(f"step {step} stage {stage} loss {ema[0]:.4f} P bpp {ema[1]:.4f} (motion {ema[2]:.4f}) "
                  f"P psnr {ema[3]:.2f} (prediction {ema[4]:.2f}) | {dt:.2f} s/step, {px / dt / 1e3:.0f} kpx/s, "
                  f"of it data {phase['data'] / n:.2f} s + flow {phase['flow'] / n:.2f} s, {seconds / 3600:.2f} h",
                  flush=True)
            phase.update(data=0.0, flow=0.0, steps=0)
        if step % 100 == 0:
            history.append({"step": step, "loss": ema[0], "bpp": ema[1], "psnr": ema[3]})
        if time.time() - last_save > args.save_minutes * 60:
            checkpoint()
            last_save = time.time()
    checkpoint()
    print(f"saved {args.ckpt} at step {step} ({seconds / 3600:.2f} h)")


def _init_state(src: str) -> dict:
    if src.endswith(".pt"):
        return torch.load(src, map_location="cpu", weights_only=False)["model"]
    from ..zoo import load_inter

    return load_inter(src).model.state_dict()


if __name__ == "__main__":
    main()
