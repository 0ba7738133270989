"""Fixed probability tables for the range coder.

Float parameters never reach the coder. A latent symbol is `round(y - mu)` (an integer), and
the Gaussian scale enters only as an index into a fixed, log-spaced scale table whose
probability tables are built once from constants. Encoder and decoder therefore use identical
tables even if their floats differ in the last bits; the only float-sensitive step left is the
choice of the scale index, and a mismatch there is caught by the access unit's reconstruction
checksum (see docs/FORMAT.md).

Every table has two escape bins (below / above its value range) so any integer is codable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..nn.elic import SCALE_MAX, SCALE_MIN

SCALE_LEVELS = 64
# Probabilities are rounded to this many bits before they reach constriction, so the float64
# values it sees are exactly representable fractions, the same on every machine.
TABLE_PRECISION = 16


@dataclass(frozen=True)
class SymbolTable:
    """A discrete distribution over integers `low .. low + len(counts) - 3`, plus an escape bin
    for values below (index 0) and above (last index). `counts` are positive integers."""

    low: int
    counts: np.ndarray  # int64, length = value range + 2 escape bins

    @property
    def high(self) -> int:
        return self.low + len(self.counts) - 3

    @property
    def model(self):
        return _categorical(self.counts.tobytes(), len(self.counts))

    def bits(self, values: np.ndarray) -> float:
        """Ideal code length of `values` under this table (for rate reporting/tests)."""
        p = self.counts / self.counts.sum()
        idx = np.clip(values - self.low + 1, 0, len(self.counts) - 1)
        return float(-np.log2(p[idx]).sum())


@lru_cache(maxsize=None)
def _categorical(counts_bytes: bytes, n: int):
    import constriction

    counts = np.frombuffer(counts_bytes, dtype=np.int64).astype(np.float64)
    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def quantize_pmf(pmf: np.ndarray, precision: int = TABLE_PRECISION) -> np.ndarray:
    """Float pmf -> positive integer counts summing to 2**precision (largest bin absorbs the
    rounding error). Deterministic given the same float64 input."""
    total = 1 << precision
    counts = np.maximum(np.floor(pmf / pmf.sum() * total).astype(np.int64), 1)
    counts[np.argmax(counts)] += total - counts.sum()
    if counts.min() < 1:
        raise ValueError("pmf too peaked for the table precision")
    return counts


def scale_levels() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


@lru_cache(maxsize=1)
def gaussian_tables() -> tuple[SymbolTable, ...]:
    """One zero-mean unit-bin Gaussian table per scale level, range +-ceil(8 sigma) (at least 4)."""
    tables = []
    for s in scale_levels():
        half = max(4, math.ceil(8 * s))
        edges = [(v + 0.5) / s for v in range(-half - 1, half + 1)]
        cdf = np.array([0.5 * math.erfc(-e / math.sqrt(2)) for e in edges])
        inner = np.diff(cdf)  # P(v) for v in [-half, half]
        tail = cdf[0]  # P(v < -half) == P(v > half) by symmetry
        pmf = np.concatenate([[tail], inner, [tail]])
        tables.append(SymbolTable(low=-half, counts=quantize_pmf(pmf)))
    return tuple(tables)


def scale_to_index(scale: torch.Tensor) -> np.ndarray:
    """Nearest scale level in the log domain, as uint8. Shared by encoder and decoder."""
    lo, hi = math.log(SCALE_MIN), math.log(SCALE_MAX)
    pos = (torch.log(scale.float()) - lo) * ((SCALE_LEVELS - 1) / (hi - lo))
    idx = torch.round(pos).clamp(0, SCALE_LEVELS - 1).to(torch.uint8)
    return idx.cpu().numpy()
