"""Shipped weights: loading, saving and identifying them.

A weights file is a safetensors file holding the network parameters (stored as float16 to keep
files small, computed in float32), the integer tables of the factorized hyper-latent prior
(`z_table.lows`, `z_table.counts`) and, in its metadata, the network config. Its identity in
a bitstream is the first 16 bytes of the file's sha256, so a stream can only be decoded with
the very weights that produced it. A JSON manifest sits beside each file (training record).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .container import model_id_of_file
from .entropy import SymbolTable, factorized_counts, tables_from_counts
from .errors import ModelError
from .nn.elic import ElicConfig, ElicIntraCodec

WEIGHTS_DIR = Path(os.environ.get("SVC_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))
DEFAULT_INTRA = "elic_small_vr"


@dataclass
class LoadedIntra:
    model: ElicIntraCodec
    z_tables: tuple[SymbolTable, ...]
    model_id: bytes  # 16 bytes
    name: str
    path: Path | None


def resolve(name_or_path: str | None) -> Path:
    if not name_or_path:
        name_or_path = DEFAULT_INTRA
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists():
        return p
    return WEIGHTS_DIR / f"{name_or_path}.safetensors"


def load_intra(name_or_path: str | None = None, device: str = "cpu") -> LoadedIntra:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = resolve(name_or_path)
    if not path.is_file():
        raise ModelError(f"weights not found: {path} (see weights/README.md)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        cfg = ElicConfig(**json.loads(meta["config"]))
        model = ElicIntraCodec(cfg)
        lows = tensors.pop("z_table.lows").numpy()
        counts = tensors.pop("z_table.counts").numpy()
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a valid svcodec weights file ({str(exc).splitlines()[0]})") from None
    model.eval().to(device)
    return LoadedIntra(model, tables_from_counts(lows, counts), model_id_of_file(path), path.stem, path)


def tables_for(model: ElicIntraCodec) -> tuple[SymbolTable, ...]:
    """Tables computed from a model in memory (tests and freshly trained models)."""
    return tables_from_counts(*factorized_counts(model.entropy_bottleneck, model.z_medians()))


def save_intra(model: ElicIntraCodec, path: Path) -> bytes:
    """Store float16 parameters, then derive the z tables from the *stored* (rounded) weights so
    that what is saved is exactly what a decoder will load. Returns the model id."""
    from safetensors.torch import save_file

    state = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("entropy_bottleneck._")  # compressai's own CDF buffers: unused here
    }
    rounded = ElicIntraCodec(model.cfg)
    rounded.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    lows, counts = factorized_counts(rounded.entropy_bottleneck, rounded.z_medians())
    state["z_table.lows"] = torch.from_numpy(lows.astype(np.int64))
    state["z_table.counts"] = torch.from_numpy(counts.astype(np.int64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(model.cfg.to_dict()), "format": "svcodec-intra-1"})
    os.replace(tmp, path)
    return model_id_of_file(path)
