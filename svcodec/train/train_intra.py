"""Resumable training of the variable-rate ELIC I-frame model (CPU, one GPU, or torchrun).

    python -m svcodec.train intra --ckpt runs/intra.pt --minutes 120 [--init elic_small_vr]
    torchrun --nproc-per-node 2 -m svcodec.train intra --ckpt runs/intra.pt --minutes 10

Loss per image: lambda_r * MSE(x, x_hat) + bpp, with x in [0, 1] and lambda_r the paper's
MSE lambdas (256, 512, 1024, 2048) for rate points 0..3. Each sample in a batch draws its own
rate (mostly the four points, sometimes a fractional rate so interpolation stays usable).
The checkpoint (model, optimizers, step, data sampler position, RNG) is rewritten atomically
every few minutes, at the end of the budget and on SIGTERM/SIGINT; rerunning the same command
continues at the step it stopped.
"""

from __future__ import annotations

import argparse
import time

import torch

from ..nn.elic import PAPER, SMALL, ElicConfig, ElicIntraCodec
from ..nn.layers import RATE_LAMBDAS, rd_lambda
from ..zoo import load_intra
from .common import (Budget, Meter, Run, add_common_args, autocast_submodules, budget_minutes,
                     clipped_finite, finite_weights, load_checkpoint, BatchStream, prepare_model, restore_rng,
                     rng_state, save_atomic, to_device, WeightAverage)
from .data import DEFAULT_DATA, CropSampler, to_unit, training_groups

# A few-second network for tests and smoke runs (not for shipping).
TINY = ElicConfig(N=16, M=32, Nz=16, groups=[8, 8, 16], res_blocks=0)
CONFIGS = {"small": SMALL, "paper": PAPER, "tiny": TINY}
# The entropy bottleneck's quantiles are trained by their own auxiliary loss.
AUX_PARAMS = ("entropy_bottleneck.quantiles",)

__all__ = ["sample_rates", "save_atomic", "main"]


def sample_rates(n: int, num_rates: int, gen: torch.Generator) -> torch.Tensor:
    discrete = torch.randint(0, num_rates, (n,), generator=gen).float()
    cont = torch.rand(n, generator=gen) * (num_rates - 1)
    pick = torch.rand(n, generator=gen) < 0.25
    return torch.where(pick, cont, discrete)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m svcodec.train intra", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, DEFAULT_DATA)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small",
                    help="network size for a new run (a resumed run keeps its checkpoint's)")
    ap.add_argument("--stage", default="all", choices=["all"], help="intra has one stage")
    ap.add_argument("--batch", type=int, default=None, help="per process (default: 8 cpu, 32 cuda)")
    ap.add_argument("--crop", type=int, default=None, help="default: 128 cpu, 256 cuda")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--derived", type=float, default=0.25,
                    help="share of mono crops replaced by a derived second view")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    t_start = time.time()  # the budget counts data loading too
    args = parse_args(argv)
    run = Run.start(args)
    cuda = run.device.type == "cuda"
    batch = args.batch or (32 if cuda else 8)
    crop = args.crop or (256 if cuda else 128)

    state = load_checkpoint(args.ckpt)
    torch.manual_seed(run.seed(0))  # same initial weights for the same command (ranks get rank 0's)
    init = load_intra(args.init).model if (args.init and not state) else None
    if state:
        cfg = ElicConfig(**state["config"])
    else:
        cfg = init.cfg if init else CONFIGS[args.config]
    model = ElicIntraCodec(cfg)
    if init:
        model.load_state_dict(init.state_dict())
    main_params = [p for n, p in model.named_parameters() if n not in AUX_PARAMS]
    aux_params = [p for n, p in model.named_parameters() if n in AUX_PARAMS]
    step, seconds = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        step, seconds = state["step"], state["seconds"]
    prepare_model(model, run)
    average = WeightAverage(model, args.average_decay, (state or {}).get("average"))
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    if state:
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        for g in opt.param_groups:
            g["lr"] = args.lr
    autocast_submodules(model, ["g_a", "g_s"], run.device.type, run.bf16)
    net = run.wrap(model, ignore=list(AUX_PARAMS))

    groups = training_groups(args.data)
    gen = torch.Generator().manual_seed(run.seed(step) + 1)
    torch.manual_seed(run.seed(step) + 2)
    data_state = restore_rng((state or {}).get("rng"), run, gen)
    if data_state is not None and "workers" not in data_state:  # format-2 single-sampler state
        data_state = {"workers": 0, "states": [data_state]}
    workers = run.data_workers(args)

    def make_sampler(worker: int) -> CropSampler:
        return CropSampler(groups, crop, seed=run.seed(step) * 64 + worker, derived_p=args.derived)

    batches = BatchStream(make_sampler, batch, workers, run.prefetch_depth(args), pin=cuda, state=data_state)
    resumed = f"resumed at step {step}" if state else ("from " + args.init if init else f"new {args.config}")
    if state and not batches.restored:
        resumed += " (data stream reseeded: no saved position for this process/worker count)"
    run.log(f"intra: {resumed}; {sum(p.numel() for p in model.parameters())} parameters; "
            f"device {run.device} x{run.world}, batch {batch}x{crop}px per process, bf16 {run.bf16}, "
            f"data {args.data} ({len(groups)} groups, {workers} loader processes)")

    def checkpoint():
        rng = rng_state(run, batches.state, gen)  # collective: every rank takes part
        if not finite_weights(model):  # never overwrite a good checkpoint with a broken model
            raise SystemExit(f"error: the model's weights are no longer finite at step {step}; "
                             f"{args.ckpt} keeps its last good state")
        if run.main:
            save_atomic(
                {"config": cfg.to_dict(), "model": model.state_dict(), "average": average.state_dict(),
                 "opt": opt.state_dict(),
                 "aux_opt": aux_opt.state_dict(), "step": step, "seconds": seconds,
                 "lambdas": RATE_LAMBDAS, "crop": crop, "batch": batch * run.world, "data": str(args.data),
                 "init": (state or {}).get("init") or args.init, "rng": rng,
                 "device": torch.cuda.get_device_name(run.device) if cuda else "cpu",
                 "format": 2},
                args.ckpt,
            )

    budget = Budget(budget_minutes(args), args.save_minutes, args.steps, start=t_start)
    meter = Meter(run, args.log_seconds)
    step_s, skipped = 0.0, 0
    while budget.keep_going(run, step, step_s):
        t0 = time.time()
        x = to_unit(to_device(next(batches), run))
        rate = sample_rates(x.shape[0], cfg.num_rates, gen).to(run.device)
        out = net(x, rate)
        pixels = x.shape[2] * x.shape[3]
        mse = ((out["x_hat"] - x) ** 2).mean(dim=(1, 2, 3))
        bpp = (out["y_bits"] + out["z_bits"]) / pixels
        loss = (rd_lambda(rate) * mse + bpp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        finite = clipped_finite([main_params], 1.0)  # a non-finite step is dropped, not applied
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        model.entropy_bottleneck.loss().backward()
        run.mean_([p.grad for p in aux_params])
        clipped_finite([aux_params], float("inf"))
        aux_opt.step()
        step += 1
        step_s = time.time() - t0
        seconds += step_s
        skipped += not finite
        if finite:
            average.update(model)
            psnr = (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean()
            meter.add(x.shape[0] * pixels, loss=loss.item(), bpp=bpp.mean().item(), psnr=psnr.item())
        meter.maybe_log(step, extra=f"{seconds / 3600:.3f} h" + (f", {skipped} non-finite steps dropped" if skipped else ""))
        if budget.checkpoint_due(run, step, args.save_every):
            checkpoint()
    meter.maybe_log(step, force=True, extra=f"{seconds / 3600:.3f} h")
    checkpoint()
    why = "stop signal" if budget.stop_requested else "budget/steps reached"
    run.log(f"saved {args.ckpt} at step {step} ({why})")
    run.close()


if __name__ == "__main__":
    main()
