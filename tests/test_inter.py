"""P-frames: bit-exact GOP round trips (I + several P pairs), the HDC-EM coding order as a real
causal dependency, determinism across encodes and thread counts, random access, and the model
set a stream names. Tiny random-init models: exactness does not depend on training."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from svcodec.container import FrameType, SubstreamKind, SvcReader
from svcodec.errors import BitstreamError, ModelError

FPS = Fraction(25)


def make_tiny_inter(seed: int):
    from svcodec.nn.inter import TINY, StereoInterCodec

    torch.manual_seed(seed)
    model = StereoInterCodec(TINY)
    with torch.no_grad():
        model.log_gain.add_(2.0)  # latents of a few units: real symbols, not only zeros
        model.log_gain_mv.add_(1.0)
        torch.nn.init.normal_(model.context.recon[-1].weight, std=0.05)  # the feature path matters
        for m in model.modules():  # HDC-FER gates start at zero; open them so HDC-FER is exercised
            if type(m).__name__ == "HdcFer":
                torch.nn.init.normal_(m.gate.weight, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_set(tiny_codec, tmp_path_factory):
    from svcodec.zoo import ModelSet, load_inter, save_inter

    path = tmp_path_factory.mktemp("inter") / "tiny_inter.safetensors"
    save_inter(make_tiny_inter(7), path)
    return ModelSet(tiny_codec, load_inter(path))


def moving_clip(n: int, h: int = 40, w: int = 72, disp: int = 3, seed: int = 0):
    """A textured scene panning right 2 px per frame; the right view sees it `disp` px left."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (h, w + 2 * n + disp + 8, 3)).astype(np.uint8)
    big = ((big.astype(np.float32) + np.roll(big, 1, 1) + np.roll(big, 1, 0)) / 3).astype(np.uint8)
    lefts = [np.ascontiguousarray(big[:, 2 * t + disp: 2 * t + disp + w]) for t in range(n)]
    rights = [np.ascontiguousarray(big[:, 2 * t: 2 * t + w]) for t in range(n)]
    return lefts, rights


def test_gop_of_i_and_p_frames_round_trips_bit_exactly(tmp_path, tiny_set):
    from svcodec.codec.api import decode_file, encode_frames

    lefts, rights = moving_clip(6)
    path = tmp_path / "ip.svc"
    report = encode_frames(lefts, rights, path, rate=1.5, gop=4, fps=FPS, codec=tiny_set)
    assert [f.frame_type for f in report.per_frame] == ["I", "P", "P", "P", "I", "P"]
    with SvcReader(path) as r:
        assert r.sequence.model_name == tiny_set.name and r.sequence.model_id == tiny_set.model_id
        aus = [au for _, units in r for au in units]
    p = aus[1]
    assert p.frame_type == FrameType.P
    # one substream per view and coder, motion first
    assert [(s.view, s.kind, s.slot) for s in p.substreams] == [
        (0, SubstreamKind.MOTION, 0), (1, SubstreamKind.MOTION, 0),
        (0, SubstreamKind.TEXTURE, 0), (1, SubstreamKind.TEXTURE, 0)]
    assert all(len(s.data) > 0 for s in p.substreams)
    dl, dr = decode_file(path, codec=tiny_set)  # every frame is also checked against its CRC
    assert len(dl) == 6
    # the decoder reproduces the encoder's reconstruction: PSNR from the decoded frames matches
    from svcodec.metrics import psnr_rgb

    for f, a, b, la, ra in zip(report.per_frame, dl, dr, lefts, rights):
        assert psnr_rgb(la, a) == pytest.approx(f.psnr_left) and psnr_rgb(ra, b) == pytest.approx(f.psnr_right)


def test_format_1_layout_decodes_to_the_same_frames(tiny_set):
    """Streams of format 1.x kept one substream per hyper-latent and per slice (and skipped only
    scale index 0); the decoder still reads that layout (only the tests write it) and gets the
    encoder's reconstruction."""
    from svcodec.codec.inter import decode_inter, encode_inter
    from svcodec.codec.intra import decode_intra, encode_intra
    from svcodec.codec.motion import make_estimator
    from svcodec.codec.session import to_tensor
    from svcodec.codec.substreams import SymbolWriter

    intra, inter = tiny_set.intra, tiny_set.inter
    lefts, rights = moving_clip(2, h=64, w=64)
    x0, x1 = to_tensor(lefts[0], rights[0], "cpu"), to_tensor(lefts[1], rights[1], "cpu")
    whole_i = encode_intra(intra.model, intra.z_tables, x0, 2.0)
    split_i = encode_intra(intra.model, intra.z_tables, x0, 2.0, SymbolWriter(split=True))
    assert len(split_i.substreams) == 2 + 2 * len(intra.model.cfg.groups) and len(whole_i.substreams) == 2
    assert sum(len(s.data) for s in whole_i.substreams) < sum(len(s.data) for s in split_i.substreams)
    for res in (whole_i, split_i):
        assert torch.equal(decode_intra(intra.model, intra.z_tables, res.substreams, (64, 64), 2.0), whole_i.x_hat)
    ref = inter.model.reference_from_intra(whole_i.x_hat)
    flow = make_estimator("dis")(x1, ref.frame)
    whole_p = encode_inter(inter.model, inter.z_tables, x1, flow, ref, 1.0)
    split_p = encode_inter(inter.model, inter.z_tables, x1, flow, ref, 1.0, SymbolWriter(split=True))
    assert [s.kind for s in split_p.substreams[:2]] == [SubstreamKind.MOTION_HYPER] * 2
    assert len(split_p.substreams) == 4 + 4 * inter.model.cfg.slices
    for res in (whole_p, split_p):  # 1.x skipped fewer near-certain positions: its own frame
        x_hat, _ = decode_inter(inter.model, inter.z_tables, res.substreams, ref, 1.0)
        assert torch.equal(x_hat, res.x_hat)
    with pytest.raises(BitstreamError, match="layout"):  # a mixture of the two is neither
        decode_inter(inter.model, inter.z_tables, whole_p.substreams[:2] + split_p.substreams[2:], ref, 1.0)


def test_rd_motion_keeps_the_candidate_of_lowest_rate_distortion_cost(tmp_path, tiny_set):
    """--motion rd codes a P-frame once per motion field and keeps the one of lowest
    lambda * MSE + bpp, whatever order the candidates come in; its stream decodes exactly."""
    from svcodec.codec.api import decode_file, encode_frames
    from svcodec.codec.inter import encode_inter, encode_inter_best
    from svcodec.codec.rdo import rd_cost
    from svcodec.codec.intra import encode_intra
    from svcodec.codec.session import to_tensor
    from svcodec.errors import InputError
    from svcodec.nn.layers import rd_lambda

    intra, inter = tiny_set.intra, tiny_set.inter
    lefts, rights = moving_clip(2, h=64, w=64)
    x0, x1 = to_tensor(lefts[0], rights[0], "cpu"), to_tensor(lefts[1], rights[1], "cpu")
    ref = inter.model.reference_from_intra(encode_intra(intra.model, intra.z_tables, x0, 2.0).x_hat)
    zero = torch.zeros(2, 2, 64, 64)
    wild = torch.from_numpy(np.random.default_rng(1).normal(0, 20, (2, 2, 64, 64)).astype(np.float32))
    one = encode_inter(inter.model, inter.z_tables, x1, wild, ref, 1.0)
    bits = 8 * sum(len(s.data) for s in one.substreams)
    mse = float(((one.x_hat.clamp(0, 1) - x1) ** 2).mean())
    assert rd_cost(x1, one, 1.0) == pytest.approx(rd_lambda(1.0) * mse + bits / (2 * 64 * 64))
    costs = {name: rd_cost(x1, encode_inter(inter.model, inter.z_tables, x1, f, ref, 1.0), 1.0)
             for name, f in (("zero", zero), ("wild", wild))}
    assert costs["zero"] < costs["wild"]  # noise for motion: many bits and a scrambled prediction
    for flows, expected in (([zero, wild], 0), ([wild, zero], 1)):
        best, k = encode_inter_best(inter.model, inter.z_tables, x1, flows, ref, 1.0)
        assert k == expected
        kept = encode_inter(inter.model, inter.z_tables, x1, zero, ref, 1.0)
        assert [s.data for s in best.substreams] == [s.data for s in kept.substreams]
    # through the codec loop: every P-frame names the motion it kept, and the stream round-trips
    lefts, rights = moving_clip(4)
    report = encode_frames(lefts, rights, tmp_path / "rd.svc", rate=1.0, gop=4, fps=FPS, codec=tiny_set, motion="rd")
    assert [f.motion for f in report.per_frame][0] == "" and {f.motion for f in report.per_frame[1:]} <= {"dis", "zero"}
    assert sum(report.p_frame_motion.values()) == 3 and set(report.p_frame_motion) <= {"dis", "zero"}
    assert len(decode_file(tmp_path / "rd.svc", codec=tiny_set)[0]) == 4  # CRC-checked per frame
    with pytest.raises(InputError, match="--motion"):
        encode_frames(lefts, rights, tmp_path / "x.svc", gop=4, fps=FPS, codec=tiny_set, motion="fast")
    assert not (tmp_path / "x.svc").exists()


def test_identical_bytes_across_encodes_and_thread_counts(tmp_path, tiny_set):
    from svcodec.codec.api import decode_file, encode_frames

    lefts, rights = moving_clip(3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encode_frames(lefts, rights, tmp_path / "a.svc", gop=3, fps=FPS, codec=tiny_set)
        torch.set_num_threads(2)
        encode_frames(lefts, rights, tmp_path / "b.svc", gop=3, fps=FPS, codec=tiny_set)
        d2 = decode_file(tmp_path / "a.svc", codec=tiny_set)
        torch.set_num_threads(1)
        d1 = decode_file(tmp_path / "a.svc", codec=tiny_set)
    finally:
        torch.set_num_threads(old)
    assert (tmp_path / "a.svc").read_bytes() == (tmp_path / "b.svc").read_bytes()
    assert all(np.array_equal(x, y) for x, y in zip(d1[0] + d1[1], d2[0] + d2[1]))


def test_seek_decode_equals_the_matching_frames_of_a_full_decode(tmp_path, tiny_set):
    from svcodec.codec.api import decode_file, encode_frames

    lefts, rights = moving_clip(5)
    path = tmp_path / "s.svc"
    encode_frames(lefts, rights, path, gop=2, fps=FPS, codec=tiny_set)
    full = decode_file(path, codec=tiny_set)
    part = decode_file(path, codec=tiny_set, start=3, count=2)  # frame 3 is a P-frame of GOP 1
    assert len(part[0]) == 2
    for i in range(2):
        assert np.array_equal(part[0][i], full[0][3 + i]) and np.array_equal(part[1][i], full[1][3 + i])


def test_all_intra_stream_names_only_the_intra_weights(tmp_path, tiny_set):
    from svcodec.codec.api import decode_file, encode_frames

    lefts, rights = moving_clip(2)
    encode_frames(lefts, rights, tmp_path / "i.svc", gop=1, fps=FPS, codec=tiny_set)
    with SvcReader(tmp_path / "i.svc") as r:
        assert r.sequence.model_name == tiny_set.intra.name
        assert all(au.frame_type == FrameType.I for _, units in r for au in units)
    assert len(decode_file(tmp_path / "i.svc", codec=tiny_set.intra)[0]) == 2


def test_other_inter_weights_are_refused(tmp_path, tiny_set, tiny_codec):
    from svcodec.codec.api import decode_file, encode_frames
    from svcodec.zoo import ModelSet, load_inter, save_inter

    lefts, rights = moving_clip(2)
    encode_frames(lefts, rights, tmp_path / "p.svc", gop=2, fps=FPS, codec=tiny_set)
    other = tmp_path / "other_inter.safetensors"
    save_inter(make_tiny_inter(8), other)
    with pytest.raises(ModelError, match="encoded with weights"):
        decode_file(tmp_path / "p.svc", codec=ModelSet(tiny_codec, load_inter(other)))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/x", "no_such_weights", "a+b+c", ".hidden"])
def test_a_stream_may_only_name_shipped_weights(name):
    from svcodec.zoo import load_set_of_stream

    with pytest.raises(ModelError):
        load_set_of_stream(name)


def test_hdc_em_order_is_causal():
    """Perturbing any slice later in the order L1, R1, L2, R2, ... leaves the mean, scale and
    table indices of every earlier slice unchanged; the right view's slice n depends on the left
    view's slice n."""
    from svcodec.entropy import scale_to_index
    from svcodec.nn.hdc_em import SliceEntropyModel

    torch.manual_seed(3)
    em = SliceEntropyModel(channels=12, prior_channels=9, slices=3, align_channels=4, max_disp=3).eval()
    phi = torch.randn(2, 9, 5, 7)
    base = torch.randn(2, 12, 5, 7) * 3

    class Recorder:
        def __init__(self, y):
            self.y, self.params = y, {}

        def slice(self, view, n, mu, scale):
            self.params[(view, n)] = (mu.clone(), scale.clone(), scale_to_index(scale))
            return torch.round(self.y[view:view + 1, n * 4:(n + 1) * 4] - mu) + mu

    with torch.no_grad():
        ref = Recorder(base)
        em.run(phi, ref)
        order = [(v, n) for n in range(3) for v in (0, 1)]
        for k, (v, n) in enumerate(order):
            y = base.clone()
            y[v, n * 4:(n + 1) * 4] += 5.0  # perturb one slice
            rec = Recorder(y)
            em.run(phi, rec)
            for j, key in enumerate(order):
                same = all(torch.equal(a, b) if torch.is_tensor(a) else np.array_equal(a, b)
                           for a, b in zip(ref.params[key], rec.params[key]))
                if j <= k:
                    assert same, f"slice {key} changed when slice {(v, n)} (later or same) was perturbed"
            if k + 1 < len(order):  # the very next slice in the order does depend on it
                nxt = order[k + 1]
                assert not torch.equal(ref.params[nxt][0], rec.params[nxt][0])


def test_decode_start_accepts_frames_and_times():
    import click

    from svcodec.cli.main import _start_frame
    from svcodec.container import SequenceHeader

    seq = SequenceHeader(width=64, height=64, fps_num=30000, fps_den=1001, gop_size=8,
                         model_id=bytes(16), model_name="x", rate=1.0, frame_count=100)
    assert _start_frame("12", seq) == 12
    assert _start_frame("1s", seq) == 29  # 29.97 fps: frame 29 is on screen at t = 1 s
    assert _start_frame("0:02.5", seq) == 74
    assert _start_frame("1:00", seq) == 1798
    for bad in ("abc", "-1s", "1:x", "nans"):
        with pytest.raises(click.BadParameter):
            _start_frame(bad, seq)


def _contexts(cfg, b, h, w, gen):
    c1, c2, c3 = cfg.ctx_ch
    x = torch.rand(b, 3, h, w, generator=gen)
    pred = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x, (0.3 * torch.randn(b, c1, h // 2, w // 2, generator=gen),
               0.3 * torch.randn(b, c2, h // 4, w // 4, generator=gen),
               0.3 * torch.randn(b, c3, h // 8, w // 8, generator=gen), pred)


def test_a_fresh_context_coder_sends_and_receives_information():
    """The collapse the first P weights trained into: with PyTorch's default init the fresh encoder
    emitted latents of std 0.04 (all rounded to the mean) and the decoder barely reacted to its
    latent. A fresh coder must start with latents that survive rounding and a decoder that reacts."""
    from svcodec.nn.inter import SMALL, StereoInterCodec

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    cc = StereoInterCodec(SMALL).context
    x, ctx = _contexts(SMALL, 2, 64, 128, gen)
    with torch.no_grad():
        y = cc.analysis(x, ctx)
        _, feature = cc.synthesis(y, ctx)
        _, moved = cc.synthesis(y + torch.randn(y.shape, generator=gen), ctx)
    assert y.std() > 0.2  # default init: 0.04
    assert (moved - feature).std() > 0.1  # a unit change of the latent reaches the decoder's feature
    assert torch.isfinite(feature).all() and feature.std() < 10  # and nothing explodes


def test_gradient_clipping_keeps_the_parts_apart():
    """A huge motion-coder gradient must not shrink the context coder's (clipped per part)."""
    from svcodec.nn.inter import TINY, StereoInterCodec
    from svcodec.train.train_inter import clipping_groups, trainable

    model = StereoInterCodec(TINY)
    trainable(model, "full")
    groups = clipping_groups(model)
    assert len(groups) == 4 and sum(len(g) for g in groups) == len(
        [n for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".quantiles")])
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-4)
    for p in model.motion.parameters():
        p.grad = torch.full_like(p, 100.0)
    before = [p.grad.clone() for p in model.context.parameters()]
    for g in groups:
        torch.nn.utils.clip_grad_norm_(g, 1.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.context.parameters()))
    motion = [p.grad for n, p in model.motion.named_parameters() if not n.endswith(".quantiles")]
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in motion])) <= 1.0 + 1e-4


@pytest.fixture(scope="module")
def shipped_set():
    from svcodec.zoo import load_set

    return load_set(need_inter=True)


def test_a_scene_cut_starts_a_new_gop(tmp_path, shipped_set):
    """Two unrelated scenes in a row (shipped weights): the first frame of the second is coded
    as an I-frame starting a new GOP, which decodes (and seeks) on its own; with scenecut off it
    is a P-frame that ruins the rest of the GOP. Continuous footage codes as without it."""
    from conftest import stereo_frames
    from svcodec.codec.api import decode_file, encode_frames

    (la, ra), (lb, rb) = stereo_frames(3, 64, 64, seed=0), stereo_frames(3, 64, 64, seed=5)
    lefts, rights = la + lb, ra + rb
    cut = encode_frames(lefts, rights, tmp_path / "cut.svc", rate=1.0, gop=16, fps=FPS, codec=shipped_set)
    assert cut.scene_cuts == [3] and [f.frame_type for f in cut.per_frame] == ["I", "P", "P", "I", "P", "P"]
    with SvcReader(tmp_path / "cut.svc") as r:
        assert [(g.first_frame, g.frame_count) for g in r.gops] == [(0, 3), (3, 3)]
    dl, dr = decode_file(tmp_path / "cut.svc", codec=shipped_set)  # CRC-checked frame by frame
    sl, _ = decode_file(tmp_path / "cut.svc", codec=shipped_set, start=4)
    assert all(np.array_equal(a, b) for a, b in zip(sl, dl[4:])) and len(sl) == 2
    plain = encode_frames(lefts, rights, tmp_path / "plain.svc", rate=1.0, gop=16, fps=FPS, codec=shipped_set,
                          scenecut=False)
    assert plain.scene_cuts == [] and [f.frame_type for f in plain.per_frame] == ["I"] + ["P"] * 5
    for c, p in zip(cut.per_frame[3:], plain.per_frame[3:]):
        assert c.psnr_left > p.psnr_left + 5  # the P-frame coder cannot rebuild an unrelated scene
    steady_l, steady_r = stereo_frames(8, 64, 64, seed=0)
    with_cut = encode_frames(steady_l, steady_r, tmp_path / "s1.svc", rate=1.0, gop=16, fps=FPS, codec=shipped_set)
    encode_frames(steady_l, steady_r, tmp_path / "s2.svc", rate=1.0, gop=16, fps=FPS, codec=shipped_set,
                  scenecut=False)
    assert with_cut.scene_cuts == [] and (tmp_path / "s1.svc").read_bytes() == (tmp_path / "s2.svc").read_bytes()
