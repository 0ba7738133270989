"""Damaged and cut streams (docs/RELIABILITY.md, issue 7 item 4): `--conceal` repeats the last
good frame pair until the next intact GOP and says which frames it concealed; `--partial`
decodes every complete GOP of a cut file. Tiny random models and 24x40 frames keep it fast."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from svcodec.cli.main import main
from svcodec.codec.api import decode_file, encode_frames
from svcodec.codec.session import Recovery
from svcodec.container import AccessUnit, SvcReader, SvcWriter
from svcodec.container.format import GOP_HEADER_SIZE
from svcodec.errors import BitstreamError
from test_inter import make_tiny_inter, moving_clip

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, GOP = 7, 3  # GOPs: frames 0-2 (I P P), 3-5 (I P P), 6 (I)


@pytest.fixture(scope="module")
def models(tiny_codec, tiny_weights, tmp_path_factory):
    """(ModelSet, CLI weight options) for the tiny intra + inter pair."""
    from svcodec.zoo import ModelSet, load_inter, save_inter

    path = tmp_path_factory.mktemp("conceal_inter") / "tiny_inter.safetensors"
    save_inter(make_tiny_inter(7), path)
    return ModelSet(tiny_codec, load_inter(path)), ["--weights", tiny_weights, "--inter-weights", path]


@pytest.fixture(scope="module")
def stream(models, tmp_path_factory):
    """(path, bytes, full decode as a list of (left, right)) of a 7-frame I/P stream."""
    lefts, rights = moving_clip(FRAMES, h=24, w=40)
    path = tmp_path_factory.mktemp("conceal") / "clip.svc"
    encode_frames(lefts, rights, path, rate=1.5, gop=GOP, fps=Fraction(25), codec=models[0])
    dl, dr = decode_file(path, codec=models[0])
    assert len(dl) == FRAMES
    return path, path.read_bytes(), list(zip(dl, dr))


def decode(path, models, **recovery):
    rec = Recovery(**recovery)
    lefts, rights = decode_file(path, codec=models[0], recovery=rec)
    return list(zip(lefts, rights)), rec


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def rewritten(src, dst, damage):
    """A copy of `src` with every CRC valid, in which `damage(frame_index, substream data)` may
    change payload bytes: damage only the range decoder and the reconstruction CRC can catch."""
    reader = SvcReader(src)
    with SvcWriter(dst, reader.sequence) as w:
        for _, units in reader:
            for au in units:
                for s in au.substreams:
                    s.data = damage(au.frame_index, bytes(s.data))
            w.write_gop([AccessUnit(au.frame_index, au.frame_type, au.recon_crc32, au.substreams)
                         for au in units])
    return dst


def layout(path):
    with SvcReader(path) as r:
        return r.gop_offsets, r.gops


def with_frame_4_flipped(data: bytes, offsets) -> bytes:
    """A bit flipped in the middle of frame 4's access unit (GOP 1, after the I-frame 3)."""
    au3 = offsets[1] + GOP_HEADER_SIZE
    au4 = au3 + int.from_bytes(data[au3:au3 + 4], "little")
    damaged = bytearray(data)
    damaged[au4 + 20] ^= 0x10
    return bytes(damaged)


# ------------------------------------------------------------------ cut files


def test_partial_decodes_every_complete_gop_before_any_cut(tmp_path, models, stream):
    path, data, full = stream
    offsets, gops = layout(path)
    index_at = offsets[-1] + GOP_HEADER_SIZE + gops[-1].data_length
    cuts = {  # cut offset -> complete frames before it
        offsets[0] + 5: 0,  # inside the first GOP header
        offsets[1] - 1: 0,  # one byte short of GOP 0
        offsets[1]: 3,  # exactly at a GOP boundary
        offsets[1] + GOP_HEADER_SIZE: 3,  # GOP 1 header complete, no data
        offsets[2] - 7: 3,  # inside GOP 1's last access unit
        offsets[2] + 30: 6,  # inside the last GOP
        index_at: 7,  # every GOP, no index
        len(data) - 1: 7,  # inside the trailer
    }
    for cut, complete in cuts.items():
        cut_file = write(tmp_path, f"cut{cut}.svc", data[:cut])
        with pytest.raises(BitstreamError, match="truncated"):  # without --partial: refused
            decode_file(cut_file, codec=models[0])
        frames, rec = decode(cut_file, models, partial=True)
        assert same(frames, full[:complete]), cut
        assert rec.frames_decoded == complete and rec.concealed == []
        assert rec.declared_frames == FRAMES
        assert (rec.cut is not None) == (complete < FRAMES), (cut, rec.cut)
    # the sequence header itself is needed
    with pytest.raises(BitstreamError, match="truncated"):
        decode(write(tmp_path, "head.svc", data[:offsets[0] - 3]), models, partial=True)


def test_cli_partial_says_how_many_frames_it_recovered(tmp_path, models, stream):
    path, data, full = stream
    offsets, _ = layout(path)
    cut_file = write(tmp_path, "cut.svc", data[:offsets[2] - 7])
    refused = svc("decode", cut_file, "-f", "png", "-q", *models[1])
    assert refused.exit_code == 1 and "--partial" in refused.stderr and str(cut_file) in refused.stderr
    assert not (tmp_path / "cut.frames").exists()

    res = svc("decode", cut_file, "-f", "png", "-q", "--partial", *models[1])
    assert res.exit_code == 0, res.output
    (warning,) = [line for line in res.stderr.splitlines() if line.startswith("svc: warning: ")]
    assert f"{cut_file}: " in warning and "recovered 3 of 7 frames" in warning
    written = sorted((tmp_path / "cut.frames" / "left").iterdir())
    assert len(written) == 3
    assert np.array_equal(np.asarray(Image.open(written[2])), full[2][0])

    empty = write(tmp_path, "empty.svc", data[:offsets[1] - 1])  # not even one complete GOP
    res = svc("decode", empty, "-f", "png", "-q", "--partial", *models[1])
    assert res.exit_code == 1 and "no frame could be decoded" in res.stderr
    assert not (tmp_path / "empty.frames").exists()


# ------------------------------------------------------------------ concealment


def test_conceal_repeats_the_last_good_pair_until_the_next_gop(tmp_path, models, stream):
    path, data, full = stream
    offsets, gops = layout(path)
    # a flipped bit inside frame 4's access unit: the AU CRC catches it
    au4 = with_frame_4_flipped(data, offsets)
    # payload damage with every CRC repaired: the range decoder / reconstruction CRC catch it
    payload4 = rewritten(path, tmp_path / "payload4.svc",
                         lambda i, d: bytes(b ^ 0x5A for b in d) if i == 4 else d)
    for damaged in (write(tmp_path, "au4.svc", bytes(au4)), payload4):
        with pytest.raises(BitstreamError, match="frame 4|access unit 4"):
            decode_file(damaged, codec=models[0])
        frames, rec = decode(damaged, models, conceal=True)
        assert rec.concealed == [4, 5]
        assert same(frames, full[:4] + [full[3], full[3]] + full[6:])
        assert len(rec.problems) == 1 and rec.problems[0].startswith("frames 4-5: ")


def test_conceal_a_gop_whose_header_is_damaged(tmp_path, models, stream):
    path, data, full = stream
    offsets, _ = layout(path)
    header1 = bytearray(data)
    header1[offsets[1] + 2] ^= 0x01
    both = bytearray(header1)
    both[-2] ^= 0x01  # the trailer too: GOP 2 is found by searching for the next intact header
    for damaged, name in ((header1, "header1.svc"), (both, "both.svc")):
        p = write(tmp_path, name, bytes(damaged))
        with pytest.raises(BitstreamError):
            decode_file(p, codec=models[0])
        frames, rec = decode(p, models, conceal=True)
        assert rec.concealed == [3, 4, 5], name
        assert same(frames, full[:3] + [full[2]] * 3 + full[6:]), name
    # without --conceal, --partial still refuses damage (it only forgives the cut)
    with pytest.raises(BitstreamError, match="GOP 1 header"):
        decode(write(tmp_path, "h.svc", bytes(header1)), models, partial=True)


def test_conceal_before_any_good_frame_shows_grey(tmp_path, models, stream):
    path, data, full = stream
    offsets, _ = layout(path)
    first = bytearray(data)
    first[offsets[0] + GOP_HEADER_SIZE + 20] ^= 0x80  # inside frame 0
    frames, rec = decode(write(tmp_path, "first.svc", bytes(first)), models, conceal=True)
    assert rec.concealed == [0, 1, 2]
    assert all((f[0] == 128).all() and (f[1] == 128).all() for f in frames[:3])
    assert same(frames[3:], full[3:])


def test_conceal_with_start_and_count(tmp_path, models, stream):
    path, data, full = stream
    offsets, _ = layout(path)
    au4 = with_frame_4_flipped(data, offsets)
    rec = Recovery(conceal=True)
    lefts, rights = decode_file(write(tmp_path, "s.svc", bytes(au4)), codec=models[0], start=4, count=2,
                                recovery=rec)
    # frame 3 decodes (it is needed as the reference) but is not output; it is what 4-5 repeat
    assert rec.concealed == [4, 5] and same(list(zip(lefts, rights)), [full[3], full[3]])


def svc(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"SVC_DEBUG": None})


def test_cli_conceal_warns_lists_frames_and_exits_0(tmp_path, models, stream):
    path, data, full = stream
    offsets, _ = layout(path)
    au4 = with_frame_4_flipped(data, offsets)
    damaged = write(tmp_path, "d.svc", bytes(au4))

    res = svc("decode", damaged, "-f", "png", "-q", *models[1])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1].startswith(f"svc: error: {damaged}: access unit 4")
    assert not (tmp_path / "d.frames").exists()

    res = svc("decode", damaged, "-f", "png", "--json", "--conceal", *models[1])
    assert res.exit_code == 0, res.output
    (warning,) = res.stderr.strip().splitlines()
    assert warning.startswith(f"svc: warning: {damaged}: concealed 2 of 7 frames") and "frames 4-5" in warning
    summary = json.loads(res.stdout)
    assert summary["concealed_frames"] == [4, 5] and summary["decoded_frames"] == 5 and summary["frames"] == 7
    left = sorted((tmp_path / "d.frames" / "left").iterdir())
    assert len(left) == 7
    assert np.array_equal(np.asarray(Image.open(left[5])), full[3][0])

    help_text = svc("decode", "--help").output
    assert "--conceal" in help_text and "exit 0" in help_text
