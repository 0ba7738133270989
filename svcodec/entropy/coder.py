"""Range coding of integer symbols with table-indexed models (constriction's FIFO range coder).

A substream is one independently decodable range-coder stream (one view's hyper-latent, or one
view's latent slice). Inside `encode_symbols`, symbols are grouped by table index and each group
is coded with one call: the decoder knows the indices (it computes them from already decoded
data), so it can regroup the same way. Escaped values (outside a table's range) are coded after
their groups with an Elias-gamma style code made of uniform models.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from ..errors import BitstreamError, ModelError
from .tables import SymbolTable

_MAX_ESCAPE_BITS = 40


@lru_cache(maxsize=None)
def _uniform(n: int):
    import constriction

    return constriction.stream.model.Categorical(np.full(n, 1.0 / n), perfect=False)


def _groups(table_ids: np.ndarray):
    """(table id, flat positions) in ascending id order; identical on both sides."""
    flat = table_ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    ids, starts = np.unique(flat[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return [(int(i), order[s:e]) for i, s, e in zip(ids, starts, bounds)]


class CodingClock:
    """Seconds spent inside the range coder, process-wide (for the encoder's time split; the
    codec reads differences, so concurrent use only blurs the figure, never the bits)."""

    seconds = 0.0


class SubstreamEncoder:
    def __init__(self):
        import constriction

        self._enc = constriction.stream.queue.RangeEncoder()

    def encode_symbols(self, values: np.ndarray, table_ids: np.ndarray, tables: tuple[SymbolTable, ...]) -> None:
        t0 = time.perf_counter()
        try:
            self._encode_symbols(values, table_ids, tables)
        finally:
            CodingClock.seconds += time.perf_counter() - t0

    def _encode_symbols(self, values, table_ids, tables) -> None:
        values = np.asarray(values, dtype=np.int64).reshape(-1)
        escapes = []
        for tid, pos in _groups(table_ids):
            t = tables[tid]
            v = values[pos]
            idx = np.clip(v - t.low + 1, 0, len(t.counts) - 1)
            self._enc.encode(idx.astype(np.int32), t.model)
            below, above = v < t.low, v > t.high
            escapes.extend((t.low - v[below] - 1).tolist())
            escapes.extend((v[above] - t.high - 1).tolist())
        for e in escapes:  # e >= 0: distance beyond the table's range
            nbits = int(e).bit_length()
            if nbits > _MAX_ESCAPE_BITS:
                raise ModelError(f"latent value {e} is beyond the codable range (broken weights?)")
            self._enc.encode(nbits, _uniform(_MAX_ESCAPE_BITS + 1))
            for shift in range(0, nbits, 8):
                width = min(8, nbits - shift)
                self._enc.encode((int(e) >> shift) & ((1 << width) - 1), _uniform(1 << width))

    def finish(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()


# Words appended to the second decoder's copy of a substream (see SubstreamDecoder).
_PROBE_PAD = np.array([0xFFFFFFFF, 0xA5A5A5A5, 0x5A5A5A5A, 0xFFFFFFFF], dtype=np.uint32)


class SubstreamDecoder:
    """Decodes one substream and detects reading past its end.

    constriction's range decoder never says it ran out of data: past the end it decodes on
    as if the substream continued with zero words. A valid substream's symbols do not depend
    on anything after its last word (the encoder's final words pin them down), so a second
    decoder, run in step on the same words followed by other padding, must decode the same
    symbols; when they differ, the symbols came from bytes the substream does not have.
    """

    def __init__(self, data: bytes):
        import constriction

        if len(data) % 4:
            raise BitstreamError("substream length is not a multiple of 4 bytes")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._dec = constriction.stream.queue.RangeDecoder(words)
        self._probe = constriction.stream.queue.RangeDecoder(np.concatenate([words, _PROBE_PAD]))
        self._empty = len(words) == 0

    def _decode(self, model, n=None):
        a = self._dec.decode(model) if n is None else self._dec.decode(model, n)
        b = self._probe.decode(model) if n is None else self._probe.decode(model, n)
        if not np.array_equal(a, b):
            raise BitstreamError("range decoder read past the end of its substream "
                                 "(truncated or corrupt stream)")
        return a

    def decode_symbols(self, table_ids: np.ndarray, tables: tuple[SymbolTable, ...]) -> np.ndarray:
        out = np.zeros(table_ids.size, dtype=np.int64)
        if self._empty and table_ids.size:  # an encoder writes at least one word per symbol group
            raise BitstreamError(f"substream is empty but {table_ids.size} symbols are coded in it "
                                 "(truncated or corrupt stream)")
        pending = []  # (flat position, sign, base) of escaped values, in encoder order
        try:
            for tid, pos in _groups(table_ids):
                t = tables[tid]
                idx = np.asarray(self._decode(t.model, len(pos)), dtype=np.int64)
                out[pos] = idx + t.low - 1
                below, above = idx == 0, idx == len(t.counts) - 1
                pending.extend((p, -1, t.low - 1) for p in pos[below])
                pending.extend((p, 1, t.high + 1) for p in pos[above])
            for p, sign, base in pending:
                nbits = int(self._decode(_uniform(_MAX_ESCAPE_BITS + 1)))
                e = 0
                for shift in range(0, nbits, 8):
                    width = min(8, nbits - shift)
                    e |= int(self._decode(_uniform(1 << width))) << shift
                out[p] = base + sign * e
        except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:  # constriction: corrupt data
            raise BitstreamError(f"range decoder failed: {exc}") from None
        return out.reshape(table_ids.shape)
