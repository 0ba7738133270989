"""The codec loop through the Python API (svcodec.codec.api), mostly with the tiny random model:
exact reconstruction, headers, padding, GOPs, determinism, rate accounting and bad streams."""

import os
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import stereo_frames
from svcodec.codec.api import decode_file, encode_frames, encode_pairs, iter_decode
from svcodec.codec.intra import encode_intra
from svcodec.codec.session import deterministic_inference, to_frames, to_tensor
from svcodec.container import (AccessUnit, Colour, FrameType, Substream, SubstreamKind, SvcReader, SvcWriter,
                               frame_crc32)
from svcodec.container.format import AU_HEADER_SIZE, GOP_HEADER_SIZE
from svcodec.errors import BitstreamError, InputError, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

FPS = Fraction(30000, 1001)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def encoder_recon(codec, left, right, rate):
    """The encoder's reconstruction of one pair, computed here from the model directly."""
    dev = deterministic_inference("cpu")
    res = encode_intra(codec.model, codec.z_tables, to_tensor(left, right, dev), rate)
    return to_frames(res.x_hat, *left.shape[:2])


def access_units(path):
    return [au for _, aus in SvcReader(path) for au in aus]


def no_leftovers(folder, allowed=()):
    names = set(os.listdir(folder)) - set(allowed)
    assert not names, f"unexpected files left in {folder}: {sorted(names)}"


@pytest.fixture(scope="module")
def clip():
    return stereo_frames(3, 48, 64, seed=1)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_codec, clip):
    lefts, rights = clip
    path = tmp_path_factory.mktemp("enc") / "clip.svc"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # all-intra (gop 1): these tests are about the I-frame path; P-frames: test_inter.py
        report = encode_frames(lefts, rights, path, rate=2.0, gop=1, fps=FPS, codec=tiny_codec)
    finally:
        torch.set_num_threads(before)
    return path, report


# ------------------------------------------------------------------- exact reconstruction


def test_decode_reproduces_encoder_reconstruction_bit_for_bit(encoded, tiny_codec, clip):
    path, report = encoded
    lefts, rights = clip
    dl, dr = decode_file(path, codec=tiny_codec)
    aus = access_units(path)
    assert len(dl) == len(dr) == len(aus) == 3
    for i, (au, l, r) in enumerate(zip(aus, dl, dr)):
        assert l.dtype == np.uint8 and l.shape == (48, 64, 3) and r.shape == (48, 64, 3)
        assert frame_crc32(l, r) == au.recon_crc32
        el, er = encoder_recon(tiny_codec, lefts[i], rights[i], 2.0)
        np.testing.assert_array_equal(l, el)
        np.testing.assert_array_equal(r, er)
        # the PSNR the encoder reports is that of what the decoder outputs
        assert report.per_frame[i].psnr_left == pytest.approx(psnr(lefts[i], l), abs=1e-9)
        assert report.per_frame[i].psnr_right == pytest.approx(psnr(rights[i], r), abs=1e-9)
    # the latent substreams carry real symbols, not just empty streams
    assert all(len(s.data) > 8 for au in aus for s in au.substreams)


def test_decode_with_weights_path_and_iter_decode(encoded, tiny_weights, tiny_codec):
    path, _ = encoded
    a = decode_file(path, codec=tiny_codec)
    b = decode_file(path, weights=str(tiny_weights))
    items = list(iter_decode(path, codec=tiny_codec))
    assert [i for i, _, _ in items] == [0, 1, 2]
    for k in range(3):
        np.testing.assert_array_equal(a[0][k], b[0][k])
        np.testing.assert_array_equal(a[1][k], items[k][2])


def test_header_preserves_count_size_fps_and_model(encoded, tiny_codec):
    path, report = encoded
    r = SvcReader(path)
    seq = r.sequence
    assert (seq.width, seq.height, seq.frame_count) == (64, 48, 3)
    assert Fraction(seq.fps_num, seq.fps_den) == FPS
    assert seq.gop_size == 1 and seq.rate == 2.0 and seq.colour == Colour.RGB
    assert seq.model_id == tiny_codec.model_id and seq.model_name == "tiny"
    assert (report.frames, report.width, report.height) == (3, 64, 48)
    assert report.bytes == os.path.getsize(path) == r.file_size
    assert report.payload_bytes == r.payload_bytes()
    assert [f.bytes for f in report.per_frame] == [au.payload_bytes() for au in access_units(path)]
    for f, au in zip(report.per_frame, access_units(path)):
        assert f.bytes_left + f.bytes_right == f.bytes
        assert f.bytes_left == sum(len(s.data) for s in au.substreams if s.view == 0)
        assert f.frame_type == "I" and au.frame_type == FrameType.I


def test_substream_layout_is_one_texture_substream_per_view(encoded, tiny_codec):
    path, _ = encoded
    for au in access_units(path):
        assert [(int(s.view), int(s.kind), s.slot) for s in au.substreams] == [(0, 4, 0), (1, 4, 0)]


def test_odd_size_is_padded_and_cropped(tmp_path, tiny_codec):
    """A 37x29 clip codes exactly like its replicate-padded 64x64 version; the decoded frames
    are that version's decoded frames cropped back to 37x29."""
    lefts, rights = stereo_frames(2, 29, 37, seed=3)
    pad = lambda f: np.pad(f, ((0, 64 - 29), (0, 64 - 37), (0, 0)), mode="edge")
    small = encode_frames(lefts, rights, tmp_path / "odd.svc", codec=tiny_codec)
    big = encode_frames([pad(f) for f in lefts], [pad(f) for f in rights], tmp_path / "pad.svc",
                        codec=tiny_codec)
    assert (small.width, small.height) == (37, 29)
    seq = SvcReader(tmp_path / "odd.svc").sequence
    assert (seq.width, seq.height) == (37, 29)
    for a, b in zip(access_units(tmp_path / "odd.svc"), access_units(tmp_path / "pad.svc")):
        assert [s.data for s in a.substreams] == [s.data for s in b.substreams]
    sl, sr = decode_file(tmp_path / "odd.svc", codec=tiny_codec)
    bl, br = decode_file(tmp_path / "pad.svc", codec=tiny_codec)
    assert sl[0].shape == (29, 37, 3)
    for k in range(2):
        np.testing.assert_array_equal(sl[k], bl[k][:29, :37])
        np.testing.assert_array_equal(sr[k], br[k][:29, :37])


def test_gop_splitting(tmp_path, tiny_codec):
    lefts, rights = stereo_frames(5, 32, 48, seed=4)
    encode_frames(lefts, rights, tmp_path / "g2.svc", gop=2, codec=tiny_codec)
    encode_frames(lefts, rights, tmp_path / "g32.svc", gop=32, codec=tiny_codec)
    r = SvcReader(tmp_path / "g2.svc")
    assert len(r) == 3
    assert [g.frame_count for g in r.gops] == [2, 2, 1]
    assert [g.first_frame for g in r.gops] == [0, 2, 4]
    assert [r.gop_of_frame(i) for i in range(5)] == [0, 0, 1, 1, 2]
    assert len(SvcReader(tmp_path / "g32.svc")) == 1
    # every GOP starts with an I-frame; the rest are P-frames predicted inside the GOP
    a, b = access_units(tmp_path / "g2.svc"), access_units(tmp_path / "g32.svc")
    assert [au.frame_index for au in a] == list(range(5))
    assert [au.frame_type for au in a] == [FrameType.I, FrameType.P, FrameType.I, FrameType.P, FrameType.I]
    assert [au.frame_type for au in b] == [FrameType.I] + [FrameType.P] * 4
    # the first I-frame does not depend on the GOP size
    assert [s.data for s in a[0].substreams] == [s.data for s in b[0].substreams]
    items = list(iter_decode(tmp_path / "g2.svc", codec=tiny_codec))
    assert [i for i, _, _ in items] == [0, 1, 2, 3, 4]


def test_two_encodes_give_identical_bytes(tmp_path, tiny_codec, clip):
    lefts, rights = clip
    encode_frames(lefts, rights, tmp_path / "a.svc", gop=2, fps=FPS, codec=tiny_codec)
    encode_frames(lefts, rights, tmp_path / "b.svc", gop=2, fps=FPS, codec=tiny_codec)
    a, b = (tmp_path / "a.svc").read_bytes(), (tmp_path / "b.svc").read_bytes()
    assert a == b and len(a) > 500


def test_thread_count_does_not_change_output(tmp_path, tiny_codec):
    lefts, rights = stereo_frames(1, 40, 64, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encode_frames(lefts, rights, tmp_path / "t1.svc", codec=tiny_codec)
        d1 = decode_file(tmp_path / "t1.svc", codec=tiny_codec)
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
        encode_frames(lefts, rights, tmp_path / "t2.svc", codec=tiny_codec)
        d2 = decode_file(tmp_path / "t1.svc", codec=tiny_codec)
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "t1.svc").read_bytes() == (tmp_path / "t2.svc").read_bytes()
    for x, y in zip(d1[0] + d1[1], d2[0] + d2[1]):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------- rate


def test_real_size_matches_model_estimate(tmp_path, shipped_codec):
    """With trained weights the range coder reaches the model's own rate estimate: real file
    size within 3% of est_bits/8 + container overhead. (A random-init model is no use here:
    its latents sit far outside its predicted Gaussians, so the estimate is meaningless.)"""
    lefts, rights = stereo_frames(1, 128, 128, seed=6)
    report = encode_frames(lefts, rights, tmp_path / "r.svc", rate=3.0, codec=shipped_codec)
    overhead = report.bytes - report.payload_bytes
    assert report.payload_bytes > 1000 and 0 < overhead < report.payload_bytes
    est = report.est_bits / 8 + overhead
    assert abs(report.bytes / est - 1) < 0.03, (report.bytes, est)
    assert report.est_bits == pytest.approx(sum(f.est_bits for f in report.per_frame))
    dl, _ = decode_file(tmp_path / "r.svc", codec=shipped_codec)
    # barely trained weights (~20 dB); a random model gives ~8 dB on this clip
    assert psnr(lefts[0], dl[0]) > 14


def test_fractional_rate_round_trips(tmp_path, tiny_codec):
    lefts, rights = stereo_frames(2, 32, 32, seed=7)
    sizes = {}
    for rate in (1.0, 1.3, 1.5, 2.0):
        path = tmp_path / f"r{rate}.svc"
        report = encode_frames(lefts, rights, path, rate=rate, gop=1, codec=tiny_codec)
        seq = SvcReader(path).sequence
        assert seq.rate == rate  # 1.3 is not a float32; it reads back as 1.3 all the same
        dl, dr = decode_file(path, codec=tiny_codec)
        for i, au in enumerate(access_units(path)):
            assert frame_crc32(dl[i], dr[i]) == au.recon_crc32
            np.testing.assert_array_equal(dl[i], encoder_recon(tiny_codec, lefts[i], rights[i], rate)[0])
        sizes[rate] = report.payload_bytes
    # the rate is used: higher rate points spend more bits (larger latent gains)
    assert sizes[1.0] < sizes[1.3] < sizes[1.5] < sizes[2.0]


def test_bad_encoder_arguments(tmp_path, tiny_codec):
    lefts, rights = stereo_frames(1, 16, 16)
    for kw in ({"rate": 3.5}, {"rate": -0.1}, {"gop": 0}, {"gop": 70000}):
        with pytest.raises(InputError):
            encode_frames(lefts, rights, tmp_path / "x.svc", codec=tiny_codec, **kw)
    with pytest.raises(InputError):
        encode_frames(lefts, rights + rights, tmp_path / "x.svc", codec=tiny_codec)
    with pytest.raises(InputError, match="no frames"):
        encode_pairs(iter([]), tmp_path / "x.svc", width=16, height=16, fps=Fraction(30), codec=tiny_codec)
    no_leftovers(tmp_path)


def test_failed_encode_leaves_existing_output_untouched(tmp_path, tiny_codec):
    out = tmp_path / "x.svc"
    out.write_bytes(b"previous")
    lefts, rights = stereo_frames(2, 32, 32)
    lefts[1] = np.zeros((64, 64, 3), np.uint8)  # a frame of another size mid-stream
    with pytest.raises(Exception):
        encode_frames(lefts, rights, out, codec=tiny_codec)
    assert out.read_bytes() == b"previous"
    no_leftovers(tmp_path, {"x.svc"})


# ------------------------------------------------------------------- wrong model, bad streams


def test_decoding_with_another_model_is_model_error(encoded, other_codec, other_weights, tiny_codec):
    path, _ = encoded
    assert other_codec.model_id != tiny_codec.model_id
    with pytest.raises(ModelError, match="weights"):
        decode_file(path, codec=other_codec)
    with pytest.raises(ModelError):
        decode_file(path, weights=str(other_weights))
    with pytest.raises(ModelError, match="does not ship"):
        decode_file(path)  # the stream names "tiny", which is not in weights/
    with pytest.raises(ModelError, match="not found"):
        decode_file(path, weights=str(other_weights.parent / "missing.safetensors"))


def _au_start(path, gop, au_in_gop):
    r = SvcReader(path)
    pos = r.gop_offsets[gop] + GOP_HEADER_SIZE
    data = open(path, "rb").read()
    for _ in range(au_in_gop):
        pos += struct.unpack_from("<I", data, pos)[0]
    return pos, struct.unpack_from("<I", data, pos)[0]


@pytest.mark.parametrize("where", ["recon_crc", "table", "payload_start", "payload_mid", "last_byte"])
def test_flipped_byte_in_access_unit_is_bitstream_error(tmp_path, encoded, tiny_codec, where):
    path, _ = encoded
    start, size = _au_start(path, 2, 0)  # frame 2: the third GOP's (only) AU
    payload = access_units(path)[2].payload_bytes()
    payload_start = size - 4 - payload
    assert AU_HEADER_SIZE < payload_start < size // 2
    offset = {"recon_crc": 10, "table": AU_HEADER_SIZE + 1, "payload_start": payload_start + 2,
              "payload_mid": size // 2, "last_byte": size - 1}[where]
    data = bytearray(path.read_bytes())
    data[start + offset] ^= 0x10
    bad = tmp_path / "bad.svc"
    bad.write_bytes(bytes(data))
    # the reader opens (headers and index are intact), decoding stops at frame 2
    frames = []
    with pytest.raises(BitstreamError, match="access unit 2"):
        for i, _, _ in iter_decode(bad, codec=tiny_codec):
            frames.append(i)
    assert frames == [0, 1]


def rewrite(path, out, mutate):
    """Re-mux `path` into `out` after mutate(list of AUs); the writer recomputes every CRC."""
    r = SvcReader(path)
    aus = [AccessUnit(a.frame_index, a.frame_type, a.recon_crc32, list(a.substreams))
           for _, g in r for a in g]
    mutate(aus)
    with SvcWriter(out, r.sequence) as w:
        for g in r.gops:
            w.write_gop(aus[g.first_frame:g.first_frame + g.frame_count])
    return out


def _replace(au, k, data):
    s = au.substreams[k]
    au.substreams[k] = type(s)(s.view, s.kind, s.slot, data)


def _garbled_head(data, n=8):
    return np.random.default_rng(1).bytes(n) + data[n:]  # where the hyper-latent is coded


MUTATIONS = {  # aus[1] holds the texture substreams of the left and the right view
    "latent_garbage": lambda aus: _replace(aus[1], 1, np.random.default_rng(0).bytes(len(aus[1].substreams[1].data))),
    "hyper_garbage": lambda aus: _replace(aus[1], 0, _garbled_head(aus[1].substreams[0].data)),
    "latent_truncated": lambda aus: _replace(aus[1], 1, aus[1].substreams[1].data[:-4]),
    "latent_odd_length": lambda aus: _replace(aus[1], 1, aus[1].substreams[1].data[:-1]),
    "latent_empty": lambda aus: _replace(aus[1], 1, b""),
    # (a table in another order or with a substream missing is refused by the container itself:
    # tests/test_container.py::test_version_2_tables_are_fixed_per_frame_type)
    "recon_crc_changed": lambda aus: setattr(aus[1], "recon_crc32", aus[1].recon_crc32 ^ 1),
}


def test_p_frame_in_an_all_intra_stream_is_bitstream_error(tmp_path, encoded, tiny_codec):
    # re-mux frames 0 and 1 into one GOP with frame 1 marked P: the stream names no P-frame weights
    path, _ = encoded
    r = SvcReader(path)
    aus = [a for _, g in r for a in g]
    aus[1].frame_type = FrameType.P
    aus[1].substreams[:0] = [Substream(v, SubstreamKind.MOTION, 0, b"") for v in (0, 1)]  # a P-frame's table
    import dataclasses

    with SvcWriter(tmp_path / "bad.svc", dataclasses.replace(r.sequence, gop_size=2)) as w:
        w.write_gop(aus[:2])
        w.write_gop(aus[2:])
    with pytest.raises(BitstreamError, match="frame 1.*without P-frame weights"):
        decode_file(tmp_path / "bad.svc", codec=tiny_codec)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_corrupt_payload_with_valid_crcs_is_bitstream_error(tmp_path, encoded, tiny_codec, name):
    """Payload damage the container cannot see: the codec must still stop with BitstreamError
    (range decoder failure, layout check or reconstruction checksum), never another error."""
    path, _ = encoded
    bad = rewrite(path, tmp_path / "bad.svc", MUTATIONS[name])
    assert SvcReader(bad).payload_bytes() > 0  # the container itself is valid
    frames = []
    with pytest.raises(BitstreamError, match="frame 1|I-frame|range decoder|substream"):
        for i, _, _ in iter_decode(bad, codec=tiny_codec):
            frames.append(i)
    assert frames == [0]


def test_rewrite_without_mutation_decodes(tmp_path, encoded, tiny_codec):
    # control for the test above: re-muxing alone changes nothing
    path, _ = encoded
    out = rewrite(path, tmp_path / "same.svc", lambda aus: None)
    assert out.read_bytes() == path.read_bytes()
    assert len(decode_file(out, codec=tiny_codec)[0]) == 3


# ------------------------------------------------------------------- weights files


def test_weights_round_trip_and_identity(tmp_path, tiny_codec, tiny_weights):
    from safetensors.torch import load_file

    from svcodec.container import model_id_of_file
    from svcodec.zoo import load_intra, save_intra

    assert tiny_codec.model_id == model_id_of_file(tiny_weights) and len(tiny_codec.model_id) == 16
    # saving the loaded model again stores the same tensors and loads the same model
    # (not the same file bytes: safetensors writes the metadata keys in random order)
    again = tmp_path / "again.safetensors"
    save_intra(tiny_codec.model, again)
    a, b = load_file(str(tiny_weights)), load_file(str(again))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    reloaded = load_intra(again)
    for (k, x), (_, y) in zip(tiny_codec.model.state_dict().items(), reloaded.model.state_dict().items()):
        assert torch.equal(x, y), k
    for ta, tb in zip(tiny_codec.z_tables, reloaded.z_tables):
        assert ta.low == tb.low and np.array_equal(ta.counts, tb.counts)


def test_unreadable_weights_are_model_error(tmp_path):
    from svcodec.zoo import load_intra

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file" * 4)
    with pytest.raises(ModelError, match="not a valid"):
        load_intra(bad)
    with pytest.raises(ModelError, match="not found"):
        load_intra(tmp_path / "nope.safetensors")


def test_weights_missing_a_tensor_are_model_error(tmp_path, tiny_weights):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from svcodec.zoo import load_intra

    tensors = load_file(str(tiny_weights))
    with safe_open(str(tiny_weights), framework="pt") as f:
        meta = f.metadata()
    del tensors["log_gain"]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(ModelError):
        load_intra(broken)


def test_saving_the_same_model_twice_gives_the_same_file(tmp_path, tiny_weights):
    from svcodec.zoo import load_intra, save_intra

    model = load_intra(tiny_weights).model
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert save_intra(model, a) == save_intra(model, b)
    assert a.read_bytes() == b.read_bytes()


def test_frame_of_wrong_size_is_input_error(tmp_path, tiny_codec):
    from svcodec.codec.session import encode_pairs
    from svcodec.errors import InputError

    good = np.zeros((16, 16, 3), np.uint8)
    bad = np.zeros((16, 20, 3), np.uint8)
    out = tmp_path / "x.svc"
    with pytest.raises(InputError, match="frame 1"):
        encode_pairs([(good, good), (bad, good)], out, width=16, height=16, fps=Fraction(30), codec=tiny_codec)
    assert not out.exists()
