"""Range coding with fixed integer tables (svcodec.entropy): exact round trips, escapes, the
tables themselves, rate accounting and behaviour on corrupt substreams."""

import math

import numpy as np
import pytest
import torch

from svcodec.entropy import (SubstreamDecoder, SubstreamEncoder, SymbolTable, factorized_counts,
                             gaussian_tables, scale_to_index, tables_from_counts)
from svcodec.entropy.coder import _MAX_ESCAPE_BITS
from svcodec.entropy.tables import SCALE_LEVELS, TABLE_PRECISION, quantize_pmf, scale_levels
from svcodec.errors import BitstreamError
from svcodec.nn.elic import SCALE_MAX, SCALE_MIN

pytestmark = pytest.mark.usefixtures("one_thread")

TABLES = gaussian_tables()


def encode(values, ids, tables=TABLES) -> bytes:
    e = SubstreamEncoder()
    e.encode_symbols(values, ids, tables)
    return e.finish()


def decode(data, ids, tables=TABLES):
    return SubstreamDecoder(data).decode_symbols(ids, tables)


def mixed_symbols(n, seed=0, escapes=True):
    """Random table ids, values spread like each table's scale, plus values exactly at and
    just beyond the table edges and huge escapes."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, SCALE_LEVELS, n)
    sig = scale_levels()[ids]
    vals = np.round(rng.normal(0, 1, n) * sig * rng.choice([0.5, 1, 3], n)).astype(np.int64)
    if escapes:
        lows = np.array([t.low for t in TABLES])[ids]
        highs = np.array([t.high for t in TABLES])[ids]
        k = rng.permutation(n)
        edge = {0: lows, 1: highs, 2: lows - 1, 3: highs + 1, 4: lows - 2, 5: highs + 2}
        for j, arr in edge.items():
            sel = k[j::40]
            vals[sel] = arr[sel]
        vals[k[6::97]] = 2**30
        vals[k[7::97]] = -(2**30)
        vals[k[8::301]] = rng.integers(-(2**35), 2**35, len(k[8::301]))
    return vals, ids


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_random_symbols_with_escapes(seed):
    vals, ids = mixed_symbols(5000, seed)
    assert (vals == 2**30).any() and (vals == -(2**30)).any()
    data = encode(vals, ids)
    assert len(data) % 4 == 0 and len(data) > 0
    out = decode(data, ids)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, vals)


def test_round_trip_every_table_edge_value():
    # For every table: low-1 .. low+1 and high-1 .. high+1 (escape bins and their neighbours).
    vals, ids = [], []
    for i, t in enumerate(TABLES):
        for v in (t.low - 1, t.low, t.low + 1, 0, t.high - 1, t.high, t.high + 1):
            vals.append(v)
            ids.append(i)
    vals, ids = np.array(vals, dtype=np.int64), np.array(ids)
    np.testing.assert_array_equal(decode(encode(vals, ids), ids), vals)


def test_largest_escape_round_trips():
    # An escape codes the distance beyond the table edge in at most _MAX_ESCAPE_BITS bits.
    t = TABLES[0]
    limit = (1 << _MAX_ESCAPE_BITS) - 1
    vals = np.array([t.high + 1 + limit, t.low - 1 - limit, t.high + 1, t.low - 1, 0], dtype=np.int64)
    ids = np.zeros(len(vals), dtype=np.int64)
    np.testing.assert_array_equal(decode(encode(vals, ids), ids), vals)


def test_multidimensional_ids_and_several_calls_per_substream():
    # The slice coder writes two passes (anchors, non-anchors) into one substream, with
    # 3-D id arrays; the decoder reads them back with the same calls in the same order.
    rng = np.random.default_rng(5)
    ids1 = rng.integers(0, SCALE_LEVELS, (4, 6, 5))
    ids2 = rng.integers(20, 40, (3, 7))
    v1 = rng.integers(-30, 30, ids1.shape)
    v2 = rng.integers(-30, 30, ids2.shape)
    v1[0, 0, 0], v2[1, 1] = 2**30, -(2**30)
    e = SubstreamEncoder()
    e.encode_symbols(v1, ids1, TABLES)
    e.encode_symbols(v2, ids2, TABLES)
    d = SubstreamDecoder(e.finish())
    o1 = d.decode_symbols(ids1, TABLES)
    o2 = d.decode_symbols(ids2, TABLES)
    assert o1.shape == ids1.shape and o2.shape == ids2.shape
    np.testing.assert_array_equal(o1, v1)
    np.testing.assert_array_equal(o2, v2)


def test_custom_tables_like_the_hyperprior():
    # Factorized-prior tables: any low, any length, one table per channel.
    rng = np.random.default_rng(3)
    tables = []
    for c in range(5):
        n = 3 + 4 * c
        pmf = rng.random(n + 2) + 0.01
        tables.append(SymbolTable(low=int(rng.integers(-20, 5)), counts=quantize_pmf(pmf)))
    tables = tuple(tables)
    ids = np.broadcast_to(np.arange(5)[:, None, None], (5, 3, 4))
    vals = rng.integers(-25, 25, ids.shape)
    vals[4, 2, 3] = 2**30
    np.testing.assert_array_equal(decode(encode(vals, ids, tables), ids, tables), vals)


def test_empty_input():
    empty = np.zeros(0, dtype=np.int64)
    data = encode(empty, empty)
    assert len(data) % 4 == 0 and len(data) <= 8
    out = decode(data, empty)
    assert out.shape == (0,)
    # A substream with nothing written still decodes an empty request.
    assert decode(SubstreamEncoder().finish(), np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)


def test_encoding_is_deterministic():
    vals, ids = mixed_symbols(3000, 7)
    assert encode(vals, ids) == encode(vals.copy(), ids.copy())


# ------------------------------------------------------------------- rate


def test_ideal_bits_match_real_bytes_on_100k_symbols():
    """Symbols drawn from their own tables: the coded size is within 1% of SymbolTable.bits."""
    rng = np.random.default_rng(11)
    n = 100_000
    ids = rng.integers(8, SCALE_LEVELS, n)  # skip the near-deterministic tables (~0 bits each)
    vals = np.empty(n, dtype=np.int64)
    ideal = 0.0
    for tid in np.unique(ids):
        t = TABLES[tid]
        pos = np.flatnonzero(ids == tid)
        idx = rng.choice(len(t.counts), size=len(pos), p=t.counts / t.counts.sum())
        v = idx + t.low - 1  # index 0 / last: one past the edges (escape bins, distance 0)
        vals[pos] = v
        ideal += t.bits(v)
    data = encode(vals, ids)
    real = 8 * len(data)
    assert ideal > 2.0 * n  # a real amount of information, not a degenerate test
    assert abs(real - ideal) / ideal < 0.01, (real, ideal)
    np.testing.assert_array_equal(decode(data, ids), vals)


def test_bits_of_known_table():
    t = SymbolTable(low=-1, counts=np.array([1, 2, 4, 8, 1], dtype=np.int64))  # total 16
    assert t.high == 1
    assert t.bits(np.array([-1])) == pytest.approx(3.0)  # 2/16
    assert t.bits(np.array([1])) == pytest.approx(1.0)  # 8/16
    assert t.bits(np.array([-5, 7])) == pytest.approx(8.0)  # escape bins: 1/16 each
    assert t.bits(np.array([0, 0, 1])) == pytest.approx(2 + 2 + 1)


# ------------------------------------------------------------------- tables


def test_gaussian_tables_are_valid():
    assert len(TABLES) == SCALE_LEVELS
    for t in TABLES:
        assert t.counts.dtype == np.int64
        assert int(t.counts.sum()) == 1 << TABLE_PRECISION
        assert int(t.counts.min()) >= 1
        assert t.low <= -4 and t.high == -t.low  # zero-mean, symmetric range, at least +-4
    # wider scales get wider ranges (+-ceil(8 sigma))
    halves = [t.high for t in TABLES]
    assert halves == sorted(halves)
    assert halves[-1] == math.ceil(8 * SCALE_MAX)


def test_gaussian_tables_model_their_scale():
    """Each table is the unit-bin Gaussian of its scale level: cross-entropy against the
    exact discretized Gaussian exceeds its entropy by < 0.02 bit/symbol."""
    for s, t in zip(scale_levels(), TABLES):
        v = np.arange(t.low, t.high + 1)
        cdf = np.array([0.5 * math.erfc(-x / (s * math.sqrt(2))) for x in np.r_[v - 0.5, v[-1] + 0.5]])
        p = np.diff(cdf)
        q = t.counts[1:-1] / t.counts.sum()
        nz = p > 0
        kl = float((p[nz] * np.log2(p[nz] / q[nz])).sum())
        assert kl < 0.02, (s, kl)
        assert abs(float((q * v).sum())) < 0.05  # mean ~0


def test_gaussian_tables_are_cached_and_deterministic():
    assert gaussian_tables() is TABLES
    gaussian_tables.cache_clear()
    try:
        again = gaussian_tables()
        for a, b in zip(TABLES, again):
            assert a.low == b.low
            np.testing.assert_array_equal(a.counts, b.counts)
    finally:
        gaussian_tables.cache_clear()


def test_quantize_pmf_sums_and_positive():
    rng = np.random.default_rng(0)
    for n in (3, 10, 500):
        pmf = rng.random(n) ** 8  # very uneven: tiny bins must still get count 1
        c = quantize_pmf(pmf)
        assert c.sum() == 1 << TABLE_PRECISION and c.min() >= 1


def test_scale_to_index_monotonic_and_in_range():
    s = torch.logspace(-4, 4, 5001)  # far below SCALE_MIN to far above SCALE_MAX
    idx = scale_to_index(s)
    assert idx.dtype == np.uint8 and idx.shape == (5001,)
    assert idx.min() == 0 and idx.max() == SCALE_LEVELS - 1
    assert np.all(np.diff(idx.astype(int)) >= 0)
    assert set(np.unique(idx)) == set(range(SCALE_LEVELS))  # every level is reachable
    # the levels map to themselves, the ends to the first and last table
    levels = torch.tensor(scale_levels(), dtype=torch.float32)
    np.testing.assert_array_equal(scale_to_index(levels), np.arange(SCALE_LEVELS))
    ends = scale_to_index(torch.tensor([SCALE_MIN, SCALE_MAX, 1e-9, 1e9]))
    np.testing.assert_array_equal(ends, [0, SCALE_LEVELS - 1, 0, SCALE_LEVELS - 1])
    # nearest level in the log domain: just below a midpoint rounds down, just above up
    lv = scale_levels()
    mid = math.sqrt(lv[10] * lv[11])
    assert scale_to_index(torch.tensor([mid * 0.999, mid * 1.001])).tolist() == [10, 11]
    # shape is kept (the coder indexes it with masks)
    assert scale_to_index(torch.full((2, 3, 4, 5), 1.0)).shape == (2, 3, 4, 5)


# ------------------------------------------------------------------- corrupt data


def test_bad_substream_length_is_bitstream_error():
    with pytest.raises(BitstreamError):
        SubstreamDecoder(b"\x00\x01\x02")


def test_corrupt_substream_never_crashes_with_another_exception():
    """Every single-bit flip: BitstreamError or a wrong decode, never another exception type.
    Flips before the last word must change the result (the last word may be padding)."""
    vals, ids = mixed_symbols(250, 21)
    data = encode(vals, ids)
    nbits = 8 * len(data)
    assert nbits > 1000
    raised = changed = 0
    for k in range(nbits):
        b = bytearray(data)
        b[k // 8] ^= 1 << (k % 8)
        try:
            out = decode(bytes(b), ids)
        except BitstreamError:
            raised += 1
            continue
        if np.array_equal(out, vals):
            assert k >= nbits - 64, f"flipping bit {k} of {nbits} went unnoticed"
        else:
            changed += 1
    assert raised + changed >= nbits - 64
    assert raised > 0  # constriction does detect some corruption: it must come out as BitstreamError


@pytest.mark.parametrize("seed", [4, 5])
def test_truncated_substream_is_detected_at_every_cut(seed):
    """constriction decodes on from an exhausted buffer; SubstreamDecoder must notice that the
    symbols came from words the substream does not have, whatever the cut."""
    vals, ids = mixed_symbols(800, seed)
    data = encode(vals, ids)
    past_end = 0
    for n in range(0, len(data), 4):
        with pytest.raises(BitstreamError) as exc:
            decode(data[:n], ids)
        past_end += "past the end" in str(exc.value)
    assert past_end > len(data) // 8  # most cuts are caught by the new check, not by luck
    np.testing.assert_array_equal(decode(data, ids), vals)


def test_reading_past_the_end_is_detected_in_later_calls():
    """Several decode_symbols calls on one substream (as the codec does per slice): a substream
    that holds only the first call's symbols fails in the second."""
    vals, ids = mixed_symbols(300, 7)
    first = encode(vals, ids)
    dec = SubstreamDecoder(first)
    np.testing.assert_array_equal(dec.decode_symbols(ids, TABLES), vals)
    with pytest.raises(BitstreamError, match="past the end"):
        dec.decode_symbols(ids, TABLES)


def test_garbage_substreams_only_raise_bitstream_error():
    rng = np.random.default_rng(9)
    ids = rng.integers(0, SCALE_LEVELS, 300)
    for _ in range(200):
        data = rng.integers(0, 256, 4 * int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        try:
            out = decode(data, ids)
        except BitstreamError:
            continue
        assert out.shape == ids.shape and out.dtype == np.int64


# ------------------------------------------------------------------- factorized prior


def test_factorized_counts_on_tiny_model(tiny_codec):
    model = tiny_codec.model
    eb = model.entropy_bottleneck
    med = eb.medians()
    nz = model.cfg.Nz
    lows, counts = factorized_counts(eb, med)
    assert lows.shape == (nz,) and lows.dtype == np.int64
    assert counts.ndim == 2 and counts.shape[0] == nz and counts.shape[1] >= 3
    assert (counts >= 1).all()
    assert (counts.sum(axis=1) == 1 << TABLE_PRECISION).all()
    # The tables carry the bottleneck's own likelihoods of z = median + k.
    L = counts.shape[1] - 2
    k = torch.from_numpy(lows)[:, None] + torch.arange(L)[None, :]
    z = (k.float() + med[:, None]).unsqueeze(0).unsqueeze(2)  # (1, C, 1, L)
    with torch.no_grad():
        _, lik = eb(z, training=False)
    lik = lik[0, :, 0, :].double().numpy()
    p = counts[:, 1:-1] / float(1 << TABLE_PRECISION)
    assert np.abs(p - lik).max() < (L + 2) / float(1 << TABLE_PRECISION) + 1e-6
    # and the weights file stores exactly the tables of the weights it holds
    for a, b in zip(tiny_codec.z_tables, tables_from_counts(lows, counts)):
        assert a.low == b.low
        np.testing.assert_array_equal(a.counts, b.counts)


def test_hyperprior_round_trip_with_tiny_model_tables(tiny_codec):
    tables = tiny_codec.z_tables
    nz = len(tables)
    rng = np.random.default_rng(2)
    ids = np.broadcast_to(np.arange(nz)[:, None, None], (nz, 3, 5))
    vals = rng.integers(-12, 12, ids.shape)
    vals[0, 0, 0] = 2**30
    np.testing.assert_array_equal(decode(encode(vals, ids, tables), ids, tables), vals)
