"""Hostile .svc files for testing the reader and the decoder: a seeded, structure-aware mutator
and a builder of streams whose headers say anything (valid CRCs, lying numbers).

Used by tests/test_fuzz.py (a few thousand inputs, seconds) and scripts/fuzz_campaign.py (the
long campaign). Plain bit flips are caught by the CRCs, so most mutations here *repair the CRC*
of the region they change: then the lie reaches the field checks, the limits, the range decoder
and the reconstruction checksum, which are what a crafted file attacks.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from .format import (_AU_HEAD, AU_HEADER_SIZE, CRC_SIZE, GOP_HEADER_SIZE, MAGIC, TRAILER_SIZE,
                     VERSION_MAJOR, VERSION_MINOR, FrameType, GopHeader, SubstreamKind, _varint, crc32,
                     encode_index_and_trailer, parse_access_unit, parse_sequence_header)

_SEQ = struct.Struct("<HHIIIHBHf16s")
# Values that break arithmetic: zero, one, signed/unsigned edges, powers of two.
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024,
               4095, 4096, 32767, 32768, 65535, 65536, 1 << 20, 1 << 24, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFE, 0xFFFFFFFF)


@dataclass
class Region:
    """Bytes ``[start, end)`` protected by the CRC-32 stored at ``end`` (``end .. end + 4``)."""

    kind: str  # "header", "gop", "au", "index"
    start: int
    end: int


def regions(data: bytes) -> list[Region]:
    """The CRC-protected regions of a *valid* stream, in file order."""
    size = len(data)
    _, header_end, (major, _) = parse_sequence_header(data[:65547], size)
    out = [Region("header", 0, header_end - CRC_SIZE)]
    (index_offset,) = struct.unpack_from("<Q", data, size - TRAILER_SIZE)
    pos = header_end
    while pos < index_offset:
        out.append(Region("gop", pos, pos + GOP_HEADER_SIZE - CRC_SIZE))
        (first, count, length) = struct.unpack_from("<IHI", data, pos + 4)
        au_pos, end = pos + GOP_HEADER_SIZE, pos + GOP_HEADER_SIZE + length
        for j in range(count):
            _, nxt = parse_access_unit(data, au_pos, end, first + j, j == 0, major)
            out.append(Region("au", au_pos, nxt - CRC_SIZE))
            au_pos = nxt
        pos = end
    out.append(Region("index", index_offset, size - TRAILER_SIZE + 8))
    return out


def fix_crc(buf: bytearray, region: Region) -> None:
    struct.pack_into("<I", buf, region.end, crc32(buf[region.start:region.end]))


class Mutator:
    """``Mutator(seed_stream, seed).next()`` -> (operation name, mutated bytes), reproducibly."""

    OPS = ("flip", "flip_fixed", "field_fixed", "field_fixed", "bytes_fixed", "truncate", "append",
           "resize_fixed", "splice", "payload_fixed", "payload_fixed")

    def __init__(self, data: bytes, seed: int):
        self.data = bytes(data)
        self.rng = random.Random(seed)
        self.regions = regions(self.data)

    def next(self) -> tuple[str, bytes]:
        op = self.rng.choice(self.OPS)
        return op, getattr(self, "_" + op)()

    def _region(self, kinds=None) -> Region:
        pool = [r for r in self.regions if kinds is None or r.kind in kinds]
        return self.rng.choice(pool)

    def _flip(self) -> bytes:
        b = bytearray(self.data)
        for _ in range(self.rng.choice((1, 1, 2, 3, 8))):
            k = self.rng.randrange(8 * len(b))
            b[k // 8] ^= 1 << (k % 8)
        return bytes(b)

    def _flip_fixed(self) -> bytes:
        b, r = bytearray(self.data), self._region()
        for _ in range(self.rng.choice((1, 2, 4))):
            k = self.rng.randrange(8 * r.start, 8 * r.end)
            b[k // 8] ^= 1 << (k % 8)
        fix_crc(b, r)
        return bytes(b)

    def _field_fixed(self) -> bytes:
        """An interesting number written over a 1/2/4/8-byte field, CRC repaired."""
        b, r = bytearray(self.data), self._region()
        width = self.rng.choice((1, 2, 4, 4, 8))
        if r.end - r.start < width:
            width = 1
        at = self.rng.randrange(r.start, r.end - width + 1)
        value = self.rng.choice(INTERESTING) % (1 << (8 * width))
        b[at:at + width] = value.to_bytes(width, "little")
        fix_crc(b, r)
        return bytes(b)

    def _bytes_fixed(self) -> bytes:
        b, r = bytearray(self.data), self._region()
        at = self.rng.randrange(r.start, r.end)
        n = min(self.rng.choice((1, 2, 4, 16)), r.end - at)
        b[at:at + n] = bytes(self.rng.randrange(256) for _ in range(n))
        fix_crc(b, r)
        return bytes(b)

    def _payload_fixed(self) -> bytes:
        """Damage inside an access unit's payload with its CRC repaired: reaches the range
        decoder and the reconstruction checksum."""
        b, r = bytearray(self.data), self._region(("au",))
        lo = r.start + 14  # past the AU header: the substream table and payloads
        if lo >= r.end:
            return self._flip()
        op = self.rng.randrange(3)
        if op == 0:  # a few random bytes
            at = self.rng.randrange(lo, r.end)
            n = min(self.rng.choice((1, 4, 32)), r.end - at)
            b[at:at + n] = bytes(self.rng.randrange(256) for _ in range(n))
        elif op == 1:  # zero a stretch
            at = self.rng.randrange(lo, r.end)
            n = min(self.rng.randrange(1, 64), r.end - at)
            b[at:at + n] = bytes(n)
        else:  # one bit
            k = self.rng.randrange(8 * lo, 8 * r.end)
            b[k // 8] ^= 1 << (k % 8)
        fix_crc(b, r)
        return bytes(b)

    def _truncate(self) -> bytes:
        return self.data[:self.rng.randrange(len(self.data))]

    def _append(self) -> bytes:
        n = self.rng.choice((1, 4, 16, 100))
        return self.data + bytes(self.rng.randrange(256) for _ in range(n))

    def _resize_fixed(self) -> bytes:
        """Insert or delete bytes inside a region and repair its CRC: every later offset and
        length is now wrong."""
        r = self._region()
        at = self.rng.randrange(r.start, r.end)
        if self.rng.random() < 0.5:
            n = self.rng.choice((1, 3, 4, 16))
            b = bytearray(self.data[:at] + bytes(self.rng.randrange(256) for _ in range(n)) + self.data[at:])
            fixed = Region(r.kind, r.start, r.end + n)
        else:
            n = min(self.rng.choice((1, 2, 4)), r.end - at)
            b = bytearray(self.data[:at] + self.data[at + n:])
            fixed = Region(r.kind, r.start, r.end - n)
        fix_crc(b, fixed)
        return bytes(b)

    def _splice(self) -> bytes:
        """A region (with its CRC) copied over or in front of another one."""
        a, c = self._region(), self._region()
        chunk = self.data[a.start:a.end + CRC_SIZE]
        if self.rng.random() < 0.5:
            return self.data[:c.start] + chunk + self.data[c.start:]
        return self.data[:c.start] + chunk + self.data[c.end + CRC_SIZE:]


def sequence_header_bytes(width: int, height: int, *, frame_count: int = 1, gop_size: int = 1,
                          fps=(30, 1), colour: int = 0, flags: int = 0, rate: float = 2.0,
                          model_id: bytes = bytes(16), model_name: str = "elic_small_vr",
                          extension: bytes = b"", minor: int = VERSION_MINOR) -> bytes:
    """A sequence header with any field values (no validation) and a valid CRC."""
    name = model_name.encode("utf-8")
    body = _SEQ.pack(width, height, fps[0], fps[1], frame_count, gop_size, colour, flags, rate,
                     model_id) + bytes([len(name)]) + name + extension
    head = MAGIC + bytes([VERSION_MAJOR, minor]) + struct.pack("<H", len(body)) + body
    return head + struct.pack("<I", crc32(head))


def crafted_stream(width: int, height: int, *, frames: int = 1, gop_size: int | None = None,
                   claimed_frames: int | None = None, payload: bytes = b"", slices: int = 0,
                   table: list[tuple[int, int, int]] | None = None, **header) -> bytes:
    """A stream of ``frames`` I-frames whose substreams all hold ``payload``, every CRC valid,
    whatever the header claims (``claimed_frames`` overrides the header's frame count). Each
    access unit has the two texture substreams of format 2.x, plus ``slices`` further entries
    per view in the 1.x per-slice manner (invalid in 2.x: for limit checks and fuzzing);
    ``table`` replaces the whole (view, kind, slot) table."""
    gop_size = gop_size or max(1, frames)
    head = sequence_header_bytes(width, height, frame_count=frames if claimed_frames is None else claimed_frames,
                                 gop_size=gop_size, **header)
    subs = [(v, SubstreamKind.TEXTURE, 0) for v in (0, 1)]
    subs += [(v, SubstreamKind.TEXTURE, n % 256) for n in range(1, slices + 1) for v in (0, 1)]
    subs = subs if table is None else table
    out, entries, frame = bytearray(head), [], 0
    while frame < frames:
        n = min(gop_size, frames - frame)
        data = b"".join(_access_unit(frame + j, subs[:255], payload) for j in range(n))
        entries.append((len(out), frame))
        gop = GopHeader(len(entries) - 1, frame, n, len(data))
        out += gop.to_bytes() + data
        frame += n
    out += encode_index_and_trailer(entries, len(out))
    return bytes(out)


def _access_unit(index: int, table, payload: bytes) -> bytes:
    """Access-unit bytes without the writer's checks (so counts and slots may break the rules)."""
    entries = b"".join(bytes(key) + _varint(len(payload)) for key in table)
    size = AU_HEADER_SIZE + len(entries) + len(payload) * len(table) + CRC_SIZE
    body = _AU_HEAD.pack(size, index, FrameType.I, len(table), 0) + entries + payload * len(table)
    return body + struct.pack("<I", crc32(body))


def generated(rng: random.Random) -> bytes:
    """A stream built from scratch with random, often absurd, header numbers."""
    dims = (1, 2, 63, 64, 65, 640, 1920, 4096, 8192, 8193, 16384, 65535)
    w, h = rng.choice(dims), rng.choice(dims)
    frames = rng.choice((1, 1, 2, 3, 5))
    claimed = rng.choice((None, None, 0, frames + 1, 0xFFFF, 1 << 24, 0xFFFFFFFF))
    payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 0, 4, 8, 64))))
    header = dict(fps=(rng.choice((0, 1, 30, 0xFFFFFFFF)), rng.choice((0, 1, 1001))),
                  colour=rng.choice((0, 0, 1, 2, 255)), flags=rng.choice((0, 0, 0, 1)),
                  rate=rng.choice((0.0, 2.0, 3.0, 3.5, -1.0, float("nan"), float("inf"))),
                  model_name=rng.choice(("elic_small_vr", "elic_small_vr", "../../etc/passwd", ".x", "a/b", "")))
    return crafted_stream(w, h, frames=frames, gop_size=rng.choice((None, 1, 2, 0xFFFF)),
                          claimed_frames=claimed, payload=payload, slices=rng.choice((0, 1, 3, 40)), **header)
