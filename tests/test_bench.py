"""Fast checks of the benchmark tooling (no real data needed)."""

import math
import re

import numpy as np
import pytest

from svcodec.bench import anchors
from svcodec.bench.bdrate import bd_rate
from svcodec.metrics import PSNR_MAX, ms_ssim_rgb, ms_ssim_scales, psnr_rgb


def _img(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth content plus mild noise: closer to video than white noise, and chroma-friendly.
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 3, y * 3, (x + y) * 2], axis=-1) % 256
    return np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)


def test_psnr_identical_is_capped():
    a = _img()
    assert psnr_rgb(a, a) == PSNR_MAX == 100.0


def test_psnr_known_mse():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + np.uint8(10)  # MSE = 100 everywhere
    assert psnr_rgb(a, b) == pytest.approx(10 * math.log10(255**2 / 100))


def test_per_frame_psnr_follows_the_frames_and_averages_the_views():
    from svcodec.metrics import measure_stereo

    src = [np.full((16, 16, 3), 100, np.uint8)] * 2
    off10, off20 = src[0] + np.uint8(10), src[0] + np.uint8(20)
    m = measure_stereo(src, src, [off10, off20], [off10, off10], msssim=False)
    p10, p20 = 10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 400)
    assert m["psnr_per_frame"] == [pytest.approx(p10, abs=1e-3), pytest.approx((p20 + p10) / 2, abs=1e-3)]


def test_msssim_identical_and_ordered():
    a = _img(200, 240)
    assert ms_ssim_rgb(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    small = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    big = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ms_ssim_rgb(a, small) > ms_ssim_rgb(a, big) > 0


def test_msssim_matches_pytorch_msssim():
    torch = pytest.importorskip("torch")
    pm = pytest.importorskip("pytorch_msssim")
    a = _img(170, 200)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-15, 16, a.shape), 0, 255).astype(np.uint8)
    t = lambda x: torch.from_numpy(x.copy()).permute(2, 0, 1)[None].double()  # noqa: E731
    ref = float(pm.ms_ssim(t(a), t(b), data_range=255))
    assert ms_ssim_rgb(a, b) == pytest.approx(ref, abs=1e-5)


def test_msssim_small_images_use_fewer_scales():
    assert ms_ssim_scales(272, 480) == 5
    assert ms_ssim_scales(160, 160) == 4
    assert ms_ssim_scales(64, 64) == 3
    a = _img()
    assert ms_ssim_rgb(a, a) == pytest.approx(1.0)
    assert math.isnan(ms_ssim_rgb(a[:8, :8], a[:8, :8]))


def test_bd_rate_self_and_double():
    rate, psnr = [0.01, 0.02, 0.05, 0.1], [31.0, 34.0, 37.0, 40.0]
    assert bd_rate(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rate, psnr, [2 * r for r in rate], psnr) == pytest.approx(100.0, abs=1e-6)
    assert bd_rate(rate, psnr, [r / 2 for r in rate], psnr) == pytest.approx(-50.0, abs=1e-6)


def test_bd_rate_no_overlap_is_nan():
    rate, psnr = [0.01, 0.02, 0.05, 0.1], [31.0, 34.0, 37.0, 40.0]
    assert math.isnan(bd_rate(rate, psnr, rate, [45.0, 46.0, 47.0, 48.0]))
    assert math.isnan(bd_rate(rate, psnr, rate[:1], psnr[:1]))


def test_colour_roundtrip_is_near_lossless():
    a = _img()
    back = anchors.yuv420_to_rgb(*anchors.rgb_to_yuv420(a))
    assert back.shape == a.shape and back.dtype == np.uint8
    assert psnr_rgb(a, back) > 30  # only rounding and chroma subsampling are lost


def test_flat_colour_roundtrip_is_exact_to_rounding():
    a = np.zeros((8, 8, 3), np.uint8)
    a[...] = (200, 30, 90)
    assert np.abs(anchors.yuv420_to_rgb(*anchors.rgb_to_yuv420(a)).astype(int) - a).max() <= 2


def test_444_colour_roundtrip_keeps_chroma_detail():
    a = _img()
    planes = anchors.rgb_to_yuv444(a)
    assert all(p.shape == a.shape[:2] and p.dtype == np.uint8 for p in planes)
    assert psnr_rgb(a, anchors.yuv444_to_rgb(*planes)) > psnr_rgb(a, anchors.yuv420_to_rgb(*anchors.rgb_to_yuv420(a))) + 5


def test_x265_444_anchor_beats_420_in_rgb_psnr_at_equal_qp():
    left = [_img(seed=i) for i in range(2)]
    right = [_img(seed=10 + i) for i in range(2)]

    def psnr(name):
        r = anchors.run_anchor(name, left, right, qp=22, gop=2)
        dec_l, dec_r = r["decoded"]
        assert len(dec_l) == len(dec_r) == 2 and dec_l[0].shape == left[0].shape
        return np.mean([psnr_rgb(a, b) for a, b in zip(left + right, dec_l + dec_r)])

    assert anchors.encoder_options(anchors.ANCHORS["x265-444"], 22, 2) == anchors.encoder_options(
        anchors.ANCHORS["x265"], 22, 2)  # same QP and GOP settings: only the chroma format differs
    assert psnr("x265-444") > psnr("x265") + 1


def test_info_sei_detection():
    # HEVC prefix SEI (type 39) carrying user_data_unregistered (payload 5), then a VPS NAL.
    sei = b"\x00\x00\x00\x01" + bytes([39 << 1, 1, 5, 3, 1, 2, 3, 0x80])
    vps = b"\x00\x00\x01" + bytes([32 << 1, 1, 0xAA])
    assert anchors.info_sei_bytes(sei + vps, "hevc") == len(sei)
    assert anchors.info_sei_bytes(vps, "hevc") == 0


@pytest.mark.parametrize("name", ["x265", "sbs"])
def test_x265_anchor_tiny_clip(name):
    left = [_img(seed=i) for i in range(3)]
    right = [_img(seed=10 + i) for i in range(3)]
    r = anchors.run_anchor(name, left, right, qp=32, gop=3)
    dec_l, dec_r = r["decoded"]
    assert len(dec_l) == len(dec_r) == 3 and dec_l[0].shape == left[0].shape
    assert r["bits"] > 0 and r["bits"] <= 8 * r["bytes_raw"]
    p = np.mean([psnr_rgb(a, b) for a, b in zip(left + right, dec_l + dec_r)])
    assert math.isfinite(p) and p > 20


def _synth_clip(tmp_path, frames=3):
    from PIL import Image

    clip = tmp_path / "data" / "synth"
    for view, off in (("left", 0), ("right", 10)):
        (clip / view).mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(_img(seed=off + i)).save(clip / view / f"{i:04d}.png")
    return tmp_path / "data"


def test_driver_end_to_end_on_synthetic_clip(tmp_path):
    import json

    from svcodec.bench.run import main

    _synth_clip(tmp_path)
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--frames", "3", "--rates", "", "--qps", "27,32,37",
            "--anchors", "x265,sbs,x265-444", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "bench.json").read_text())
    assert {r["codec"] for r in res["results"]} == {"x265", "sbs", "x265-444"}
    assert all(r["bpp"] > 0 and r["frames"] == 3 for r in res["results"])
    assert [b["codec"] for b in res["bd_rate"]] == ["sbs", "x265-444"]
    ceilings = res["meta"]["clips"]["synth"]
    assert ceilings["colour_only_psnr_ceiling_444"] > ceilings["colour_only_psnr_ceiling"]
    assert (out / "rd_synth.png").stat().st_size > 0
    assert "| synth | x265 | 32 |" in (out / "bench.md").read_text()


def test_reuse_takes_unmeasured_codecs_from_an_earlier_run(tmp_path):
    import json

    from svcodec.bench.run import main

    data = _synth_clip(tmp_path)
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    common = ["--data", str(data), "--rates", "", "--qps", "27,32,37", "--no-msssim"]
    assert main(common + ["--frames", "3", "--anchors", "x265,sbs", "--out", str(first)]) == 0
    assert main(common + ["--frames", "3", "--anchors", "sbs", "--reuse", str(first / "bench.json"),
                          "--out", str(second)]) == 0
    rows = json.loads((second / "bench.json").read_text())["results"]
    sources = {(r["codec"], r["source"].split(" ")[0]) for r in rows}
    assert sources == {("x265", "reused"), ("sbs", "measured")}  # sbs measured anew, not taken twice
    assert len(rows) == 6
    md = (second / "bench.md").read_text()
    assert "| synth | x265 (reused) | 32 |" in md and "| synth | sbs | 32 |" in md
    # reusing the second run: its own reused x265 rows come along, still naming the first run
    fourth = tmp_path / "e"
    assert main(common + ["--frames", "3", "--anchors", "", "--reuse", str(second / "bench.json"),
                          "--out", str(fourth)]) == 0
    chained = json.loads((fourth / "bench.json").read_text())["results"]
    assert len(chained) == 6 and {r["codec"] for r in chained} == {"x265", "sbs"}
    assert {r["source"] for r in chained if r["codec"] == "x265"} == {r["source"] for r in rows if r["codec"] == "x265"}
    assert all(r["source"].startswith("reused from") for r in chained)
    # at another GOP only the all-intra rows are comparable: sbs (low-delay P) coded GOP 3 there
    mixed, gop2 = tmp_path / "m", tmp_path / "g"
    assert main(common + ["--frames", "3", "--anchors", "x265-intra,sbs", "--out", str(mixed)]) == 0
    assert main(common + ["--frames", "3", "--gop", "2", "--anchors", "", "--reuse", str(mixed / "bench.json"),
                          "--out", str(gop2)]) == 0
    assert {r["codec"] for r in json.loads((gop2 / "bench.json").read_text())["results"]} == {"x265-intra"}
    # an earlier run at another frame count is not comparable: nothing is reused
    assert main(common + ["--frames", "2", "--anchors", "sbs", "--reuse", str(first / "bench.json"),
                          "--out", str(third)]) == 0
    assert {r["codec"] for r in json.loads((third / "bench.json").read_text())["results"]} == {"sbs"}
    # a file that is not a bench.json is refused before anything is measured
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": 3}')
    assert main(common + ["--frames", "3", "--anchors", "sbs", "--reuse", str(bad), "--out", str(tmp_path / "d")]) != 0
    assert not (tmp_path / "d").exists()


def _write_fake_svc(left, right, out_path, rate, gop, motion_bytes=7):
    """A real .svc container whose 'codec' stores raw frames: I access units carry each view's
    pixels as texture; P access units add a motion substream of `motion_bytes` per view."""
    from svcodec.container import (AccessUnit, FrameType, SequenceHeader, Substream, SubstreamKind,
                                   SvcWriter, frame_crc32)

    h, w = left[0].shape[:2]
    seq = SequenceHeader(width=w, height=h, fps_num=30, fps_den=1, gop_size=gop, model_id=bytes(16),
                         model_name="raw", rate=float(rate))
    with SvcWriter(out_path, seq) as writer:
        for start in range(0, len(left), gop):
            aus = []
            for i in range(start, min(start + gop, len(left))):
                ftype = FrameType.I if i == start else FrameType.P
                subs = []
                if ftype == FrameType.P:
                    subs += [Substream(view, SubstreamKind.MOTION, 0, bytes(motion_bytes)) for view in (0, 1)]
                subs += [Substream(view, SubstreamKind.TEXTURE, 0, frame.tobytes())
                         for view, frame in ((0, left[i]), (1, right[i]))]
                aus.append(AccessUnit(i, ftype, frame_crc32(left[i], right[i]), subs))
            writer.write_gop(aus)


def _read_fake_svc(path):
    from svcodec.container import SubstreamKind, SvcReader

    reader = SvcReader(path)
    h, w = reader.sequence.height, reader.sequence.width
    views = ([], [])
    for _, aus in reader:
        for au in aus:
            for s in au.substreams:
                if s.kind == SubstreamKind.TEXTURE:
                    views[s.view].append(np.frombuffer(s.data, np.uint8).reshape(h, w, 3))
    return views


def test_bit_allocation_counts_every_byte_of_the_file(tmp_path):
    import os

    from svcodec.bench.bitshare import bit_allocation

    left = [_img(16, 24, seed=i) for i in range(5)]
    right = [_img(16, 24, seed=10 + i) for i in range(5)]
    path = tmp_path / "x.svc"
    _write_fake_svc(left, right, path, rate=1, gop=3, motion_bytes=11)  # GOPs: I P P | I P
    a = bit_allocation(path)
    frame_bytes = 16 * 24 * 3
    assert a["frames"] == {"I": 2, "P": 3}
    assert a["bytes"]["i_frames"] == 2 * 2 * frame_bytes
    assert a["bytes"]["motion"] == 3 * 2 * 11
    assert a["bytes"]["context"] == 3 * 2 * frame_bytes
    assert a["bytes"]["overhead"] > 0
    assert sum(a["bytes"].values()) == os.path.getsize(path)
    assert sum(a["share"].values()) == pytest.approx(1.0)


def _fake_codec_api(monkeypatch, tmp_path, encode_frames, decode_file, frames: int = 3):
    """Installs a stand-in svcodec.codec.api and writes a clip of `frames` PNG pairs; returns
    the clip folder."""
    import sys
    import types

    from PIL import Image

    monkeypatch.setitem(sys.modules, "svcodec.codec.api",
                        types.SimpleNamespace(encode_frames=encode_frames, decode_file=decode_file))
    clip = tmp_path / "clip"
    for view in ("left", "right"):
        (clip / view).mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(_img(seed=i)).save(clip / view / f"{i:04d}.png")
    return clip


def test_driver_measures_both_svcodec_variants_through_the_api(tmp_path, monkeypatch):
    """A stand-in codec API (raw frames in a real .svc container) checks bits = file size, the
    shared metric path, the GOP each variant is coded with, the bit allocation and timings."""
    import json
    import os
    import types
    from fractions import Fraction


    from svcodec.bench.run import main

    refines = []

    def encode_frames(left, right, out_path, rate, gop, fps=Fraction(30), device="cpu", refine=0):
        refines.append(refine)
        _write_fake_svc(left, right, out_path, rate, gop)
        # Only the GOP coder reports a time split, so both report paths are exercised.
        timings = {"networks": 0.5, "motion_estimation": 0.25, "entropy_coding": 0.125} if gop > 1 else None
        return types.SimpleNamespace(bytes=os.path.getsize(out_path), frames=len(left), enc_seconds=0.0,
                                     timings=timings)

    def decode_file(path, device="cpu"):
        return _read_fake_svc(path)

    clip = _fake_codec_api(monkeypatch, tmp_path, encode_frames, decode_file)
    out = tmp_path / "out"
    assert main(["--data", str(clip), "--frames", "3", "--rates", "0,1", "--anchors", "", "--out", str(out)]) == 0
    res = json.loads((out / "bench.json").read_text())
    rows = res["results"]
    assert [(r["codec"], r["q"], r["coded_gop"]) for r in rows] == [
        ("svcodec", 0, 3), ("svcodec", 1, 3), ("svcodec-intra", 0, 1), ("svcodec-intra", 1, 1)]
    assert rows[0]["psnr_rgb"] == 100.0 and rows[0]["msssim_rgb"] == pytest.approx(1.0)
    assert rows[0]["bits"] == 8 * rows[0]["bytes_raw"] and rows[0]["bpp"] > 8  # lossless + container
    gop_coded, intra = rows[0]["bit_allocation"], rows[2]["bit_allocation"]
    assert gop_coded["frames"] == {"I": 1, "P": 2} and intra["frames"] == {"I": 3, "P": 0}
    assert gop_coded["bytes"]["motion"] == 2 * 2 * 7 and intra["bytes"]["motion"] == 0
    assert sum(gop_coded["bytes"].values()) == rows[0]["bytes_raw"]
    assert rows[0]["enc_timings"] == {"networks": 0.5, "motion_estimation": 0.25, "entropy_coding": 0.125}
    assert rows[2]["enc_timings"] is None
    assert rows[0]["enc_fps"] > 0 and rows[0]["dec_fps"] > 0 and rows[0]["peak_rss_mb"] > 0
    # Identical lossless curves: svcodec vs its intra variant is the one comparison, and it is
    # not a number (two points at the same PSNR span no quality range).
    assert [(b["codec"], b["anchor"]) for b in res["bd_rate"]] == [("svcodec", "svcodec-intra")]
    assert res["bd_rate"][0]["bd_rate_psnr"] is None
    md = (out / "bench.md").read_text()
    assert rows[0]["psnr_per_frame"] == [100.0, 100.0, 100.0]
    assert "## svcodec: where the bits go" in md and "| clip | svcodec | 0 | 1 / 2 |" in md
    assert "| 100.00 / 100.00 / 100.00 |" in md
    assert "0.50 (" in md and "not reported" in md
    assert refines == [0, 0, 0, 0]
    # --refine N adds svcodec-refine rows, coded with that many steps at the same GOP
    out = tmp_path / "out_refine"
    assert main(["--data", str(clip), "--frames", "3", "--rates", "0,1", "--anchors", "", "--no-svcodec-intra",
                 "--refine", "7", "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert [(r["codec"], r["q"], r["coded_gop"]) for r in rows] == [
        ("svcodec", 0, 3), ("svcodec", 1, 3), ("svcodec-refine", 0, 3), ("svcodec-refine", 1, 3)]
    assert refines[4:] == [0, 0, 7, 7]


def test_driver_at_gop_1_runs_svcodec_once(tmp_path, monkeypatch):
    import json
    import os
    import types

    from svcodec.bench.run import main

    gops = []

    def encode_frames(left, right, out_path, rate, gop, **_):
        gops.append(gop)
        _write_fake_svc(left, right, out_path, rate, gop)
        return types.SimpleNamespace(bytes=os.path.getsize(out_path))

    clip = _fake_codec_api(monkeypatch, tmp_path, encode_frames, lambda p, **_: _read_fake_svc(p), frames=2)
    out = tmp_path / "out"
    argv = ["--data", str(clip), "--frames", "2", "--gop", "1", "--rates", "2", "--anchors", "", "--no-msssim",
            "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert gops == [1] and [r["codec"] for r in rows] == ["svcodec"]


def test_candidate_weights_and_a_baseline_run(tmp_path, monkeypatch):
    """--weights/--inter-weights reach encoder and decoder alike; each row records the weights its
    stream names; --baseline brings an earlier run's svcodec rows in as prev:* (same clip, frame
    count and GOP only) and compares each variant with its earlier self."""
    import json
    import os
    import types

    from svcodec.bench.run import main

    calls = []

    def encode_frames(left, right, out_path, rate, gop, **kw):
        calls.append(("encode", kw.get("weights"), kw.get("inter_weights")))
        _write_fake_svc(left, right, out_path, rate, gop)
        return types.SimpleNamespace(bytes=os.path.getsize(out_path))

    def decode_file(path, **kw):
        calls.append(("decode", kw.get("weights"), kw.get("inter_weights")))
        return _read_fake_svc(path)

    clip = _fake_codec_api(monkeypatch, tmp_path, encode_frames, decode_file)
    common = ["--data", str(clip), "--frames", "3", "--rates", "0,1", "--anchors", "", "--no-msssim"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(common + ["--out", str(first)]) == 0
    assert set(calls) == {("encode", None, None), ("decode", None, None)}
    calls.clear()
    assert main(common + ["--weights", "cand.safetensors", "--inter-weights", "candp.safetensors",
                          "--baseline", str(first / "bench.json"), "--out", str(second)]) == 0
    assert set(calls) == {("encode", "cand.safetensors", "candp.safetensors"),
                          ("decode", "cand.safetensors", "candp.safetensors")}
    res = json.loads((second / "bench.json").read_text())
    rows = res["results"]
    assert [(r["codec"], r["q"]) for r in rows] == [
        ("svcodec", 0), ("svcodec", 1), ("svcodec-intra", 0), ("svcodec-intra", 1),
        ("prev:svcodec", 0), ("prev:svcodec", 1), ("prev:svcodec-intra", 0), ("prev:svcodec-intra", 1)]
    assert all(r["source"].startswith("baseline bench.json") for r in rows[4:])
    assert rows[0]["model"] == {"name": "raw", "id": "00" * 16}  # what the fake stream's header names
    assert res["meta"]["svcodec_models"] == {"svcodec": ["raw " + "00" * 16], "svcodec-intra": ["raw " + "00" * 16]}
    pairs = [(b["codec"], b["anchor"]) for b in res["bd_rate"]]
    assert ("svcodec", "prev:svcodec") in pairs and ("svcodec-intra", "prev:svcodec-intra") in pairs
    assert not any(c.startswith("prev:") for c, _ in pairs)  # the baseline's rows are anchors only
    md = (second / "bench.md").read_text()
    assert "| clip | prev:svcodec | 0 |" in md and "svcodec weights measured" in md
    assert "| clip | prev:svcodec | 0 | 1 / 2 |" not in md  # nor in the bit-allocation table
    # a baseline at another GOP: only its all-intra rows are comparable
    third = tmp_path / "third"
    assert main(common + ["--gop", "2", "--baseline", str(first / "bench.json"), "--out", str(third)]) == 0
    codecs = {r["codec"] for r in json.loads((third / "bench.json").read_text())["results"]}
    assert codecs == {"svcodec", "svcodec-intra", "prev:svcodec-intra"}
    # a file that is not a bench.json is refused before anything is measured
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(common + ["--baseline", str(bad), "--out", str(tmp_path / "never")]) != 0
    assert not (tmp_path / "never").exists()


FAKE_MVHEVC = '''
import sys
from fractions import Fraction
import numpy as np
from svcodec.bench.anchors import ANCHORS, _encode, encoder_options
left, right, out, qp, w, h = sys.argv[1:7]
w, h = int(w), int(h)
def read(p):
    raw = np.fromfile(p, np.uint8).reshape(-1, w * h * 3 // 2)
    return [(f[: w * h].reshape(h, w), f[w * h : w * h * 5 // 4].reshape(h // 2, w // 2),
             f[w * h * 5 // 4 :].reshape(h // 2, w // 2)) for f in raw]
# Stand-in for an MV-HEVC encoder: one layer with the views interleaved (L0 R0 L1 R1 ...),
# which the decoder returns in the same order as a two-view stream.
frames = [p for lr in zip(read(left), read(right)) for p in lr]
open(out, "wb").write(_encode("libx265", frames, w, h, encoder_options(ANCHORS["x265"], int(qp), 6), Fraction(30)))
'''


def test_external_mvhevc_command_plumbing(tmp_path):
    import sys

    script = tmp_path / "fake_mvhevc.py"
    script.write_text(FAKE_MVHEVC)
    left = [_img(seed=i) for i in range(3)]
    right = [255 - _img(seed=10 + i) for i in range(3)]  # unlike left, so a view swap shows
    cmd = f"{sys.executable} {script} {{left}} {{right}} {{out}} {{qp}} {{w}} {{h}}"
    r = anchors.run_mvhevc_cmd(cmd, left, right, qp=27, gop=3)
    dec_l, dec_r = r["decoded"]
    assert r["bits"] > 0 and len(dec_l) == len(dec_r) == 3
    # Views come back in the right order: each decoded view is closest to its own source.
    assert psnr_rgb(left[1], dec_l[1]) > psnr_rgb(right[1], dec_l[1]) + 3
    assert psnr_rgb(right[2], dec_r[2]) > psnr_rgb(left[2], dec_r[2]) + 3


def _curve(codec, scale=1.0, shift=0.0, clip="c", frames=4, gop=4):
    """Four RD points; `scale` multiplies the rate, `shift` adds dB to PSNR (and to MS-SSIM in dB)."""
    pts = []
    for i, (bpp, psnr) in enumerate(((0.1, 30.0), (0.2, 33.0), (0.4, 36.0), (0.8, 39.0))):
        msssim_db = psnr - 15 + shift  # 15..24 dB
        pts.append({"clip": clip, "codec": codec, "q": i, "bpp": bpp * scale, "psnr_rgb": psnr + shift,
                    "msssim_rgb": 1 - 10 ** (-msssim_db / 10), "frames": frames, "gop": gop})
    return pts


def test_svcodec_variants_are_compared_with_every_anchor():
    from svcodec.bench.compare import bd_table

    rows = (_curve("x265") + _curve("x265-intra", 2) + _curve("sbs", 0.9) + _curve("x265-444", 0.8)
            + _curve("svcodec", 4) + _curve("svcodec-intra", 8) + _curve("x264", 1.1)
            + _curve("ref:x265") + _curve("ref:htm_ldp", 0.75) + _curve("ref:mvhevc", 0.95, frames=10)
            + _curve("prev:svcodec", 5) + _curve("prev:svcodec-intra", 8))
    pairs = {(b["codec"], b["anchor"]): b["bd_rate_psnr"] for b in bd_table(rows)}
    assert pairs[("svcodec", "x265")] == pytest.approx(300.0, abs=1.0)
    assert pairs[("svcodec", "x265-intra")] == pytest.approx(100.0, abs=0.5)
    assert pairs[("svcodec", "sbs")] == pytest.approx(4 / 0.9 * 100 - 100, abs=1.0)
    assert pairs[("svcodec", "x265-444")] == pytest.approx(400.0, abs=1.0)
    assert pairs[("svcodec", "svcodec-intra")] == pytest.approx(-50.0, abs=0.5)
    assert pairs[("svcodec", "ref:htm_ldp")] == pytest.approx(4 / 0.75 * 100 - 100, abs=1.0)
    assert pairs[("svcodec-intra", "x265-intra")] == pytest.approx(300.0, abs=1.0)
    assert pairs[("ref:htm_ldp", "ref:x265")] == pytest.approx(-25.0, abs=0.5)
    assert pairs[("svcodec", "prev:svcodec")] == pytest.approx(-20.0, abs=0.5)
    assert pairs[("svcodec-intra", "prev:svcodec-intra")] == pytest.approx(0.0, abs=1e-6)
    assert not any(codec.startswith("prev:") for codec, _ in pairs)
    # Measured on another frame count: not comparable, so not compared.
    assert ("svcodec", "ref:mvhevc") not in pairs
    assert ("x264", "x265-intra") not in pairs and ("x264", "x265") in pairs


def test_bd_rate_needs_one_db_of_overlap():
    from svcodec.bench.bdrate import NO_OVERLAP, NOT_COMPUTABLE, OK, TOO_FEW_POINTS, compare_curves

    anchor = [(0.1, 30.0), (0.2, 33.0), (0.4, 36.0), (0.8, 39.0)]
    shifted = lambda db: [(r, q + db) for r, q in anchor]  # noqa: E731
    full = compare_curves(anchor, [(2 * r, q) for r, q in anchor])
    assert full["status"] == OK and full["bd_rate"] == pytest.approx(100.0, abs=1e-6) and full["overlap_db"] == 9.0
    edge = compare_curves(anchor, shifted(8.0))  # 39 - 38: exactly 1 dB in common
    assert edge["status"] == OK and edge["overlap_db"] == pytest.approx(1.0) and edge["bd_rate"] < 0
    thin = compare_curves(anchor, shifted(8.5))  # 0.5 dB in common
    assert thin["status"] == NO_OVERLAP == "curves do not overlap" and thin["bd_rate"] is None
    assert thin["overlap_db"] == pytest.approx(0.5)
    assert thin["nearest"] == (3, 0)  # anchor's best (39 dB) and test's worst (38.5 dB) point
    # at equal quality: only the test's 38.5 dB point lies within the anchor's 30-39 dB; the
    # anchor would need 0.4 * 2 ** (2.5 / 3) bpp there (log-rate linear in quality)
    ((j, at, ratio),) = thin["equal_quality"]
    assert j == 0 and at == pytest.approx(0.4 * 2 ** (2.5 / 3)) and ratio == pytest.approx(0.1 / at)
    assert [r for _, _, r in full["equal_quality"]] == pytest.approx([2.0] * 4)
    assert compare_curves(anchor, [(r, q - 12.0) for r, q in anchor])["equal_quality"] == []
    apart = compare_curves(anchor, [(r, q - 12.0) for r, q in anchor])  # test entirely below
    assert apart["status"] == NO_OVERLAP and apart["overlap_db"] == pytest.approx(-3.0)
    assert apart["nearest"] == (0, 3)
    assert compare_curves(anchor, anchor[:1])["status"] == TOO_FEW_POINTS
    flat = [(0.1, 30.0), (0.2, 33.0), (0.4, 33.0), (0.8, 39.0)]  # rate is not a function of quality
    assert compare_curves(anchor, flat)["status"] == NOT_COMPUTABLE
    # Unusable points (MS-SSIM of a lossless frame is +inf dB) are left out, not fatal.
    assert compare_curves(anchor, anchor + [(1.6, math.inf)])["bd_rate"] == pytest.approx(0.0, abs=1e-9)


def test_report_shows_nearest_points_instead_of_a_number():
    from svcodec.bench.compare import bd_table
    from svcodec.bench.report import markdown

    rows = _curve("x265") + _curve("svcodec", 30, shift=-8.5)  # 0.5 dB PSNR overlap, 30x the rate
    bd = bd_table(rows)
    assert len(bd) == 1 and bd[0]["bd_rate_psnr"] is None and bd[0]["bd_rate_msssim_db"] is None
    nearest = bd[0]["psnr"]["nearest"]
    assert nearest["test"]["q"] == 3 and nearest["anchor"]["q"] == 0
    assert nearest["test"]["quality"] == pytest.approx(30.5) and nearest["anchor"]["bpp"] == pytest.approx(0.1)
    md = markdown({"frames": 4, "gop": 4}, rows, bd)
    line = next(ln for ln in md.splitlines() if ln.startswith("| c | svcodec | x265 |"))
    assert "curves do not overlap (0.50 dB in common)" in line
    assert "svcodec 3: 24.0000 bpp, 30.50 dB vs x265 0: 0.1000 bpp, 30.00 dB" in line
    assert not re.search(r"[+-]\d+\.\d%", line)  # no BD-rate number
    assert "at 30.50 dB svcodec 3 spends 21382 % of the bits" in line  # 24 bpp vs 0.1 * 2 ** (1/6)
    below = _curve("x265") + _curve("svcodec", 30, shift=-11)
    assert "curves do not overlap (2.00 dB apart)" in markdown({"frames": 4, "gop": 4}, below, bd_table(below))
    ok = markdown({"frames": 4, "gop": 4}, rows[:4] + _curve("svcodec", 2), bd_table(rows[:4] + _curve("svcodec", 2)))
    assert "| c | svcodec | x265 | +100.0% (over 9.0 dB) |" in ok
