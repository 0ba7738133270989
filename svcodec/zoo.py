"""Shipped weights: loading, saving and identifying them.

A weights file is a safetensors file holding the network parameters (large weight tensors as
int8 with one float32 scale per output row, everything else float16; all computed in float32), the integer tables of the factorized hyper-latent prior
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
            meta = json.loads((f.metadata() or {})["svcodec"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        tensors = load_file(str(path))
        model = ElicIntraCodec(ElicConfig(**meta["config"]))
        lows = tensors.pop("z_table.lows").numpy()
        counts = tensors.pop("z_table.counts").numpy()
        _load_exact(model, _dequantize(tensors))
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a valid svcodec weights file ({str(exc).splitlines()[0]})") from None
    model.eval().to(device)
    return LoadedIntra(model, tables_from_counts(lows, counts), model_id_of_file(path), path.stem, path)


_Q8, _SCALE = ".q8", ".q8scale"
FORMAT = "svcodec-intra-1"


def _load_exact(model: ElicIntraCodec, state: dict[str, torch.Tensor]) -> None:
    """Every parameter must come from the file: a missing tensor would silently stay random."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("entropy_bottleneck._")]
    if missing or result.unexpected_keys:
        raise ValueError(f"missing tensors {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def _quantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Large weights -> symmetric int8 per output row (dim 0) + float32 scale; the rest float16.
    Keeps a shipped model at about a byte per parameter."""
    out = {}
    for k, v in state.items():
        v = v.float()
        if v.ndim >= 2 and v.numel() >= 1024:
            rows = v.reshape(v.shape[0], -1)
            scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            out[k + _Q8] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(v.shape).contiguous()
            out[k + _SCALE] = scale.contiguous()
        else:
            out[k] = v.to(torch.float16).contiguous()
    return out


def _dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in tensors.items():
        if k.endswith(_SCALE):
            continue
        if k.endswith(_Q8):
            name = k[: -len(_Q8)]
            scale = tensors[name + _SCALE]
            out[name] = (v.float().reshape(v.shape[0], -1) * scale[:, None]).reshape(v.shape)
        else:
            out[k] = v.float()
    return out


def save_intra(model: ElicIntraCodec, path: Path) -> bytes:
    """Store float16 parameters, then derive the z tables from the *stored* (rounded) weights so
    that what is saved is exactly what a decoder will load. Returns the model id."""
    from safetensors.torch import save_file

    state = _quantize({
        k: v.detach() for k, v in model.state_dict().items()
        if not k.startswith("entropy_bottleneck._")  # compressai's own CDF buffers: unused here
    })
    rounded = ElicIntraCodec(model.cfg)
    _load_exact(rounded, _dequantize(dict(state)))
    lows, counts = factorized_counts(rounded.entropy_bottleneck, rounded.z_medians())
    state["z_table.lows"] = torch.from_numpy(lows.astype(np.int64))
    state["z_table.counts"] = torch.from_numpy(counts.astype(np.int64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # one metadata key holding sorted JSON: safetensors stores several keys in arbitrary order,
    # which would change the file's bytes (and so the model id) from one export to the next
    meta = json.dumps({"config": model.cfg.to_dict(), "format": FORMAT}, sort_keys=True)
    save_file(state, str(tmp), metadata={"svcodec": meta})
    os.replace(tmp, path)
    return model_id_of_file(path)
