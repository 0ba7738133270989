"""Integer tables for the factorized hyper-latent prior (svcodec.nn.factorized_prior).

The learned cumulative is evaluated once, when weights are exported, and stored as integer
counts beside the weights, so the coder never depends on float evaluation at decode time.
"""

from __future__ import annotations

import numpy as np
import torch

from .tables import SymbolTable, quantize_pmf


@torch.no_grad()
def factorized_counts(eb, medians: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the lowest coded value (relative to the median) and integer counts over
    [low, low + L) plus the two escape bins. Returns (lows (C,), counts (C, L + 2))."""
    q = eb.quantiles.detach()[:, 0, :]
    lows = torch.floor(q[:, 0] - medians).long()
    highs = torch.ceil(q[:, 2] - medians).long()
    length = int((highs - lows).max().item()) + 1
    ks = lows[:, None] + torch.arange(length)[None, :]
    z = ks.float() + medians[:, None]
    edges = torch.cat([z - 0.5, z[:, -1:] + 0.5], dim=1).unsqueeze(1)  # (C, 1, L + 1)
    logits = eb._logits_cumulative(edges, stop_gradient=True).squeeze(1).double()
    cdf = torch.sigmoid(logits)
    inner = (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0)
    pmf = torch.cat([cdf[:, :1], inner, 1 - cdf[:, -1:]], dim=1).clamp_min(0).numpy()
    counts = np.stack([quantize_pmf(p) for p in pmf])
    return lows.numpy().astype(np.int64), counts


def tables_from_counts(lows: np.ndarray, counts: np.ndarray) -> tuple[SymbolTable, ...]:
    return tuple(SymbolTable(low=int(lo), counts=np.asarray(c, dtype=np.int64)) for lo, c in zip(lows, counts))
