"""Machinery every trainer shares: device setup, distributed runs, the time budget and stop
flag, atomic checkpoints with RNG state, the log line, and batch prefetching.

A trainer's loop looks like:

    run = Run.start(args)                    # device, DDP (torchrun env), threads, TF32
    budget = Budget(args.minutes, save_minutes=args.save_minutes)
    while budget.keep_going(run, step):      # time, SIGTERM/SIGINT, --steps; agreed by all ranks
        ...one step...
        if budget.checkpoint_due(): save ...
    save ...; run.close()

Only rank 0 writes checkpoints and log lines; every rank seeds its own data stream.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist


# -- command-line flags every trainer accepts -------------------------------------------------
def add_common_args(ap: argparse.ArgumentParser, default_data: str) -> None:
    ap.add_argument("--ckpt", type=Path, required=True, help="checkpoint; rerunning resumes it")
    ap.add_argument("--data", default=default_data, help="data dir or training pack (same layout)")
    ap.add_argument("--init", default=None, help="start a new run from these weights")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this run")
    ap.add_argument("--hours", type=float, default=None, help="same budget in hours (older flag)")
    ap.add_argument("--steps", type=int, default=10**9, help="stop at this total step count")
    ap.add_argument("--save-minutes", type=float, default=3.0, help="checkpoint at least this often")
    ap.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (0: off)")
    ap.add_argument("--log-seconds", type=float, default=30.0, help="log line interval")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="default: cuda when available")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast for the transforms (default: on for cuda)")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="batches prepared ahead (default: 4 on cuda, 0 on cpu)")
    ap.add_argument("--workers", type=int, default=None,
                    help="data loader processes (default: 6 on cuda, 0 on cpu: crops made in-process, "
                         "and a resumed run continues bit-exactly)")
    add_average_arg(ap)


def add_average_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--average-decay", type=float, default=0.999,
                    help="decay of the exported weight average (see WeightAverage; 0: export the raw "
                         "weights of the last step)")


def budget_minutes(args) -> float:
    if args.minutes is not None:
        return args.minutes
    if args.hours is not None:
        return args.hours * 60
    return 60.0


# -- device and process group -----------------------------------------------------------------
@dataclass
class Run:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    bf16: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def start(cls, args) -> "Run":
        """Sets up the device and, when started by torchrun (WORLD_SIZE > 1), the process group:
        nccl on CUDA, gloo on CPU."""
        kind = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.set_num_threads(max(1, args.threads))
        if kind == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
            # TF32 for the float32 parts, autotuned convolutions (fixed crop sizes)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if kind == "cuda" else "gloo")
        bf16 = args.bf16 if args.bf16 is not None else kind == "cuda"
        return cls(device, rank, world, local_rank, bf16)

    def prefetch_depth(self, args) -> int:
        if args.prefetch is not None:
            return args.prefetch
        return 4 if self.device.type == "cuda" else 0

    def data_workers(self, args) -> int:
        if args.workers is not None:
            return max(0, args.workers)
        return min(6, max(1, (os.cpu_count() or 2) // max(1, self.world) - 2)) if self.device.type == "cuda" else 0

    def seed(self, base: int) -> int:
        """Per-rank seed, so ranks draw different samples (the DistributedSampler idea)."""
        return base * 1009 + self.rank

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (so all ranks stop at the same step)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj):
        """List of obj from every rank (on every rank)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean_(self, tensors) -> None:
        """Average tensors in place across ranks (gradients DDP does not handle)."""
        if not self.distributed:
            return
        for t in tensors:
            if t is not None:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                t.div_(self.world)

    def wrap(self, model: torch.nn.Module, ignore: list[str] = ()) -> torch.nn.Module:
        """DistributedDataParallel around model when distributed; `ignore` names parameters
        DDP must leave alone (e.g. ones trained by a separate auxiliary loss)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        if ignore:
            DDP._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def prepare_model(model: torch.nn.Module, run: Run) -> torch.nn.Module:
    model.to(run.device)
    if run.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def to_device(x: torch.Tensor, run: Run) -> torch.Tensor:
    if run.device.type != "cuda":
        return x
    if not x.is_pinned():
        x = x.pin_memory()
    x = x.to(run.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def autocast_submodules(model: torch.nn.Module, names: list[str], device_type: str, enabled: bool) -> None:
    """Run the named submodules (the analysis/synthesis transforms) under bf16 autocast and
    hand float32 back, so the entropy model's likelihoods stay in float32. Patches the
    instances' forward only: parameter names and the state dict are unchanged. On CUDA, and on
    CPUs with AVX512-BF16 (this project's machines: convolutions 1.8-2.1x faster than float32)."""
    if not enabled:
        return
    for name in names:
        mod = model.get_submodule(name)
        inner = mod.forward

        def forward(*a, _inner=inner, **kw):
            with torch.autocast(device_type, dtype=torch.bfloat16):
                out = _inner(*a, **kw)
            return out.float() if torch.is_tensor(out) else out

        mod.forward = forward


# -- time budget and stop flag ----------------------------------------------------------------
class Budget:
    """Wall-clock budget, SIGTERM/SIGINT stop flag and checkpoint timer."""

    def __init__(self, minutes: float, save_minutes: float = 3.0, max_steps: int = 10**9,
                 start: float | None = None):
        self.t0 = start if start is not None else time.time()
        self.end = self.t0 + minutes * 60
        self.save_every_s = save_minutes * 60
        self.last_save = time.time()
        self.max_steps = max_steps
        self.stop_requested = False
        self.step_s = 0.0  # longest step seen, so the last step still ends inside the budget
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        self.stop_requested = True

    def keep_going(self, run: Run, step: int, step_seconds: float = 0.0) -> bool:
        self.step_s = max(self.step_s * 0.9, step_seconds)
        done = self.stop_requested or step >= self.max_steps or time.time() + self.step_s >= self.end
        return not run.any(done)

    def checkpoint_due(self, run: Run, step: int = 0, every_steps: int = 0) -> bool:
        """True on every rank when a periodic checkpoint is due on any (saving is collective)."""
        due = time.time() - self.last_save >= self.save_every_s or bool(every_steps and step % every_steps == 0)
        if run.any(due):
            self.last_save = time.time()
            return True
        return False


# -- checkpoints ------------------------------------------------------------------------------
def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary name beside path, then rename: a crash never leaves a
    half-written checkpoint under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def clipped_finite(groups: list[list[torch.nn.Parameter]], max_norm: float) -> bool:
    """Clip each group's gradient norm; False when any norm is not finite, and then the
    gradients are dropped so that the optimizer step that follows changes nothing.

    Why: one step with an infinite gradient turns clip_grad_norm_'s scale into NaN and every
    weight with it; the run then trains NaN for good and its next checkpoint overwrites the last
    good one (measured: an intra run went NaN at step ~7,350 and lost 1.1 hours)."""
    finite = True
    for group in groups:
        norm = torch.nn.utils.clip_grad_norm_(group, max_norm)
        finite = finite and bool(torch.isfinite(norm))
    if not finite:
        for group in groups:
            for p in group:
                p.grad = None
    return finite


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers: what
    gets exported, while training goes on with the raw weights.

    Why: at a constant learning rate the raw weights wander around the optimum, so two
    checkpoints 8,000 steps apart differed on the dev clips by +8 %, -6 % and +5 % BD-rate
    (intra model, steps 16,872 and 24,861 at LR 1e-4), and 2,500 steps at LR 1e-5 from the
    later one gained 12-18 % on every clip: most of what separates a checkpoint from the
    optimum is that wander. The average over the last ~1/(1 - decay) steps sits nearer its
    middle without lowering the learning rate that the next session's training needs.
    The first steps use a shorter horizon, (1 + n) / (10 + n) after n updates, so a new
    average is not dominated by the weights it started from."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, state: dict | None = None):
        self.decay = decay
        live = model.state_dict()
        own = (state or {}).get("weights", {})
        if own.keys() != live.keys() or any(own[k].shape != live[k].shape for k in live):
            own = {}  # none saved, or saved for another architecture: start from the model
        self.weights = {k: t.detach().clone().to(live[k].device) for k, t in (own or live).items()}
        self.updates = state.get("updates", 0) if own else 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, live = [], []
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                averaged.append(self.weights[k])
                live.append(v)
            else:
                self.weights[k].copy_(v)
        # one fused update for all tensors: on a GPU, a loop of small ops per tensor costs
        # hundreds of kernel launches every step
        if averaged:
            torch._foreach_lerp_(averaged, live, 1 - d)

    def state_dict(self) -> dict:
        return {"weights": {k: v.detach().cpu() for k, v in self.weights.items()}, "decay": self.decay,
                "updates": self.updates}


def exported_weights(state: dict, raw: bool = False) -> tuple[dict, str]:
    """The model weights a checkpoint exports, and the manifest's word for them: its weight
    average where it has one (see WeightAverage), else (or with raw=True) the raw training
    weights of its last step."""
    avg = state.get("average")
    if raw or not avg or avg["decay"] <= 0:
        return state["model"], "raw weights of the last step"
    return avg["weights"], (f"moving average over the last ~{round(1 / (1 - avg['decay']))} steps (decay "
                            f"{avg['decay']}, {avg['updates']} updates in this average)")


def finite_weights(model: torch.nn.Module) -> bool:
    """True when every floating-point parameter and buffer is finite (checked before a save)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def load_checkpoint(path: Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a file that is not a checkpoint: say which, stop
        raise SystemExit(f"error: {path}: not a readable checkpoint ({type(e).__name__})")


def rng_state(run: Run, data_state, rate_gen: torch.Generator) -> dict:
    """This rank's random state (data sampler position, the trainer's generator, torch's
    global RNG used for the quantization noise), gathered from all ranks."""
    mine = {
        "data": data_state,
        "gen": rate_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
    }
    return {"world": run.world, "ranks": run.gather(mine)}


def restore_rng(saved: dict | None, run: Run, rate_gen: torch.Generator):
    """Restores this rank's RNG from a checkpoint; returns the data sampler state (None when
    the checkpoint has none or was written by a different number of ranks)."""
    if not saved or saved.get("world") != run.world:
        return None
    mine = saved["ranks"][run.rank]
    rate_gen.set_state(mine["gen"])
    torch.set_rng_state(mine["torch"])
    if mine.get("cuda") is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], run.device)
    return mine["data"]


# -- log line ---------------------------------------------------------------------------------
class Meter:
    """Running means between log lines: steps/s, pixel throughput, loss, bpp, PSNR."""

    def __init__(self, run: Run, every_s: float):
        self.run, self.every_s = run, every_s
        self.reset()

    def reset(self):
        self.t = time.time()
        self.steps = self.pixels = 0
        self.sums: dict[str, float] = {}

    def add(self, pixels: int, **values: float):
        self.steps += 1
        self.pixels += pixels
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def maybe_log(self, step: int, force: bool = False, extra: str = "") -> None:
        dt = time.time() - self.t
        if not self.steps or (dt < self.every_s and not force):
            return
        vals = " ".join(f"{k} {v / self.steps:.4f}" if k != "psnr" else f"psnr {v / self.steps:.2f}"
                        for k, v in self.sums.items())
        # pixels of all ranks: each rank draws the same batch size
        mpix = self.pixels * self.run.world / dt / 1e6
        self.run.log(f"step {step} {vals} | {self.steps / dt:.2f} steps/s {mpix:.3f} Mpix/s"
                     + (f" | {extra}" if extra else ""))
        self.reset()


# -- batch streams ---------------------------------------------------------------------------
class _WorkerStream(torch.utils.data.IterableDataset):
    """Runs inside a DataLoader worker: its own sampler (factory(worker_id)), yielding
    (batch, worker_id, sampler state after the batch)."""

    def __init__(self, factory, batch: int, states: list):
        self.factory, self.batch, self.states = factory, batch, states

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        sampler = self.factory(wid)
        if self.states[wid] is not None:
            sampler.state = self.states[wid]
        while True:
            b = sampler.batch(self.batch, as_uint8=True)
            yield b, wid, sampler.state


class BatchStream:
    """uint8 image batches from samplers made by factory(worker_id) (objects with
    .batch(n, as_uint8=True) and a .state property).

    workers == 0: one sampler in this process, optionally `depth` batches ahead in a thread;
    a checkpoint then resumes bit-exactly. workers > 0: that many DataLoader processes
    (forked, so they share the decoded frames), each with its own sampler, pinned output;
    a checkpoint records every worker's position, so no sample repeats or is skipped on
    resume (the interleaving of workers restarts at worker 0)."""

    def __init__(self, factory, batch: int, workers: int = 0, depth: int = 0, pin: bool = False, state=None):
        self.workers = workers
        n = max(1, workers)
        saved = state if isinstance(state, dict) and state.get("workers") == workers else None
        self.states = list(saved["states"]) if saved else [None] * n
        self.restored = saved is not None
        if workers == 0:
            sampler = factory(0)
            if self.states[0] is not None:
                sampler.state = self.states[0]
            self._it = prefetched(lambda: (sampler.batch(batch, as_uint8=True), 0, sampler.state), depth, pin)
        else:
            import multiprocessing as mp

            loader = torch.utils.data.DataLoader(
                _WorkerStream(factory, batch, self.states), batch_size=None, num_workers=workers,
                pin_memory=pin, prefetch_factor=max(2, depth), multiprocessing_context=mp.get_context("fork"))
            self._it = iter(loader)

    def __next__(self) -> torch.Tensor:
        b, wid, st = next(self._it)
        self.states[wid] = st
        return b

    @property
    def state(self) -> dict:
        return {"workers": self.workers, "states": list(self.states)}


def prefetched(make: Callable[[], tuple], depth: int, pin: bool) -> Iterator[tuple]:
    """Yields make() results, prepared `depth` ahead in a thread (numpy crops and pinning
    overlap the GPU step). make() returns (batch, ...) including the sampler's state after
    this batch, so a checkpoint records the position of the last batch consumed."""
    if depth <= 0:
        while True:
            yield make()
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        while not stop.is_set():
            try:
                batch, *rest = make()
                item = (batch.pin_memory() if pin else batch, *rest)
            except BaseException as e:  # hand the error to the training loop
                item = e
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    th = threading.Thread(target=work, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
