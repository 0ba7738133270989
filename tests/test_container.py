"""Tests of the .svc container (svcodec.container): pure Python, fast."""

import json
import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from svcodec.container import (AccessUnit, Colour, FrameType, SequenceHeader, Substream,
                               SubstreamKind, SvcReader, SvcWriter, frame_crc32)
from svcodec.container.format import MAGIC, TRAILER_SIZE, check_access_unit
from svcodec.errors import BitstreamError, InputError

K = SubstreamKind


def make_seq(**kw):
    args = dict(width=64, height=48, fps_num=30000, fps_den=1001, gop_size=4,
                model_id=bytes(range(16)), model_name="elic-hdc-s", rate=1.3)
    args.update(kw)
    return SequenceHeader(**args)


def make_au(frame, ftype, rng, sizes=(0, 1, 5, 130, 300)):
    """Substreams in the codec's 2.x layout: motion L, R (P-frames only), texture L, R."""
    def blob():
        return bytes(rng.randrange(256) for _ in range(rng.choice(sizes)))
    kinds = (K.MOTION, K.TEXTURE) if ftype == FrameType.P else (K.TEXTURE,)
    return AccessUnit(frame, ftype, rng.getrandbits(32), [Substream(v, k, 0, blob()) for k in kinds for v in (0, 1)])


def make_gops(frame_sizes=(4, 4, 2), seed=0, **kw):
    rng, gops, frame = random.Random(seed), [], 0
    for n in frame_sizes:
        gops.append([make_au(frame + j, FrameType.I if j == 0 else FrameType.P, rng, **kw)
                     for j in range(n)])
        frame += n
    return gops


def write(path, gops, seq=None):
    with SvcWriter(path, seq or make_seq()) as w:
        for g in gops:
            w.write_gop(g)
    return path


def read_all(path):
    r = SvcReader(path)
    return r, [aus for _, aus in r]


@pytest.fixture
def stream(tmp_path):
    gops = make_gops()
    path = write(tmp_path / "a.svc", gops)
    return path, gops, path.read_bytes()


@pytest.fixture
def small_stream(tmp_path):
    """Three GOPs with tiny payloads, so exhaustive cut/flip loops stay fast."""
    gops = make_gops((2, 1, 2), sizes=(0, 1, 3))
    path = write(tmp_path / "small.svc", gops)
    return path, gops, path.read_bytes()


def error_of(path):
    """The exception a full read raises (None if it succeeds); cheaper than pytest.raises in loops."""
    try:
        read_all(path)
    except Exception as e:  # noqa: BLE001 - the type is what the caller checks
        return e
    return None


def test_round_trip(stream):
    path, gops, _ = stream
    r, got = read_all(path)
    assert got == gops  # dataclass equality: order, fields and payload bytes
    assert r.sequence == make_seq(frame_count=10)
    assert r.sequence.rate == 1.3 and r.sequence.colour == Colour.RGB
    assert [(g.index, g.first_frame, g.frame_count) for g in r.gops] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert r.version == (2, 0) and len(r) == 3
    payload = sum(len(s.data) for g in gops for au in g for s in au.substreams)
    assert r.file_size == os.path.getsize(path)
    assert r.overhead_bytes() == r.file_size - payload > 0
    assert [r.gop_of_frame(f) for f in (0, 3, 4, 9)] == [0, 0, 1, 2]
    json.dumps(r.to_dict())
    json.dumps([au.to_dict() for g in got for au in g])


def test_grey_and_fractional_rate(tmp_path):
    seq = make_seq(colour=Colour.GREY, rate=0.25, model_name="modèle", fps_num=25, fps_den=1)
    r, _ = read_all(write(tmp_path / "g.svc", make_gops((1,)), seq))
    assert r.sequence.colour == Colour.GREY and r.sequence.rate == 0.25
    assert r.sequence.model_name == "modèle" and r.sequence.fps == 25


def test_deterministic(tmp_path):
    a = write(tmp_path / "a.svc", make_gops()).read_bytes()
    b = write(tmp_path / "b.svc", make_gops()).read_bytes()
    assert a == b


def test_frame_count_patched_at_close(tmp_path):
    path = tmp_path / "s.svc"
    with SvcWriter(path, make_seq(frame_count=0)) as w:
        for g in make_gops():
            w.write_gop(g)
        w.set_frame_count(10)
    assert SvcReader(path).sequence.frame_count == 10
    with pytest.raises(ValueError):  # declared count disagrees with the frames written
        with SvcWriter(path, make_seq()) as w:
            w.write_gop(make_gops()[0])
            w.set_frame_count(7)
    assert SvcReader(path).sequence.frame_count == 10  # previous file intact


def test_wrong_magic(stream, tmp_path):
    _, _, data = stream
    bad = tmp_path / "bad.svc"
    bad.write_bytes(b"RIFF" + data[4:])
    with pytest.raises(BitstreamError, match="magic"):
        SvcReader(bad)


def test_unknown_major_version(stream, tmp_path):
    _, _, data = stream
    bad = tmp_path / "v3.svc"
    bad.write_bytes(data[:4] + bytes([3]) + data[5:])
    with pytest.raises(BitstreamError, match="version 3"):
        SvcReader(bad)


def _appendix_example() -> bytes:
    """The hex dump of docs/FORMAT.md Appendix A (a version 1.0 file)."""
    text = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
    dump = text.split("## Appendix A")[1].split("```")[1]
    return bytes.fromhex("".join(line[6:54] for line in dump.strip().splitlines()))


def test_version_1_streams_still_read(tmp_path):
    """The documented 1.0 example parses with its per-slice substream kinds; a 1.x stream with
    2.x kinds, or the reverse, is refused."""
    data = _appendix_example()
    path = tmp_path / "v1.svc"
    path.write_bytes(data)
    r, got = read_all(path)
    assert r.version == (1, 0) and r.file_size == 134 and r.overhead_bytes() == 131
    assert [(s.view, s.kind, s.slot, s.data) for s in got[0][0].substreams] == [
        (0, K.TEXTURE_HYPER, 0, b"\xaa"), (1, K.TEXTURE_HYPER, 0, b"\xbb\xcc")]
    head_end = 8 + struct.unpack_from("<H", data, 6)[0]  # where header_crc32 is
    au = head_end + 4 + 18
    for version, kind in ((1, K.TEXTURE), (2, K.TEXTURE_HYPER)):
        bad = bytearray(data)
        bad[4], bad[au + 15] = version, kind  # the first table entry's kind
        struct.pack_into("<I", bad, head_end, zlib.crc32(bad[:head_end]))
        au_end = au + struct.unpack_from("<I", bad, au)[0] - 4
        struct.pack_into("<I", bad, au_end, zlib.crc32(bad[au:au_end]))
        path.write_bytes(bytes(bad))
        with pytest.raises(BitstreamError, match=f"not defined in format version {version}.x"):
            read_all(path)


def test_every_truncation_detected(small_stream, tmp_path):
    _, _, data = small_stream
    cut = tmp_path / "cut.svc"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        e = error_of(cut)
        assert isinstance(e, BitstreamError), (n, e)
        if n >= len(MAGIC):  # past the magic the message must say what happened
            assert "truncated" in str(e), (n, str(e))


def test_every_bit_flip_detected(small_stream, tmp_path):
    _, _, data = small_stream
    bad = tmp_path / "flip.svc"
    for pos in range(len(data)):
        for bit in {pos % 8, 7 - pos % 8}:
            b = bytearray(data)
            b[pos] ^= 1 << bit
            bad.write_bytes(b)
            e = error_of(bad)
            assert isinstance(e, BitstreamError), (pos, bit, e)


def test_random_corruption_only_raises_bitstream_error(stream, tmp_path):
    _, _, data = stream  # the big stream: payload lengths need multi-byte varints
    rng, bad = random.Random(1), tmp_path / "junk.svc"
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.3:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))  # trailing junk
        if b == data:
            continue
        bad.write_bytes(b)
        e = error_of(bad)
        assert isinstance(e, BitstreamError), e
    for n in (0, 3, 50, 5000):
        bad.write_bytes(bytes(rng.randrange(256) for _ in range(n)))
        with pytest.raises(BitstreamError):
            read_all(bad)


def test_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "out.svc"
    with pytest.raises(RuntimeError):
        with SvcWriter(path, make_seq()) as w:
            w.write_gop(make_gops()[0])
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path):
    path = tmp_path / "out.svc"
    path.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with SvcWriter(path, make_seq()) as w:
            w.write_gop(make_gops()[0])
            raise RuntimeError("boom")
    with pytest.raises(ValueError):  # invalid AU: GOP must start with an I-frame
        with SvcWriter(path, make_seq()) as w:
            w.write_gop([make_au(0, FrameType.P, random.Random(0))])
    with pytest.raises(ValueError):  # closing with no GOP would make an invalid file
        with SvcWriter(path, make_seq()):
            pass
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.svc"]
    write(path, make_gops())  # a successful write replaces it
    assert SvcReader(path).sequence.frame_count == 10


def test_version_2_tables_are_fixed_per_frame_type(tmp_path):
    """I: texture L, texture R; P: motion L, motion R, texture L, texture R, in this order: any
    other table is refused by the writer's check, and by the reader before a model is loaded."""
    from svcodec.container.mutate import crafted_stream

    rng = random.Random(0)
    i_subs, p_subs = make_au(0, FrameType.I, rng).substreams, make_au(1, FrameType.P, rng).substreams
    bad = [(FrameType.I, i_subs[::-1]), (FrameType.I, i_subs[:1]), (FrameType.I, []),
           (FrameType.P, p_subs[2:] + p_subs[:2]), (FrameType.P, p_subs[:2] + p_subs[3:]),
           (FrameType.P, i_subs)]
    for ftype, subs in bad:  # the writer's check of every access unit
        with pytest.raises(ValueError, match="holds the substreams"):
            check_access_unit(AccessUnit(1, ftype, 0, subs), 1, first_in_gop=False)
    check_access_unit(AccessUnit(1, FrameType.P, 0, p_subs), 1, first_in_gop=False)
    path = tmp_path / "swapped.svc"
    path.write_bytes(crafted_stream(64, 48, payload=bytes(4), table=[(1, K.TEXTURE, 0), (0, K.TEXTURE, 0)]))
    with pytest.raises(BitstreamError, match="holds the substreams texture L, texture R, in this order; "
                                             "this one holds texture R, texture L"):
        read_all(path)


def test_writer_rejects_bad_input(tmp_path):
    rng = random.Random(0)
    for bad in (dict(rate=3.5), dict(rate=float("nan")), dict(width=0), dict(model_id=b"x"),
                dict(model_name="x" * 256), dict(colour=2), dict(flags=1), dict(gop_size=0)):
        with pytest.raises(ValueError):
            SvcWriter(tmp_path / "x.svc", make_seq(**bad))
    with SvcWriter(tmp_path / "x.svc", make_seq()) as w:
        for aus in ([make_au(1, FrameType.I, rng)],  # wrong frame index
                    [make_au(0, FrameType.I, rng)] * 5,  # longer than gop_size
                    [AccessUnit(0, FrameType.I, 0, [Substream(0, K.MOTION, 0, b"")])],
                    [AccessUnit(0, FrameType.I, 0, [Substream(0, K.TEXTURE, 1, b"")])],
                    [AccessUnit(0, FrameType.I, 0, [Substream(0, K.TEXTURE_HYPER, 0, b"")])],  # 1.x kind
                    [AccessUnit(0, FrameType.I, 0, [Substream(0, K.TEXTURE, 0, b"")] * 2)]):
            with pytest.raises(ValueError):
                w.write_gop(aus)
        w.write_gop([make_au(0, FrameType.I, rng)])
    assert os.listdir(tmp_path) == ["x.svc"]


def test_seek_reads_only_that_gop(stream, tmp_path, monkeypatch):
    path, gops, data = stream
    r = SvcReader(path)
    # Corrupt a payload byte in GOP 0: GOP 2 must still read, GOP 0 must not.
    b = bytearray(data)
    b[r.gop_offsets[0] + 18 + 40] ^= 0xFF
    bad = tmp_path / "seek.svc"
    bad.write_bytes(b)
    r = SvcReader(bad)
    reads = []
    orig = SvcReader._read
    monkeypatch.setattr(SvcReader, "_read",
                        lambda self, f, off, n, what: reads.append((off, n)) or orig(self, f, off, n, what))
    assert r.read_gop(2) == gops[2]
    assert reads == [(r.gop_offsets[2], 18 + r.gops[2].data_length)]
    with pytest.raises(BitstreamError, match="access unit 0: checksum mismatch"):
        r.read_gop(0)
    with pytest.raises(InputError):
        r.read_gop(3)


def test_bad_paths(tmp_path):
    for p in (tmp_path, tmp_path / "missing.svc"):
        with pytest.raises(InputError) as e:
            SvcReader(p)
        assert "\n" not in str(e.value) and str(p) in str(e.value)
    with pytest.raises(InputError):
        SvcWriter(tmp_path / "no-such-dir" / "x.svc", make_seq())


def test_frame_crc32():
    np = pytest.importorskip("numpy")
    left = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    right = left[::-1].copy()
    assert frame_crc32(left, right) == frame_crc32(left.tobytes() + right.tobytes())
    assert frame_crc32(left[:, ::-1], right) == frame_crc32(left[:, ::-1].copy(), right)
    with pytest.raises(ValueError):
        frame_crc32(left.astype(np.float32))


def test_trailer_layout(stream):
    _, _, data = stream
    (index_offset,) = struct.unpack_from("<Q", data, len(data) - TRAILER_SIZE)
    (count,) = struct.unpack_from("<I", data, index_offset)
    assert count == 3 and index_offset + 4 + 12 * count == len(data) - TRAILER_SIZE


@pytest.mark.parametrize("extra", [b"\x00", b"garbage" * 3, b"\x89END" * 2])
def test_appended_data_is_not_called_truncation(tmp_path, stream, extra):
    """A whole stream with bytes after its trailer: the error says so (and where), instead of
    calling the file truncated; a cut file is still called truncated."""
    data = stream[2]
    path = tmp_path / "appended.svc"
    path.write_bytes(data + extra)
    with pytest.raises(BitstreamError, match=f"{len(extra)} bytes of other data after the end of the stream"):
        SvcReader(path)
    path.write_bytes(data[:-3])
    with pytest.raises(BitstreamError, match="truncated"):
        SvcReader(path)


def test_limits_are_enforced_before_reading(tmp_path):
    """Headers that lie (valid CRCs) are refused on the header, naming the file."""
    from svcodec.container.mutate import crafted_stream

    cases = {"65535x65535": crafted_stream(65535, 65535, slices=4),
             "8193x8": crafted_stream(8193, 8),
             "frame_count=16777216": crafted_stream(8, 8, claimed_frames=1 << 24),
             "more than": crafted_stream(8, 8, claimed_frames=1000),
             "gop_size=4097": crafted_stream(8, 8, gop_size=4097),
             "not a plain name": crafted_stream(8, 8, model_name="../weights/x"),
             "66 substreams": crafted_stream(8, 8, slices=32)}
    for message, data in cases.items():
        path = tmp_path / "lie.svc"
        path.write_bytes(data)
        with pytest.raises(BitstreamError) as exc:
            SvcReader(path).read_gop(0)
        assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value), (message, exc.value)
    assert len(cases["65535x65535"]) == 175
    # inside the limits the same builder makes a stream the reader accepts
    path.write_bytes(crafted_stream(8192, 4320, frames=3, gop_size=2))
    r = SvcReader(path)
    assert (r.sequence.width, r.sequence.frame_count, len(r.gops)) == (8192, 3, 2)


def test_writer_handles_255_byte_names_and_leaves_no_temporary(tmp_path):
    name = "ü" * 100 + "s" * 51 + ".svc"  # 255 bytes in UTF-8, the usual limit
    assert len(name.encode()) == 255
    path = write(tmp_path / name, make_gops((2,)))
    assert SvcReader(path).sequence.frame_count == 2
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(RuntimeError):
        with SvcWriter(tmp_path / name, make_seq()) as w:
            w.write_gop(make_gops((1,))[0])
            raise RuntimeError("encoder failed")
    assert os.listdir(tmp_path) == [name] and SvcReader(path).sequence.frame_count == 2
    with pytest.raises(InputError, match="already exists"):
        SvcWriter(tmp_path / name, make_seq(), overwrite=False)
    assert os.listdir(tmp_path) == [name]


def test_sample_aspect_travels_in_a_2_1_header_and_square_streams_stay_2_0(tmp_path):
    """Format 2.1: a source's non-square pixel shape is an extension item; a stream without
    one is written as 2.0, as before; svc info's dict names the ratio."""
    from svcodec.container.format import parse_sequence_header
    from svcodec.container.mutate import sequence_header_bytes

    gops = make_gops((2,))
    plain, wide = tmp_path / "plain.svc", tmp_path / "wide.svc"
    write(plain, gops)
    write(wide, gops, make_seq(sample_aspect=(64, 45)))
    r_plain, _ = read_all(plain)
    r_wide, units = read_all(wide)
    assert r_plain.version == (2, 0) and r_plain.sequence.sample_aspect is None
    assert r_plain.sequence.to_dict()["sample_aspect"] == "1:1"
    assert r_wide.version == (2, 1) and r_wide.sequence.sample_aspect == (64, 45)
    assert r_wide.sequence.to_dict()["sample_aspect"] == "64:45"
    assert len(units) == 1 and wide.stat().st_size == plain.stat().st_size + 6  # tag, length, u16 x 2
    # the item is exactly tag 1, length 4, then the two u16
    header = make_seq(sample_aspect=(64, 45)).to_bytes()
    assert header[-10:-4] == bytes([1, 4]) + struct.pack("<HH", 64, 45)

    def parsed(extension, minor=1):
        data = sequence_header_bytes(64, 48, extension=extension, minor=minor)
        return parse_sequence_header(data, len(data) + 100)[0]

    # unknown tags (a later minor version's) are skipped; known ones still read
    assert parsed(bytes([9, 3, 1, 2, 3, 1, 4]) + struct.pack("<HH", 4, 3)).sample_aspect == (4, 3)
    # before 2.1 the extension bytes had no meaning: ignored, whatever they hold
    assert parsed(b"\x01\x04\x00\x00\x00\x00\xff", minor=0).sample_aspect is None
    for bad, why in ((b"\x01", "needs 2 bytes"), (b"\x01\x04\x04\x00", "needs 4 bytes"),
                     (b"\x01\x02\x04\x00", "of 2 bytes, expected 4"),
                     (b"\x01\x04" + struct.pack("<HH", 0, 1), "sample_aspect num=0"),
                     (b"\x01\x04" + struct.pack("<HH", 4, 0), "sample_aspect den=0"),
                     (b"\x01\x04" + struct.pack("<HH", 2, 2), "2:2 is square"),
                     (2 * (b"\x01\x04" + struct.pack("<HH", 4, 3)), "appears twice")):
        with pytest.raises(BitstreamError, match=why):
            parsed(bad)
    for bad in ((0, 1), (1, 65536), (4,), [4, 3], (1, 1)):
        with pytest.raises(ValueError):
            make_seq(sample_aspect=bad).to_bytes()


def test_random_extension_data_parses_or_is_refused_cleanly():
    """Any extension bytes under a valid CRC: a 2.1 header parses or raises BitstreamError,
    never anything else; what parses has a valid (non-square) ratio or none."""
    from svcodec.container.format import parse_sequence_header
    from svcodec.container.mutate import sequence_header_bytes

    rng = random.Random(11)
    outcomes = set()
    for _ in range(600):
        items = []
        for _ in range(rng.randrange(0, 4)):  # mostly well-formed items, some cut short
            tag = rng.choice([1, 1, 2, 255])
            value = bytes(rng.randrange(256) for _ in range(rng.choice([4, 4, 0, 3, 7])))
            items.append(bytes([tag, len(value) if rng.random() < 0.9 else rng.randrange(256)]) + value)
        ext = b"".join(items)[: rng.choice([10**6, rng.randrange(0, 20)])]
        data = sequence_header_bytes(64, 48, extension=ext, minor=1)
        try:
            seq = parse_sequence_header(data, len(data) + 100)[0]
        except BitstreamError:
            outcomes.add("refused")
            continue
        outcomes.add("parsed")
        if seq.sample_aspect is not None:
            n, d = seq.sample_aspect
            assert 1 <= n <= 0xFFFF and 1 <= d <= 0xFFFF and n != d
    assert outcomes == {"parsed", "refused"}
