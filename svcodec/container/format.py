"""Byte layout of the .svc stereo video container: dataclasses <-> bytes.

docs/FORMAT.md is the normative description; this module implements it and
nothing else (file handling lives in stream.py).  Two rules shape the code:

* Validation rules are written once, as ``validate`` / ``check_*`` functions
  raising ValueError.  The writer lets ValueError through (caller bug); the
  parsers turn it into BitstreamError (bad stream).
* Every read goes through ``_Cursor``, which bounds-checks before touching
  the buffer, so corrupt lengths end in BitstreamError, never in
  IndexError/struct.error/MemoryError.
"""

from __future__ import annotations

import enum
import hashlib
import math
import operator
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import BitstreamError

# 0x89 first (as in PNG): not ASCII, so text files never match, and a
# channel that strips the 8th bit corrupts it visibly.
MAGIC = b"\x89SVC"
END_MAGIC = b"\x89END"
VERSION_MAJOR = 2  # written; 2.0: one substream per view and coder (docs/FORMAT.md section 11)
# 2.1: the sequence header's extension data is a list of items (section 3.1). Written only when
# the stream has an item; a stream without any stays 2.0, byte for byte as before.
VERSION_MINOR = 1
READABLE_MAJORS = (1, 2)  # 1.x streams (one substream per hyper-latent and slice) still decode

FILE_HEADER_FIXED = 8  # magic(4) major(1) minor(1) body_length(2)
SEQ_BODY_FIXED = 42  # sequence header body without the model name bytes
CRC_SIZE = 4
GOP_HEADER_SIZE = 18  # index(4) first_frame(4) frame_count(2) data_length(4) crc(4)
AU_HEADER_SIZE = 14  # au_size(4) frame_index(4) frame_type(1) count(1) recon_crc32(4)
INDEX_ENTRY_SIZE = 12  # offset(8) first_frame(4)
TRAILER_SIZE = 16  # index_offset(8) index_crc32(4) END_MAGIC(4)
MODEL_ID_SIZE = 16
MAX_RATE = 3.0
U32_MAX = 0xFFFFFFFF

# Limits (docs/FORMAT.md section 12). A reader checks them on the headers, before it reads or
# allocates anything in proportion to the numbers a header claims; a writer refuses to exceed
# them, so every stream svcodec writes is one it reads.
MAX_WIDTH = 8192  # pixels per view
MAX_HEIGHT = 8192
MAX_PIXELS = 8192 * 4320  # per view and frame: 8K UHD, 35.4 Mpixel
MAX_FRAME_COUNT = (1 << 24) - 1  # 16,777,215 frames: 6.4 days at 30 fps
MAX_GOP_SIZE = 4096  # frames per GOP: a reader holds one GOP's bytes in memory
MAX_SUBSTREAMS = 64  # per access unit: 2 views x (2 hyperpriors + latent slices) and room to grow
MAX_SLOT = 63
MIN_FRAME_BYTES = 18  # an access unit is at least its header (14) and CRC (4)


def check_model_name(name: str) -> None:
    """A stream names weights by a plain file name (resolved in the weights folder), never a path:
    a crafted stream must not make a decoder read a file of its choosing."""
    if name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\:\0"):
        raise ValueError(f"model_name {name!r} is not a plain name (no path, no leading dot)")


def check_frame_size(width: int, height: int) -> None:
    """Frame size limits of docs/FORMAT.md section 12 (ValueError)."""
    if not (1 <= width <= MAX_WIDTH and 1 <= height <= MAX_HEIGHT and width * height <= MAX_PIXELS):
        raise ValueError(f"frame size {width}x{height} is beyond the limits of .svc "
                         f"({MAX_WIDTH}x{MAX_HEIGHT}, {MAX_PIXELS:,} pixels per view)")

_SEQ_BODY = struct.Struct("<HHIIIHBHf16s")  # + name_length(1) + name
assert _SEQ_BODY.size + 1 == SEQ_BODY_FIXED
_GOP = struct.Struct("<IIHI")
_AU_HEAD = struct.Struct("<IIBBI")
assert _AU_HEAD.size == AU_HEADER_SIZE


class FrameType(enum.IntEnum):
    I = 0  # intra: decodable on its own
    P = 1  # predicted from earlier frames of the same GOP


class SubstreamKind(enum.IntEnum):
    # version 1.x: one substream per hyper-latent and per latent slice
    TEXTURE_HYPER = 0  # hyperprior z (slot 0)
    TEXTURE_LATENT = 1  # latent slice n (slot n >= 1)
    MOTION_HYPER = 2  # P-frames only
    MOTION_LATENT = 3  # P-frames only
    # version 2.x: one substream per view and coder, its hyper-latent then every slice in coding
    # order (one range-coder flush and one table entry instead of one per slice)
    TEXTURE = 4  # slot 0
    MOTION = 5  # slot 0, P-frames only


KINDS_OF_MAJOR = {
    1: frozenset({SubstreamKind.TEXTURE_HYPER, SubstreamKind.TEXTURE_LATENT,
                  SubstreamKind.MOTION_HYPER, SubstreamKind.MOTION_LATENT}),
    2: frozenset({SubstreamKind.TEXTURE, SubstreamKind.MOTION}),
}
# Version 2.x fixes each frame type's table (view, kind, slot), in this order: one substream per
# view and coder, so a decoder can refuse any other table before it loads a model.
LAYOUT_OF_MAJOR_2 = {
    FrameType.I: ((0, SubstreamKind.TEXTURE, 0), (1, SubstreamKind.TEXTURE, 0)),
    FrameType.P: ((0, SubstreamKind.MOTION, 0), (1, SubstreamKind.MOTION, 0),
                  (0, SubstreamKind.TEXTURE, 0), (1, SubstreamKind.TEXTURE, 0)),
}
MOTION_KINDS = frozenset({SubstreamKind.MOTION_HYPER, SubstreamKind.MOTION_LATENT, SubstreamKind.MOTION})
_SLICE_KINDS = frozenset({SubstreamKind.TEXTURE_LATENT, SubstreamKind.MOTION_LATENT})  # slot >= 1


class Colour(enum.IntEnum):
    RGB = 0  # 8-bit full range RGB
    GREY = 1  # coded as RGB with R=G=B; the decoder outputs one channel


class View(enum.IntEnum):
    LEFT = 0
    RIGHT = 1


def crc32(data) -> int:
    """CRC-32 (ISO-HDLC, as in zlib/PNG/zip) of a bytes-like object."""
    return zlib.crc32(data) & U32_MAX


def frame_crc32(*views) -> int:
    """``recon_crc32`` of one access unit: CRC-32 over the views in order (left, right).

    Each view is the reconstructed frame as 8-bit RGB, height x width x 3,
    row-major (a uint8 numpy array of shape (H, W, 3) or raw bytes).  Grey
    streams use the R=G=B frame, before reduction to one channel.
    """
    crc = 0
    for v in views:
        dtype = getattr(v, "dtype", None)
        if dtype is not None and str(dtype) != "uint8":
            raise ValueError(f"frame_crc32 needs uint8 samples, got {dtype}")
        crc = zlib.crc32(v.tobytes() if hasattr(v, "tobytes") else bytes(v), crc)
    return crc & U32_MAX


def model_id_of_file(path, chunk: int = 1 << 20) -> bytes:
    """The 16-byte ``model_id`` of a weights file: first half of its SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.digest()[:MODEL_ID_SIZE]


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _short_f32(v: float) -> float:
    """Shortest decimal that is the same float32, so rate 1.3 reads back as 1.3."""
    for digits in range(1, 10):
        s = float(f"{v:.{digits}g}")
        if _f32(s) == v:
            return s
    return v


def _check_int(name: str, value, lo: int, hi: int) -> None:
    # operator.index accepts numpy integers too, but not floats or bools.
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} out of range [{lo}, {hi}]")


class _Cursor:
    """Bounds-checked little-endian reads from ``buf[pos:end]``."""

    def __init__(self, buf, pos: int, end: int, what: str):
        self.buf, self.pos, self.end, self.what = buf, pos, end, what

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise BitstreamError(
                f"{self.what}: needs {n} bytes at offset {self.pos} but only "
                f"{max(self.end - self.pos, 0)} remain (corrupt or truncated stream)")
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        """Unsigned LEB128, at most 5 bytes, value <= 2**32-1, minimal encoding."""
        value = 0
        for i in range(5):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise BitstreamError(f"{self.what}: non-minimal varint")
                if value > U32_MAX:
                    raise BitstreamError(f"{self.what}: varint exceeds 32 bits")
                return value
        raise BitstreamError(f"{self.what}: varint longer than 5 bytes")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --------------------------------------------------------------------------
# Sequence header (with the file header: magic, version, body length)
# --------------------------------------------------------------------------


class ExtensionTag(enum.IntEnum):
    """Sequence header extension items (docs/FORMAT.md section 3.1): what an older decoder may
    ignore and still decode every frame right."""

    SAMPLE_ASPECT = 1  # u16 num, u16 den: the shape of the source's pixels (width : height)


_ITEM_HEAD = struct.Struct("<BB")  # tag, length
_SAMPLE_ASPECT = struct.Struct("<HH")


@dataclass
class SequenceHeader:
    width: int
    height: int
    fps_num: int
    fps_den: int
    gop_size: int
    model_id: bytes
    model_name: str
    rate: float
    frame_count: int = 0
    colour: int = Colour.RGB
    flags: int = 0
    # Pixel shape the source declared, (num, den) = width : height of one pixel; None: square
    # (or not declared). Frames are coded as stored; this tells a player how to show them.
    sample_aspect: tuple[int, int] | None = None

    def validate(self) -> None:
        _check_int("width", self.width, 1, 0xFFFF)
        _check_int("height", self.height, 1, 0xFFFF)
        check_frame_size(self.width, self.height)
        _check_int("fps_num", self.fps_num, 1, U32_MAX)
        _check_int("fps_den", self.fps_den, 1, U32_MAX)
        _check_int("frame_count", self.frame_count, 0, MAX_FRAME_COUNT)
        _check_int("gop_size", self.gop_size, 1, MAX_GOP_SIZE)
        _check_int("colour", self.colour, 0, max(Colour))
        _check_int("flags", self.flags, 0, 0)  # reserved: no flag is defined yet
        try:
            rate = float(self.rate)
        except (TypeError, ValueError):
            rate = math.nan
        if not 0.0 <= rate <= MAX_RATE:  # also rejects NaN
            raise ValueError(f"rate={self.rate!r} out of range [0, {MAX_RATE}]")
        if not isinstance(self.model_id, (bytes, bytearray)) or len(self.model_id) != MODEL_ID_SIZE:
            raise ValueError(f"model_id must be {MODEL_ID_SIZE} bytes")
        if not isinstance(self.model_name, str) or len(self.model_name.encode("utf-8")) > 255:
            raise ValueError("model_name must be a str of at most 255 UTF-8 bytes")
        check_model_name(self.model_name)
        if self.sample_aspect is not None:
            if not isinstance(self.sample_aspect, tuple) or len(self.sample_aspect) != 2:
                raise ValueError(f"sample_aspect={self.sample_aspect!r} must be a (num, den) pair")
            _check_int("sample_aspect num", self.sample_aspect[0], 1, 0xFFFF)
            _check_int("sample_aspect den", self.sample_aspect[1], 1, 0xFFFF)
            if self.sample_aspect[0] == self.sample_aspect[1]:  # one spelling of square: no item
                raise ValueError(f"sample_aspect={self.sample_aspect[0]}:{self.sample_aspect[1]} is square")

    def extension_bytes(self) -> bytes:
        """The extension items this header carries (section 3.1), in tag order."""
        if self.sample_aspect is None:
            return b""
        return _ITEM_HEAD.pack(ExtensionTag.SAMPLE_ASPECT, _SAMPLE_ASPECT.size) + _SAMPLE_ASPECT.pack(*self.sample_aspect)

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    def to_dict(self) -> dict:
        return {
            "width": self.width, "height": self.height,
            "fps_num": self.fps_num, "fps_den": self.fps_den, "fps": self.fps,
            "frame_count": self.frame_count, "gop_size": self.gop_size,
            "colour": Colour(self.colour).name.lower(),
            "model_id": bytes(self.model_id).hex(), "model_name": self.model_name,
            "rate": self.rate, "flags": self.flags,
            "sample_aspect": "1:1" if self.sample_aspect is None else "%d:%d" % self.sample_aspect,
        }

    def to_bytes(self) -> bytes:
        """File header + sequence header + CRC: the first bytes of a .svc file."""
        self.validate()
        name = self.model_name.encode("utf-8")
        body = _SEQ_BODY.pack(self.width, self.height, self.fps_num, self.fps_den,
                              self.frame_count, self.gop_size, self.colour, self.flags,
                              float(self.rate), bytes(self.model_id)) + bytes([len(name)]) + name
        extension = self.extension_bytes()
        body += extension
        if len(body) > 0xFFFF:
            raise ValueError("sequence header longer than 65535 bytes")
        minor = VERSION_MINOR if extension else 0  # without items the stream is a 2.0 one
        head = MAGIC + bytes([VERSION_MAJOR, minor]) + struct.pack("<H", len(body)) + body
        return head + struct.pack("<I", crc32(head))


def parse_sequence_header(buf: bytes, file_size: int) -> tuple[SequenceHeader, int, tuple[int, int]]:
    """Parse the start of a file; ``buf`` holds its first min(file_size, 65547) bytes.

    Returns (header, bytes consumed, (major, minor)).
    """
    if len(buf) < FILE_HEADER_FIXED:
        if len(buf) >= len(MAGIC) and buf[:4] != MAGIC:
            raise BitstreamError("not an .svc file (bad magic)")
        raise BitstreamError(f"file is truncated: {file_size} bytes is too short for an .svc header")
    if buf[:4] != MAGIC:
        raise BitstreamError(f"not an .svc file (bad magic {bytes(buf[:4])!r}, expected {MAGIC!r})")
    major, minor = buf[4], buf[5]
    if major not in READABLE_MAJORS:
        raise BitstreamError(f"unsupported .svc format version {major}.{minor} "
                             f"(this decoder reads versions {', '.join(f'{m}.x' for m in READABLE_MAJORS)})")
    (body_len,) = struct.unpack_from("<H", buf, 6)
    end = FILE_HEADER_FIXED + body_len
    if len(buf) < end + CRC_SIZE:
        raise BitstreamError("file is truncated: it ends inside the sequence header")
    if crc32(buf[:end]) != struct.unpack_from("<I", buf, end)[0]:
        raise BitstreamError("sequence header: checksum mismatch (corrupt stream)")
    cur = _Cursor(buf, FILE_HEADER_FIXED, end, "sequence header")
    (width, height, fps_num, fps_den, frame_count, gop_size, colour, flags, rate,
     model_id) = cur.unpack(_SEQ_BODY)
    try:
        name = cur.take(cur.u8()).decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("sequence header: model name is not valid UTF-8") from None
    items = _parse_extension(cur.take(cur.end - cur.pos), major, minor)
    seq = SequenceHeader(width=width, height=height, fps_num=fps_num, fps_den=fps_den,
                         gop_size=gop_size, model_id=model_id, model_name=name,
                         rate=_short_f32(rate),
                         frame_count=frame_count, colour=colour, flags=flags,
                         sample_aspect=items.get(ExtensionTag.SAMPLE_ASPECT))
    try:
        seq.validate()
    except ValueError as e:
        raise BitstreamError(f"sequence header: {e}") from None
    seq.colour = Colour(colour)
    return seq, end + CRC_SIZE, (major, minor)


def _parse_extension(data: bytes, major: int, minor: int) -> dict:
    """Extension items of a 2.1+ header -> {tag: value}. Before 2.1 the bytes had no defined
    meaning and are ignored, as the versions that wrote them specified; items with a tag this
    decoder does not know are skipped (a later minor version's, safe to ignore by definition)."""
    if (major, minor) < (2, 1):
        return {}
    cur, items = _Cursor(data, 0, len(data), "sequence header extension"), {}
    while cur.pos < cur.end:
        tag, length = cur.unpack(_ITEM_HEAD)
        value = cur.take(length)
        if tag in items:
            raise BitstreamError(f"sequence header extension: item {tag} appears twice")
        if tag == ExtensionTag.SAMPLE_ASPECT:
            if length != _SAMPLE_ASPECT.size:
                raise BitstreamError(f"sequence header extension: sample aspect item of {length} bytes, "
                                     f"expected {_SAMPLE_ASPECT.size}")
            items[tag] = _SAMPLE_ASPECT.unpack(value)  # zeros are refused by validate()
        else:
            items[tag] = None
    return items


def patch_frame_count(header: bytes, frame_count: int) -> bytes:
    """Rewrite frame_count (and the CRC) of a serialised header; same length."""
    _check_int("frame_count", frame_count, 0, MAX_FRAME_COUNT)
    b = bytearray(header)
    struct.pack_into("<I", b, FILE_HEADER_FIXED + 12, frame_count)
    struct.pack_into("<I", b, len(b) - CRC_SIZE, crc32(b[:-CRC_SIZE]))
    return bytes(b)


# --------------------------------------------------------------------------
# GOP header
# --------------------------------------------------------------------------


@dataclass
class GopHeader:
    index: int  # 0, 1, 2, ... in file order
    first_frame: int  # frame index of the GOP's first access unit
    frame_count: int  # number of access units in the GOP
    data_length: int  # bytes of access-unit data that follow the GOP header

    def to_dict(self) -> dict:
        return {"index": self.index, "first_frame": self.first_frame,
                "frame_count": self.frame_count, "data_length": self.data_length}

    def to_bytes(self) -> bytes:
        _check_int("gop index", self.index, 0, U32_MAX)
        _check_int("first_frame", self.first_frame, 0, U32_MAX)
        _check_int("GOP frame_count", self.frame_count, 1, MAX_GOP_SIZE)
        _check_int("GOP data_length", self.data_length, 0, U32_MAX)
        b = _GOP.pack(self.index, self.first_frame, self.frame_count, self.data_length)
        return b + struct.pack("<I", crc32(b))


def parse_gop_header(buf: bytes, expected_index: int) -> GopHeader:
    cur = _Cursor(buf, 0, len(buf), f"GOP {expected_index} header")
    raw = cur.take(_GOP.size)
    (stored,) = struct.unpack("<I", cur.take(CRC_SIZE))
    if crc32(raw) != stored:
        raise BitstreamError(f"GOP {expected_index} header: checksum mismatch (corrupt stream)")
    gop = GopHeader(*_GOP.unpack(raw))
    if gop.index != expected_index:
        raise BitstreamError(f"GOP {expected_index} header: carries index {gop.index}")
    return gop


# --------------------------------------------------------------------------
# Access units
# --------------------------------------------------------------------------


@dataclass
class Substream:
    view: int  # View.LEFT / View.RIGHT
    kind: int  # SubstreamKind
    slot: int  # 0 for hyperpriors, n >= 1 for latent slice n
    data: bytes

    def to_dict(self) -> dict:
        return {"view": self.view, "kind": SubstreamKind(self.kind).name.lower(),
                "slot": self.slot, "size": len(self.data)}


@dataclass
class AccessUnit:
    frame_index: int
    frame_type: int  # FrameType
    recon_crc32: int  # frame_crc32() of the encoder's reconstruction
    substreams: list[Substream] = field(default_factory=list)  # in coding order

    def payload_bytes(self) -> int:
        return sum(len(s.data) for s in self.substreams)

    def to_dict(self) -> dict:
        return {"frame_index": self.frame_index,
                "frame_type": FrameType(self.frame_type).name,
                "recon_crc32": f"{self.recon_crc32:08x}",
                "payload_bytes": self.payload_bytes(),
                "substreams": [s.to_dict() for s in self.substreams]}


def check_access_unit(au: AccessUnit, expected_index: int, first_in_gop: bool,
                      major: int = VERSION_MAJOR) -> None:
    """Semantic rules of docs/FORMAT.md section 'Access unit' for a ``major``.x stream (ValueError)."""
    _check_int("frame_index", au.frame_index, 0, U32_MAX)
    if au.frame_index != expected_index:
        raise ValueError(f"frame_index {au.frame_index}, expected {expected_index}")
    _check_int("frame_type", au.frame_type, 0, max(FrameType))
    if first_in_gop and au.frame_type != FrameType.I:
        raise ValueError("a GOP must start with an I-frame")
    _check_int("recon_crc32", au.recon_crc32, 0, U32_MAX)
    _check_int("substream count", len(au.substreams), 0, MAX_SUBSTREAMS)
    seen = set()
    for s in au.substreams:
        _check_int("substream view", s.view, 0, max(View))
        if s.kind not in KINDS_OF_MAJOR[major]:
            raise ValueError(f"substream kind {s.kind} is not defined in format version {major}.x")
        _check_int("substream slot", s.slot, 0, MAX_SLOT)
        if (s.kind in _SLICE_KINDS) == (s.slot == 0):
            raise ValueError(f"substream kind {s.kind} cannot use slot {s.slot}")
        if au.frame_type == FrameType.I and s.kind in MOTION_KINDS:
            raise ValueError("an I-frame cannot carry motion substreams")
        if not isinstance(s.data, (bytes, bytearray, memoryview)):
            raise ValueError("substream data must be bytes")
        key = (s.view, s.kind, s.slot)
        if key in seen:
            raise ValueError(f"duplicate substream (view, kind, slot) = {key}")
        seen.add(key)
    if major >= 2:
        got = tuple((s.view, s.kind, s.slot) for s in au.substreams)
        want = LAYOUT_OF_MAJOR_2[FrameType(au.frame_type)]
        if got != want:
            def names(table):
                return ", ".join(f"{SubstreamKind(k).name.lower()} {'LR'[v]}" for v, k, _ in table) or "none"
            raise ValueError(f"a version {major} {FrameType(au.frame_type).name}-frame holds the substreams "
                             f"{names(want)}, in this order; this one holds {names(got)}")


def encode_access_unit(au: AccessUnit, expected_index: int, first_in_gop: bool) -> bytes:
    check_access_unit(au, expected_index, first_in_gop)
    table = b"".join(bytes([s.view, s.kind, s.slot]) + _varint(len(s.data)) for s in au.substreams)
    payload = b"".join(bytes(s.data) for s in au.substreams)
    size = AU_HEADER_SIZE + len(table) + len(payload) + CRC_SIZE
    _check_int("access unit size", size, 0, U32_MAX)
    head = _AU_HEAD.pack(size, au.frame_index, au.frame_type, len(au.substreams), au.recon_crc32)
    body = head + table + payload
    return body + struct.pack("<I", crc32(body))


def parse_access_unit(buf, pos: int, end: int, expected_index: int,
                      first_in_gop: bool, major: int = VERSION_MAJOR) -> tuple[AccessUnit, int]:
    """Parse one AU at ``buf[pos:]`` that must end by ``end``; returns (au, next pos)."""
    what = f"access unit {expected_index}"
    (size,) = struct.unpack("<I", _Cursor(buf, pos, end, what).take(4))
    if size < AU_HEADER_SIZE + CRC_SIZE or size > end - pos:
        raise BitstreamError(f"{what}: size {size} does not fit its GOP (corrupt or truncated stream)")
    au_end = pos + size
    (stored,) = struct.unpack_from("<I", buf, au_end - CRC_SIZE)
    # Check the CRC before interpreting any field: after this, a failure can
    # only be an encoder bug, and messages can trust the numbers they print.
    if crc32(memoryview(buf)[pos:au_end - CRC_SIZE]) != stored:
        raise BitstreamError(f"{what}: checksum mismatch (corrupt or truncated stream)")
    cur = _Cursor(buf, pos, au_end - CRC_SIZE, what)
    _, frame_index, frame_type, count, recon = cur.unpack(_AU_HEAD)
    if count > MAX_SUBSTREAMS:
        raise BitstreamError(f"{what}: {count} substreams, more than the limit of {MAX_SUBSTREAMS}")
    table = []
    for _ in range(count):
        view, kind, slot = cur.take(3)
        table.append((view, kind, slot, cur.varint()))
    subs = [Substream(view, kind, slot, cur.take(n)) for view, kind, slot, n in table]
    if cur.pos != cur.end:
        raise BitstreamError(f"{what}: {cur.end - cur.pos} unused bytes after the payloads")
    au = AccessUnit(frame_index, frame_type, recon, subs)
    try:
        check_access_unit(au, expected_index, first_in_gop, major)
    except ValueError as e:
        raise BitstreamError(f"{what}: {e}") from None
    au.frame_type = FrameType(frame_type)
    for s in subs:
        s.view, s.kind = View(s.view), SubstreamKind(s.kind)
    return au, au_end


# --------------------------------------------------------------------------
# Index and trailer
# --------------------------------------------------------------------------


def encode_index_and_trailer(entries: list[tuple[int, int]], index_offset: int) -> bytes:
    """``entries``: (byte offset of GOP header, first frame) per GOP."""
    index = struct.pack("<I", len(entries)) + b"".join(struct.pack("<QI", o, f) for o, f in entries)
    offset = struct.pack("<Q", index_offset)
    # The CRC also covers index_offset, so every trailer bit is protected.
    return index + offset + struct.pack("<I", crc32(index + offset)) + END_MAGIC


def parse_trailer(trailer: bytes, file_size: int, header_end: int) -> int:
    """Returns index_offset after checking the end magic and its bounds."""
    if len(trailer) != TRAILER_SIZE or trailer[12:] != END_MAGIC:
        raise BitstreamError("file is truncated: no end-of-stream trailer "
                             "(the encoder did not finish or the file was cut)")
    (index_offset,) = struct.unpack_from("<Q", trailer, 0)
    if not header_end <= index_offset <= file_size - TRAILER_SIZE - 4:
        raise BitstreamError(f"trailer: index offset {index_offset} outside the file (corrupt stream)")
    return index_offset


def parse_index(index: bytes, trailer: bytes) -> list[tuple[int, int]]:
    """``index``: all bytes between index_offset and the trailer."""
    (count,) = struct.unpack("<I", _Cursor(index, 0, len(index), "index").take(4))
    if len(index) != 4 + INDEX_ENTRY_SIZE * count:
        raise BitstreamError(f"index: {count} entries do not fill its {len(index)} bytes (corrupt stream)")
    (stored,) = struct.unpack_from("<I", trailer, 8)
    if crc32(index + trailer[:8]) != stored:
        raise BitstreamError("index: checksum mismatch (corrupt stream)")
    return [struct.unpack_from("<QI", index, 4 + INDEX_ENTRY_SIZE * k) for k in range(count)]
