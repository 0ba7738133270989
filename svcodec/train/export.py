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
from ..zoo import save_intra


def export(ckpt: Path, out: Path, note: str = "") -> dict:
    state = torch.load(ckpt, map_location="cpu")
    cfg = ElicConfig(**state["config"])
    model = ElicIntraCodec(cfg)
    model.load_state_dict(state["model"])
    model_id = save_intra(model, out)
    manifest = {
        "name": out.stem,
        "kind": "intra (ELIC, variable rate)",
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "model_id": model_id.hex(),
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "storage": "float16 parameters, int64 hyper-latent tables",
        "rate_points": {str(i): {"lambda": lam, "loss": "lambda * MSE(x in [0,1]) + bpp"}
                        for i, lam in enumerate(state["lambdas"])},
        "training": {
            "steps": state["step"],
            "hours": round(state["seconds"] / 3600, 3),
            "batch": state["batch"],
            "crop": state["crop"],
            "optimizer": "Adam, lr 1e-4, grad-norm clip 1.0",
            "data": "shared/data: stereo_video/*, mono_video/*, stereo_pairs/* (random crops, flips, 2x downscale); "
                    "the evaluation clips in shared/data/stereo/ are not used",
            "hardware": "2-core CPU",
        },
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
    args = ap.parse_args(argv)
    m = export(args.ckpt, args.out, args.note)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), steps {m['training']['steps']}, id {m['model_id']}")


if __name__ == "__main__":
    main()
