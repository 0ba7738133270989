"""Fast checks of the benchmark tooling (no real data needed)."""

import math

import numpy as np
import pytest

from svcodec.bench import anchors
from svcodec.bench.bdrate import bd_rate
from svcodec.bench.metrics import PSNR_MAX, ms_ssim_rgb, ms_ssim_scales, psnr_rgb


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


def test_driver_end_to_end_on_synthetic_clip(tmp_path):
    import json

    from PIL import Image

    from svcodec.bench.run import main

    clip = tmp_path / "data" / "synth"
    for view, off in (("left", 0), ("right", 10)):
        (clip / view).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(_img(seed=off + i)).save(clip / view / f"{i:04d}.png")
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--frames", "3", "--rates", "", "--qps", "27,32,37",
            "--anchors", "x265,sbs", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "bench.json").read_text())
    assert {r["codec"] for r in res["results"]} == {"x265", "sbs"}
    assert all(r["bpp"] > 0 and r["frames"] == 3 for r in res["results"])
    assert [b["codec"] for b in res["bd_rate"]] == ["sbs"]
    assert (out / "rd_synth.png").stat().st_size > 0
    assert "| synth | x265 | 32 |" in (out / "bench.md").read_text()


def test_driver_measures_our_codec_through_the_api(tmp_path, monkeypatch):
    """A stand-in codec API (lossless .npz) checks bits = file size and the shared metric path."""
    import json
    import sys
    import types
    from fractions import Fraction

    from PIL import Image

    from svcodec.bench.run import main

    def encode_frames(left, right, out_path, rate, gop, fps=Fraction(30), device="cpu"):
        with open(out_path, "wb") as f:  # file object: np.savez must not append ".npz"
            np.savez(f, left=np.stack(left), right=np.stack(right))
        import os

        return types.SimpleNamespace(bytes=os.path.getsize(out_path), frames=len(left), enc_seconds=0.0)

    def decode_file(path, device="cpu"):
        d = np.load(path)
        return list(d["left"]), list(d["right"])

    monkeypatch.setitem(sys.modules, "svcodec.codec.api",
                        types.SimpleNamespace(encode_frames=encode_frames, decode_file=decode_file))
    clip = tmp_path / "clip"
    for view in ("left", "right"):
        (clip / view).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_img(seed=i)).save(clip / view / f"{i:04d}.png")
    out = tmp_path / "out"
    assert main(["--data", str(clip), "--frames", "2", "--rates", "0,1", "--anchors", "", "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert [r["codec"] for r in rows] == ["svcodec", "svcodec"]
    assert rows[0]["psnr_rgb"] == 100.0 and rows[0]["msssim_rgb"] == pytest.approx(1.0)
    assert rows[0]["bits"] == 8 * rows[0]["bytes_raw"] and rows[0]["bpp"] > 8  # lossless + npz header


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


def test_intra_only_codec_is_also_compared_with_all_intra_x265():
    from svcodec.bench.run import bd_table

    def pts(codec, scale):
        return [{"clip": "c", "codec": codec, "bpp": b * scale, "psnr_rgb": p, "msssim_rgb": 0.9 + p / 1000,
                 "frames": 4} for b, p in ((0.1, 30), (0.2, 33), (0.4, 36), (0.8, 39))]

    rows = pts("x265", 1) + pts("x265-intra", 2) + pts("svcodec", 4) + pts("x264", 1.1)
    pairs = {(b["codec"], b["anchor"]): b["bd_rate_psnr"] for b in bd_table(rows)}
    assert pairs[("svcodec", "x265-intra")] == pytest.approx(100.0, abs=0.5)
    assert pairs[("svcodec", "x265")] == pytest.approx(300.0, abs=1.0)
    assert ("x264", "x265-intra") not in pairs
