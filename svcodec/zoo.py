"""Shipped weights: loading, saving and identifying them.

A weights file is a safetensors file holding the network parameters (large weight tensors as
int8 with one float32 scale per output row, everything else float16; all computed in float32), the integer tables of the factorized hyper-latent prior
(`z_table.lows`, `z_table.counts`) and, in its metadata, the network config. Its identity in
a bitstream is the first 16 bytes of the file's sha256, so a stream can only be decoded with
the very weights that produced it. A JSON manifest sits beside each file (training record).

A stream with P-frames needs two files, the intra (I-frame) and the inter (P-frame) weights: it
names them as one *model set*, `INTRA+INTER`, whose id is the first 16 bytes of
sha256(intra id + inter id). A stream may only name shipped weights (plain names looked up in
`weights/`); weights anywhere else are used only when the user passes them explicitly.
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
import hashlib

from .nn.elic import ElicConfig, ElicIntraCodec
from .nn.inter import InterConfig, StereoInterCodec

WEIGHTS_DIR = Path(os.environ.get("SVC_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))
DEFAULT_INTRA = "elic_small_vr"
DEFAULT_INTER = "hdc_small_vr"


@dataclass
class LoadedIntra:
    model: ElicIntraCodec
    z_tables: tuple[SymbolTable, ...]
    model_id: bytes  # 16 bytes
    name: str
    path: Path | None


@dataclass
class LoadedInter:
    model: StereoInterCodec
    z_tables: dict[str, tuple[SymbolTable, ...]]  # "motion" / "context" hyper-latent tables
    model_id: bytes
    name: str
    path: Path | None


@dataclass
class ModelSet:
    """The weights a stream is coded with: intra alone (all-intra streams) or intra + inter."""

    intra: LoadedIntra
    inter: LoadedInter | None

    @property
    def name(self) -> str:
        return self.intra.name if self.inter is None else f"{self.intra.name}+{self.inter.name}"

    @property
    def model_id(self) -> bytes:
        if self.inter is None:
            return self.intra.model_id
        return hashlib.sha256(self.intra.model_id + self.inter.model_id).digest()[:16]


def resolve(name_or_path: str | None, default: str = DEFAULT_INTRA) -> Path:
    """A name or path the *user* gave (command line, API)."""
    if not name_or_path:
        name_or_path = default
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists():
        return p
    return WEIGHTS_DIR / f"{name_or_path}.safetensors"


def resolve_shipped(name: str) -> Path:
    """A name read from a *stream*: only shipped weights, never a path (a crafted stream must
    not make the decoder open an arbitrary file)."""
    if not name or any(c in name for c in "/\\:") or name.startswith(".") or len(name) > 100:
        raise ModelError(f"the stream names weights {name!r}, which are not shipped weights; "
                         "pass the weights explicitly with --weights / --inter-weights")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise ModelError(f"the stream needs weights {name!r}, which this svcodec does not ship; "
                         "pass them explicitly with --weights / --inter-weights")
    return path


_FORMATS = {
    # format -> (config class, network class, {table name: entropy bottleneck attribute path})
    "svcodec-intra-1": (ElicConfig, ElicIntraCodec, {"": "entropy_bottleneck"}),
    "svcodec-inter-1": (InterConfig, StereoInterCodec,
                        {"motion": "motion.entropy_bottleneck", "context": "context.entropy_bottleneck"}),
}
FORMAT = "svcodec-intra-1"
INTER_FORMAT = "svcodec-inter-1"


def _table_key(name: str, part: str) -> str:
    return f"z_table.{name}.{part}" if name else f"z_table.{part}"


def _eb(model, attr: str):
    for part in attr.split("."):
        model = getattr(model, part)
    return model


def _read(path: Path, fmt: str, device: str):
    """(model, {table name: tables}) from a weights file of format `fmt`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"weights not found: {path} (see weights/README.md)")
    cfg_cls, net_cls, ebs = _FORMATS[fmt]
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["svcodec"])
        if meta.get("format") != fmt:
            raise ValueError(f"format {meta.get('format')!r}, expected {fmt!r}")
        tensors = load_file(str(path))
        model = net_cls(cfg_cls(**meta["config"]))
        tables = {}
        for name in ebs:
            lows = tensors.pop(_table_key(name, "lows")).numpy()
            counts = tensors.pop(_table_key(name, "counts")).numpy()
            tables[name] = tables_from_counts(lows, counts)
        _load_exact(model, _dequantize(tensors))
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a valid svcodec weights file ({str(exc).splitlines()[0]})") from None
    return model.eval().to(device), tables


def load_intra(name_or_path: str | None = None, device: str = "cpu", path: Path | None = None) -> LoadedIntra:
    path = path or resolve(name_or_path)
    model, tables = _read(path, FORMAT, device)
    return LoadedIntra(model, tables[""], model_id_of_file(path), path.stem, path)


def load_inter(name_or_path: str | None = None, device: str = "cpu", path: Path | None = None) -> LoadedInter:
    path = path or resolve(name_or_path, DEFAULT_INTER)
    model, tables = _read(path, INTER_FORMAT, device)
    return LoadedInter(model, tables, model_id_of_file(path), path.stem, path)


def load_set(weights: str | None = None, inter_weights: str | None = None, *, need_inter: bool,
             device: str = "cpu") -> ModelSet:
    """Weights for encoding (or decoding with explicit weights): the defaults are shipped."""
    intra = load_intra(weights, device)
    return ModelSet(intra, load_inter(inter_weights, device) if need_inter else None)


def _stream_names(model_name: str) -> list[str]:
    names = model_name.split("+")
    if len(names) > 2:
        raise ModelError(f"the stream names weights {model_name!r}: at most intra+inter")
    return names


def load_inter_of_stream(model_name: str, inter_weights: str | None = None,
                         device: str = "cpu") -> LoadedInter | None:
    """The P-frame weights a stream needs (None for an all-intra stream)."""
    names = _stream_names(model_name)
    if len(names) < 2:
        return None
    if inter_weights:
        return load_inter(inter_weights, device)
    return load_inter(device=device, path=resolve_shipped(names[1]))


def load_set_of_stream(model_name: str, weights: str | None = None, inter_weights: str | None = None,
                       device: str = "cpu") -> ModelSet:
    """The weights a stream names (shipped only), unless the user passes them explicitly."""
    names = _stream_names(model_name)
    intra = load_intra(weights, device) if weights else load_intra(device=device, path=resolve_shipped(names[0]))
    return ModelSet(intra, load_inter_of_stream(model_name, inter_weights, device))


_Q8, _SCALE = ".q8", ".q8scale"


def _load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every parameter must come from the file: a missing tensor would silently stay random."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if "entropy_bottleneck._" not in k]
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


def _save(model, path: Path, fmt: str) -> bytes:
    """Store int8/float16 parameters, then derive the hyper-latent tables from the *stored*
    (rounded) weights so that what is saved is exactly what a decoder will load. Returns the
    model id."""
    from safetensors.torch import save_file

    cfg_cls, net_cls, ebs = _FORMATS[fmt]
    state = _quantize({
        k: v.detach() for k, v in model.state_dict().items()
        if "entropy_bottleneck._" not in k  # compressai's own CDF buffers: unused here
    })
    rounded = net_cls(model.cfg)
    _load_exact(rounded, _dequantize(dict(state)))
    for name, attr in ebs.items():
        eb = _eb(rounded, attr)
        lows, counts = factorized_counts(eb, eb.medians())
        state[_table_key(name, "lows")] = torch.from_numpy(lows.astype(np.int64))
        state[_table_key(name, "counts")] = torch.from_numpy(counts.astype(np.int64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # one metadata key holding sorted JSON: safetensors stores several keys in arbitrary order,
    # which would change the file's bytes (and so the model id) from one export to the next
    meta = json.dumps({"config": model.cfg.to_dict(), "format": fmt}, sort_keys=True)
    save_file(state, str(tmp), metadata={"svcodec": meta})
    os.replace(tmp, path)
    return model_id_of_file(path)


def save_intra(model: ElicIntraCodec, path: Path) -> bytes:
    return _save(model, path, FORMAT)


def save_inter(model: StereoInterCodec, path: Path) -> bytes:
    return _save(model, path, INTER_FORMAT)
