"""Turn a P-frame training checkpoint into shipped weights + manifest.

    python -m svcodec.train.export_inter runs/inter.pt weights/hdc_small_vr.safetensors [--note TEXT]
        [--i-rate-offset X]
    python -m svcodec.train.export_inter OLD.safetensors NEW.safetensors --i-rate-offset X

The I-frame rate offset is the streams' I/P pairing (I-frames at intra rate min(3, rate + X)).
By default the weights keep the one they trained with; a different one may be measured better
over whole GOPs (a better I-frame is a better reference than the one the P-frames trained on).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import torch

from ..nn.inter import InterConfig, StereoInterCodec
from ..zoo import load_inter, save_inter
from .common import exported_weights


def export(ckpt: Path, out: Path, note: str = "", i_rate_offset: float | None = None, raw: bool = False) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = InterConfig(**state["config"])
    trained_offset = cfg.i_rate_offset
    if i_rate_offset is not None:
        cfg = dataclasses.replace(cfg, i_rate_offset=i_rate_offset)
    model = StereoInterCodec(cfg)
    weights, weights_note = exported_weights(state, raw)
    model.load_state_dict(weights)
    model_id = save_inter(model, out)
    lam0 = state.get("lambda0", 256.0)
    manifest = {
        "name": out.stem,
        "kind": "inter (stereo P-frames: DCVC-TCM*-style backbone, HDC-FER, HDC-EM; variable rate)",
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "model_id": model_id.hex(),
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "storage": "int8 weights with per-row float32 scales, other tensors float16; int64 hyper-latent tables",
        "rate_points": {str(r): {"lambda": lam0 * 2 ** r, "intra_rate": model.intra_rate(r),
                                 "loss": "lambda * MSE(x in [0,1]) + bpp, summed over both views and the P-frames"}
                        for r in range(cfg.num_rates)},
        "training": {
            "stage": state.get("stage"),
            "variant": state.get("variant", "full"),
            "steps": state["step"],
            "weights": weights_note,
            "hours": round(state["seconds"] / 3600, 3),
            "batch": state.get("batch"),
            "crop": state.get("crop"),
            "p_frames_per_sample": state.get("frames"),
            "i_rate_offset": trained_offset,  # the streams' offset is config.i_rate_offset
            "cascaded_loss": state.get("cascade"),
            "intra_weights": f"{state.get('intra')} ({state.get('intra_id')})",
            "initialised_from": state.get("init"),
            "optimizer": "Adam; gradient norm clipped per part (motion, compensation, context, rest)",
            "runs": state.get("runs", []),
            "data": ("shared/data stereo_video/* (real stereo) and mono_video/* with a derived second view "
                     "(constant-disparity shift + photometric change), random crops and flips; the "
                     "evaluation clips in shared/data/stereo/ are not used"),
            "clips": state.get("clips"),
            "hardware": "CPU (2 cores)" if state.get("device", "cpu") == "cpu" else state.get("device"),
            "history": state.get("history", [])[-20:],
        },
        "exported": dt.date.today().isoformat(),
        "note": note,
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def reexport(weights: Path, out: Path, i_rate_offset: float, note: str = "") -> dict:
    """Shipped weights (no checkpoint needed) with another streams' I-frame rate offset. The
    tensors come back bit for bit (int8 rows re-quantize to themselves); the manifest beside
    ``weights`` is carried over with the new config, checksums and a note."""
    model = load_inter(str(weights)).model
    model.cfg = dataclasses.replace(model.cfg, i_rate_offset=i_rate_offset)
    manifest = json.loads(weights.with_suffix(".json").read_text())
    manifest["training"].setdefault("i_rate_offset", manifest["config"]["i_rate_offset"])  # what it trained with
    model_id = save_inter(model, out)
    manifest.update({
        "name": out.stem, "file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "model_id": model_id.hex(), "config": model.cfg.to_dict(),
        "rate_points": {r: {**p, "intra_rate": model.intra_rate(int(r))}
                        for r, p in manifest["rate_points"].items()},
        "exported": dt.date.today().isoformat(),
        "note": " ".join(filter(None, [manifest.get("note", ""), note])),
    })
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--note", default="")
    ap.add_argument("--i-rate-offset", type=float, default=None,
                    help="I-frame rate offset for streams (default: the one the checkpoint trained with)")
    ap.add_argument("--raw", action="store_true", help="export the raw weights of the last step, not their average")
    args = ap.parse_args(argv)
    if args.ckpt.suffix == ".safetensors":  # shipped weights: only the offset (and note) change
        if args.i_rate_offset is None:
            ap.error("re-exporting weights needs --i-rate-offset")
        m = reexport(args.ckpt, args.out, args.i_rate_offset, args.note)
    else:
        m = export(args.ckpt, args.out, args.note, args.i_rate_offset, args.raw)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, model id {m['model_id']}, "
          f"{m['training']['steps']} steps)")


if __name__ == "__main__":
    main()
