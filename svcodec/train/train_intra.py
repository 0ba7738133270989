"""Resumable training of the variable-rate ELIC I-frame model on CPU (or a GPU when present).

    python -m svcodec.train.train_intra --ckpt runs/intra.pt --hours 2

Loss per image: lambda_r * MSE(x, x_hat) + bpp, with x in [0, 1] and lambda_r the paper's
MSE lambdas (256, 512, 1024, 2048) for rate points 0..3. Each sample in a batch draws its own
rate (mostly the four points, sometimes a fractional rate so interpolation stays usable).
The checkpoint is rewritten atomically every `--save-every` steps and on exit; rerunning the
same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch

from ..nn.elic import PAPER, SMALL, ElicConfig, ElicIntraCodec
from ..zoo import load_intra
from .data import DEFAULT_DATA, CropSampler, training_groups

LAMBDAS = (256.0, 512.0, 1024.0, 2048.0)


def lambda_for(rate: torch.Tensor) -> torch.Tensor:
    """Log-linear in the rate index, matching the gain interpolation."""
    lo = torch.tensor(LAMBDAS[0])
    return lo * (2.0 ** rate)


def sample_rates(n: int, num_rates: int, gen: torch.Generator) -> torch.Tensor:
    discrete = torch.randint(0, num_rates, (n,), generator=gen).float()
    cont = torch.rand(n, generator=gen) * (num_rates - 1)
    pick = torch.rand(n, generator=gen) < 0.25
    return torch.where(pick, cont, discrete)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--config", choices=["small", "paper"], default="small",
                    help="network size for a new run (a resumed run keeps its checkpoint's)")
    ap.add_argument("--init", default=None,
                    help="start a new run from shipped weights (name or .safetensors), e.g. to keep "
                         "training elic_small_vr without its checkpoint; the optimizer starts fresh")
    ap.add_argument("--hours", type=float, default=1.0, help="wall-clock budget of this run")
    ap.add_argument("--steps", type=int, default=10**9, help="stop at this total step count")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    state = torch.load(args.ckpt, map_location="cpu") if args.ckpt.exists() else None
    init = load_intra(args.init).model if (args.init and not state) else None
    if state:
        cfg = ElicConfig(**state["config"])
    else:
        cfg = init.cfg if init else {"small": SMALL, "paper": PAPER}[args.config]
    model = ElicIntraCodec(cfg)
    if init:
        model.load_state_dict(init.state_dict())
    model.to(args.device)
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    step, seconds = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, seconds = state["step"], state["seconds"]
        for g in opt.param_groups:
            g["lr"] = args.lr
    sampler = CropSampler(training_groups(args.data), args.crop, seed=step)
    gen = torch.Generator().manual_seed(step + 1)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))

    def checkpoint():
        save_atomic(
            {"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
             "aux_opt": aux_opt.state_dict(), "step": step, "seconds": seconds,
             "lambdas": LAMBDAS, "crop": args.crop, "batch": args.batch, "data": str(args.data),
             "init": (state or {}).get("init") or args.init},
            args.ckpt,
        )

    t_end = time.time() + args.hours * 3600
    ema = None
    while step < args.steps and time.time() < t_end and not stop["now"]:
        t0 = time.time()
        x = sampler.batch(args.batch).to(args.device)
        rate = sample_rates(x.shape[0], cfg.num_rates, gen).to(args.device)
        out = model(x, rate)
        pixels = x.shape[2] * x.shape[3]
        mse = ((out["x_hat"] - x) ** 2).mean(dim=(1, 2, 3))
        bpp = (out["y_bits"] + out["z_bits"]) / pixels
        loss = (lambda_for(rate).to(x.device) * mse + bpp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        model.entropy_bottleneck.loss().backward()
        aux_opt.step()
        step += 1
        seconds += time.time() - t0
        psnr = (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean().item()
        cur = (loss.item(), bpp.mean().item(), psnr)
        ema = cur if ema is None else tuple(0.98 * a + 0.02 * b for a, b in zip(ema, cur))
        if step % 20 == 0:
            print(f"step {step} loss {ema[0]:.4f} bpp {ema[1]:.4f} psnr {ema[2]:.2f} "
                  f"({seconds / 3600:.2f} h, {(time.time() - t0):.2f} s/step)", flush=True)
        if step % args.save_every == 0:
            checkpoint()
    checkpoint()
    print(f"saved {args.ckpt} at step {step}")


if __name__ == "__main__":
    main()
