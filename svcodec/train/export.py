"""Turn a training checkpoint into shipped weights + manifest.

    python -m svcodec.train.export runs/intra.pt weights/elic_small_vr.safetensors
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from pathlib import Path

import torch

from ..nn.elic import ElicConfig, ElicIntraCodec
from ..zoo import load_intra, save_intra
from .common import exported_weights
from .data import DEFAULT_DATA, CropSampler, training_groups


@torch.no_grad()
def storage_check(trained: ElicIntraCodec, shipped: ElicIntraCodec, data: str) -> dict:
    """PSNR / estimated bpp of the trained (float32) and the stored (int8/float16) model on
    the same fixed crops, per rate point: what weight storage costs."""
    x = CropSampler(training_groups(data), 256, seed=12345).batch(8)
    result = {}
    for r in range(trained.cfg.num_rates):
        row = {}
        for name, m in (("trained", trained), ("shipped", shipped)):
            torch.manual_seed(0)  # same noise for the rate terms
            out = m.eval()(x, torch.full((x.shape[0],), float(r)))
            mse = ((out["x_hat"].clamp(0, 1) - x) ** 2).mean()
            row[name] = {"psnr": round(float(-10 * torch.log10(mse)), 3),
                         "bpp": round(float((out["y_bits"] + out["z_bits"]).sum() / (x.numel() / 3)), 4)}
        result[str(r)] = row
    return result


def _data_note(data: str | None) -> str:
    pack = bool(data) and (Path(data) / "manifest.json").exists()
    where = f"training pack {Path(data).name} (crops/downscales of shared/data, see its manifest.json)" if pack \
        else "shared/data"
    return (f"{where}: stereo_video/*, mono_video/*, stereo_pairs/* (random crops, flips, 2x downscale; "
            "some mono crops replaced by derived second views in checkpoints of format 2); "
            "the evaluation clips in shared/data/stereo/ are not used")


def _hardware(device: str | None) -> str:
    # checkpoints older than format 2 record no device: they all came from the 2-core CPU
    if not device or device == "cpu":
        return "CPU (2 cores)" if not device else "CPU"
    return device


def export(ckpt: Path, out: Path, note: str = "", data: str = DEFAULT_DATA, raw: bool = False) -> dict:
    state = torch.load(ckpt, map_location="cpu")
    cfg = ElicConfig(**state["config"])
    model = ElicIntraCodec(cfg)
    weights, weights_note = exported_weights(state, raw)
    model.load_state_dict(weights)
    model_id = save_intra(model, out)
    manifest = {
        "name": out.stem,
        "kind": "intra (ELIC, variable rate)",
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "model_id": model_id.hex(),
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "storage": "int8 weights with per-row float32 scales, other tensors float16; int64 hyper-latent tables",
        "rate_points": {str(i): {"lambda": lam, "loss": "lambda * MSE(x in [0,1]) + bpp"}
                        for i, lam in enumerate(state["lambdas"])},
        "training": {
            "steps": state["step"],
            "initialised_from": state.get("init"),  # steps then count from those weights
            "hours": round(state["seconds"] / 3600, 3),
            "batch": state["batch"],
            "crop": state["crop"],
            "optimizer": "Adam, grad-norm clip 1.0 (learning-rate schedule: see note)",
            "weights": weights_note,
            "data": _data_note(state.get("data")),
            "hardware": _hardware(state.get("device")),
        },
        "storage_check (8 fixed 256x256 training crops)": storage_check(model, load_intra(out).model, data),
        "exported": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "note": note,
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--note", default="")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--raw", action="store_true", help="export the raw weights of the last step, not their average")
    args = ap.parse_args(argv)
    m = export(args.ckpt, args.out, args.note, args.data, args.raw)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), steps {m['training']['steps']}, id {m['model_id']}")


if __name__ == "__main__":
    main()
