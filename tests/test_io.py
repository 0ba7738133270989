"""Stereo input/output: reading, validation errors, bit-exact writing."""

from fractions import Fraction
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import write_video
from svcodec.errors import InputError
from svcodec.io import FORMATS, StereoWriter, default_output_name, open_stereo, output_paths

W, H, N = 64, 48, 5


def clip(seed=0, n=N, w=W, h=H):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_pngs(folder, frames, ext="png", grey=False):
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(frames):
        im = Image.fromarray(a[:, :, 0] if grey else a)
        im.save(os.path.join(folder, f"f{i:03d}.{ext}"), **({"lossless": True} if ext == "webp" else {}))
    return str(folder)


def read_video(path):
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------- reading


def test_two_files(tmp_path):
    left, right = clip(1), clip(2)
    src = open_stereo(write_video(tmp_path / "l.mkv", left), write_video(tmp_path / "r.mkv", right))
    assert (src.width, src.height, src.fps, src.grey) == (W, H, 30, False)
    assert src.frame_count is None  # Matroska does not store it
    pairs = list(src.frames())
    assert_same([p[0] for p in pairs], left)
    assert_same([p[1] for p in pairs], right)
    assert len(list(src.frames(max_frames=2))) == 2  # re-iterable, capped
    assert "l.mkv" in src.description and "r.mkv" in src.description
    src.close()


def test_mp4_frame_count_and_ntsc_rate(tmp_path):
    left, right = clip(1), clip(2)
    src = open_stereo(
        write_video(tmp_path / "l.mp4", left, codec="libx264rgb", fps=Fraction(30000, 1001)),
        write_video(tmp_path / "r.mp4", right, codec="libx264rgb", fps=Fraction(30000, 1001)),
    )
    assert src.frame_count == N
    assert src.fps == Fraction(30000, 1001)
    assert_same([p[0] for p in src.frames()], left)


def test_rate_rounding_tolerated(tmp_path):
    src = open_stereo(
        write_video(tmp_path / "l.mkv", clip(1), fps=Fraction(30000, 1001)),
        write_video(tmp_path / "r.mkv", clip(2), fps=Fraction(2997, 100)),
    )
    assert abs(float(src.fps) - 29.97) < 1e-3


def test_side_by_side(tmp_path):
    left, right = clip(1), clip(2)
    sbs = [np.concatenate([a, b], axis=1) for a, b in zip(left, right)]
    src = open_stereo(write_video(tmp_path / "sbs.mkv", sbs), side_by_side=True)
    assert (src.width, src.height) == (W, H)
    pairs = list(src.frames())
    assert_same([p[0] for p in pairs], left)
    assert_same([p[1] for p in pairs], right)


def test_side_by_side_image_folder(tmp_path):
    left, right = clip(1), clip(2)
    folder = write_pngs(tmp_path / "sbs", [np.concatenate([a, b], axis=1) for a, b in zip(left, right)])
    src = open_stereo(folder, side_by_side=True)
    assert (src.width, src.frame_count) == (W, N)
    assert_same([p[1] for p in src.frames()], right)


def test_sixteen_bit_grey_png_keeps_top_bits(tmp_path):
    for side in "LR":
        os.makedirs(tmp_path / side)
        Image.fromarray(np.full((H, W), 0xAB12, np.uint16)).save(tmp_path / side / "0.png")
    src = open_stereo(str(tmp_path / "L"), str(tmp_path / "R"))
    assert src.grey
    a, _ = next(src.frames())
    assert (a == 0xAB).all()


@pytest.mark.parametrize("ext", ["png", "webp"])
def test_image_folders(tmp_path, ext):
    left, right = clip(1), clip(2)
    src = open_stereo(write_pngs(tmp_path / "L", left, ext), write_pngs(tmp_path / "R", right, ext), fps=25)
    assert (src.width, src.height, src.fps, src.frame_count, src.grey) == (W, H, 25, N, False)
    pairs = list(src.frames())
    assert_same([p[0] for p in pairs], left)
    assert_same([p[1] for p in pairs], right)


def test_image_folder_default_fps_and_jpeg(tmp_path):
    for side in "LR":
        os.makedirs(tmp_path / side)
        for i, a in enumerate(clip(3)):
            Image.fromarray(a).save(tmp_path / side / f"{i:02d}.jpg")
    src = open_stereo(str(tmp_path / "L"), str(tmp_path / "R"))
    assert src.fps == 30 and src.frame_count == N
    a, b = next(src.frames())
    assert a.shape == (H, W, 3) and a.dtype == np.uint8


def test_grey_video_and_images(tmp_path):
    frames = clip(4)
    src = open_stereo(write_video(tmp_path / "l.mkv", frames, grey=True), write_video(tmp_path / "r.mkv", frames, grey=True))
    assert src.grey
    a, _ = next(src.frames())
    assert a.shape == (H, W, 3) and (a == frames[0][:, :, :1]).all()

    src = open_stereo(write_pngs(tmp_path / "L", frames, grey=True), write_pngs(tmp_path / "R", frames, grey=True))
    assert src.grey
    # One colour view is enough to make the pair colour.
    src = open_stereo(write_pngs(tmp_path / "L", frames, grey=True), write_pngs(tmp_path / "C", frames))
    assert not src.grey


def test_yuv_unspecified_is_bt601_limited(tmp_path):
    path = str(tmp_path / "y.mkv")
    with av.open(path, "w") as c:
        s = c.add_stream("ffv1", rate=30)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv444p"
        planes = np.stack([np.full((16, 16), v, np.uint8) for v in (100, 150, 90)])
        for p in s.encode(av.VideoFrame.from_ndarray(planes, format="yuv444p")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    src = open_stereo(path, path)
    a, _ = next(src.frames())
    y, u, v = 100 - 16, 150 - 128, 90 - 128
    want = [1.164 * y + 1.596 * v, 1.164 * y - 0.392 * u - 0.813 * v, 1.164 * y + 2.017 * u]
    assert np.abs(a[0, 0].astype(float) - want).max() <= 1.5


def _pil_displayed(a, degrees, hflip, vflip):
    """What PyAV's set_display_rotation documents: turn counter-clockwise, then mirror."""
    im = Image.fromarray(a).rotate(degrees, expand=True)
    if hflip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vflip:
        im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return np.asarray(im)


@pytest.mark.parametrize("display", [(90, False, False), (180, False, False), (270, False, False),
                                     (0, True, False), (0, False, True), (90, True, False)])
def test_display_matrix_turns_video_upright(tmp_path, display):
    """A phone's video says through its display matrix how to show it; frames come out as a
    player (and ffmpeg) shows them, with a notice, and as stored with autorotate=False."""
    left, right = clip(5, n=2), clip(6, n=2)
    l = write_video(tmp_path / "l.mp4", left, codec="libx264rgb", display=display)
    r = write_video(tmp_path / "r.mp4", right, codec="libx264rgb", display=display)
    src = open_stereo(l, r)
    want_l = [_pil_displayed(a, *display) for a in left]
    assert (src.height, src.width) == want_l[0].shape[:2]
    pairs = list(src.frames())
    assert_same([p[0] for p in pairs], want_l)
    assert_same([p[1] for p in pairs], [_pil_displayed(a, *display) for a in right])
    assert len(src.notices) == 2 and "as its display matrix asks" in src.notices[0]
    assert "l.mp4" in src.notices[0] and "--no-autorotate" in src.notices[0]

    stored = open_stereo(l, r, autorotate=False)
    assert (stored.width, stored.height, stored.notices) == (W, H, [])
    assert_same([p[0] for p in stored.frames()], left)


def test_display_matrix_notice_names_the_turn(tmp_path):
    frames = clip(5, n=1)
    path = write_video(tmp_path / "p.mp4", frames, codec="libx264rgb", display=(-90, False, False))
    src = open_stereo(path, path)
    assert "rotated 90 degrees clockwise" in src.notices[0] and f"coded as {H}x{W}" in src.notices[0]
    plain = write_video(tmp_path / "q.mp4", frames, codec="libx264rgb")
    assert open_stereo(plain, plain).notices == []  # no display matrix, nothing said


def test_non_square_pixels_are_kept_as_coded_and_reported(tmp_path):
    """A video of non-square pixels (anamorphic) is coded as stored; its sample aspect ratio
    comes with the source (as the coded frames have it: a quarter turn swaps it), with a note."""
    frames = clip(5, n=1)
    wide = write_video(tmp_path / "w.mp4", frames, codec="libx264rgb", sar=Fraction(4, 3))
    src = open_stereo(wide, wide)
    assert src.sample_aspect == (4, 3) and (src.width, src.height) == (W, H)
    assert len(src.notices) == 2 and "w.mp4: pixels are not square (sample aspect ratio 4:3)" in src.notices[0]
    assert_same([p[0] for p in src.frames()], frames)
    turned = write_video(tmp_path / "t.mp4", frames, codec="libx264rgb", sar=Fraction(4, 3),
                         display=(-90, False, False))
    assert open_stereo(turned, turned).sample_aspect == (3, 4)
    assert open_stereo(turned, turned, autorotate=False).sample_aspect == (4, 3)
    square = write_video(tmp_path / "s.mp4", frames, codec="libx264rgb")
    mixed = open_stereo(wide, square)
    assert mixed.sample_aspect == (4, 3)
    assert "s.mp4: its pixels (square) differ from the left view's (4:3)" in mixed.notices[-1]
    assert open_stereo(square, square).sample_aspect is None


def test_variable_frame_rate_is_announced(tmp_path):
    """Timestamps that are not evenly spaced (a phone's variable frame rate) are not kept: the
    stream runs at the average rate, and a note says so; evenly spaced ones say nothing, in
    MP4 (B-frame reordering) and Matroska (1 ms ticks: 33, 33, 34 ms at 30 fps) alike."""
    frames = clip(5, n=7)
    vfr = write_video(tmp_path / "v.mp4", frames, codec="libx264rgb", pts_ms=[0, 33, 66, 150, 183, 300, 333])
    src = open_stereo(vfr, vfr)
    assert "v.mp4: variable frame rate (frames 33.0 to 117.0 ms apart)" in src.notices[0]
    assert "the timestamps are not kept" in src.notices[0] and len(src.notices) == 2
    assert_same([p[0] for p in src.frames()], frames)
    for name, codec in (("c.mp4", "libx264rgb"), ("c.mkv", "ffv1")):
        steady = write_video(tmp_path / name, frames, codec=codec, fps=30)
        assert open_stereo(steady, steady).notices == []
    ntsc = write_video(tmp_path / "n.mkv", frames, fps=Fraction(30000, 1001))
    assert open_stereo(ntsc, ntsc).notices == []


@pytest.mark.parametrize("sar, want", [(None, None), (Fraction(0, 1), None), (Fraction(1), None),
                                       (Fraction(64, 45), (64, 45)), (Fraction(70000, 3), None),
                                       (Fraction(1, 70000), (1, 65535)), (Fraction(65536, 65535), None)])
def test_sample_aspect_values(sar, want):
    from svcodec.io.orientation import Orientation
    from svcodec.io.readers import sample_aspect_of

    assert sample_aspect_of(sar, Orientation()) == want


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_turns_images_upright(tmp_path, tag):
    """Images with an EXIF orientation come out as Pillow's exif_transpose (and viewers) show them;
    the upright size is the one checked across a folder."""
    from PIL import ImageOps

    frames = clip(7, n=2)
    folders = []
    for side in ("L", "R"):
        os.makedirs(tmp_path / side)
        for i, a in enumerate(frames):
            exif = Image.Exif()
            exif[0x0112] = tag
            Image.fromarray(a).save(tmp_path / side / f"f{i}.png", exif=exif)
        folders.append(str(tmp_path / side))
    with Image.open(tmp_path / "L" / "f0.png") as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    src = open_stereo(*folders)
    a, b = next(src.frames())
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)
    assert (src.height, src.width) == want.shape[:2]
    assert bool(src.notices) == (tag != 1)
    a, _ = next(open_stereo(*folders, autorotate=False).frames())
    np.testing.assert_array_equal(a, frames[0])


@pytest.mark.parametrize("tag, words", [
    (1, ""), (2, "mirrored left-right"), (3, "rotated 180 degrees"), (4, "mirrored top-bottom"),
    (5, "mirrored left-right and rotated 90 degrees counter-clockwise"), (6, "rotated 90 degrees clockwise"),
    (7, "mirrored left-right and rotated 90 degrees clockwise"), (8, "rotated 90 degrees counter-clockwise")])
def test_orientation_is_described_as_exif_names_it(tag, words):
    """The notes' wording follows the EXIF names (2 'mirror horizontal', 5 'mirror horizontal and
    rotate 270 CW', 6 'rotate 90 CW', ...)."""
    from svcodec.io.orientation import from_exif

    assert from_exif(tag).describe() == words


def test_checking_a_png_folder_reads_headers_only(tmp_path, monkeypatch):
    """Looking for an EXIF orientation must not decode every PNG of a folder up front (Pillow's
    getexif would, to find an eXIf chunk after the pixel data)."""
    from PIL import PngImagePlugin

    folder = write_pngs(tmp_path / "L", clip(9, n=3))

    decoded = []
    real_load = PngImagePlugin.PngImageFile.load

    def counting_load(self):
        decoded.append(self.filename)
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counting_load)
    src = open_stereo(folder, folder)
    assert (src.width, src.height, src.frame_count) == (W, H, 3)
    assert decoded == []
    next(src.frames())  # decoding the frames themselves does load them
    assert decoded


def test_folder_of_images_turned_differently_but_upright_alike(tmp_path):
    """A camera turned between shots: stored sizes differ, upright sizes agree."""
    frames = clip(8, n=2)
    os.makedirs(tmp_path / "L")
    Image.fromarray(frames[0]).save(tmp_path / "L" / "f0.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: shown turned back clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(frames[1]))).save(tmp_path / "L" / "f1.png", exif=exif)
    src = open_stereo(str(tmp_path / "L"), str(tmp_path / "L"))
    got = [p[0] for p in src.frames()]
    assert_same(got, frames)
    assert "1 of 2 images turned upright" in src.notices[0] and "f1.png" in src.notices[0]
    raises_naming("f1.png", str(tmp_path / "L"), str(tmp_path / "L"), autorotate=False)


# ---------------------------------------------------------------- input errors


def raises_naming(fragment, *args, **kwargs):
    with pytest.raises(InputError) as e:
        src = open_stereo(*args, **kwargs)
        list(src.frames())
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg, msg
    return msg


def test_missing_path(tmp_path):
    good = write_video(tmp_path / "r.mkv", clip())
    raises_naming("nope.mkv", str(tmp_path / "nope.mkv"), good)


def test_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello, not a video\n")
    raises_naming("notes.mp4", str(bad), write_video(tmp_path / "r.mkv", clip()))


def test_no_video_stream(tmp_path):
    path = str(tmp_path / "audio.mkv")
    with av.open(path, "w") as c:
        s = c.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert "no video stream" in raises_naming("audio.mkv", path, write_video(tmp_path / "r.mkv", clip()))


def test_zero_frames(tmp_path):
    path = str(tmp_path / "empty.avi")  # AVI keeps a stream with no packets; MKV/MP4 drop it
    with av.open(path, "w") as c:
        s = c.add_stream("ffv1", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "bgr0"
        c.start_encoding()
    assert "no frames" in raises_naming("empty.avi", path, write_video(tmp_path / "r.mkv", clip()))


def test_size_mismatch(tmp_path):
    l = write_video(tmp_path / "l.mkv", clip())
    r = write_video(tmp_path / "r.mkv", clip(w=32))
    assert "32x48" in raises_naming("r.mkv", l, r)


def test_rate_mismatch(tmp_path):
    l = write_video(tmp_path / "l.mkv", clip(), fps=30)
    r = write_video(tmp_path / "r.mkv", clip(), fps=Fraction(30000, 1001))
    assert "fps" in raises_naming("r.mkv", l, r)


def test_count_mismatch_up_front(tmp_path):
    l = write_video(tmp_path / "l.mp4", clip(), codec="libx264rgb")
    r = write_video(tmp_path / "r.mp4", clip(n=3), codec="libx264rgb")
    with pytest.raises(InputError, match="r.mp4.*3 frames"):
        open_stereo(l, r)  # before any frame is read


def test_count_mismatch_while_streaming(tmp_path):
    l = write_video(tmp_path / "l.mkv", clip())
    r = write_video(tmp_path / "r.mkv", clip(n=3))
    src = open_stereo(l, r)
    it = src.frames()
    for _ in range(3):
        next(it)
    with pytest.raises(InputError, match="r.mkv: ended after 3 frames"):
        next(it)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    good = write_pngs(tmp_path / "good", clip())
    assert "no PNG" in raises_naming("empty", str(empty), good)

    mixed = write_pngs(tmp_path / "mixed", clip())
    Image.fromarray(clip(n=1, w=32)[0]).save(os.path.join(mixed, "f999.png"))
    raises_naming("f999.png", mixed, good)

    broken = write_pngs(tmp_path / "broken", clip())
    with open(os.path.join(broken, "f002.png"), "wb") as f:
        f.write(b"\x89PNG not really")
    raises_naming("f002.png", broken, good)

    # A valid header with truncated data only fails while streaming.
    truncated = write_pngs(tmp_path / "truncated", clip())
    name = os.path.join(truncated, "f003.png")
    data = open(name, "rb").read()
    with open(name, "wb") as f:
        f.write(data[: len(data) // 2])
    raises_naming("f003.png", truncated, good)


def test_odd_side_by_side_and_bad_arguments(tmp_path):
    odd = write_video(tmp_path / "odd.mkv", clip(w=63))
    assert "odd" in raises_naming("odd.mkv", odd, side_by_side=True)
    raises_naming("odd.mkv", odd)  # no right view
    raises_naming("odd.mkv", odd, odd, side_by_side=True)


# ---------------------------------------------------------------- writing


def read_back(fmt, paths):
    """Frames of what StereoWriter wrote, as (left list, right list)."""
    if fmt == "mkv":
        return read_video(paths[0]), read_video(paths[1])
    if fmt == "png":
        return tuple(
            [np.asarray(Image.open(os.path.join(paths[0], s, n))) for n in sorted(os.listdir(os.path.join(paths[0], s)))]
            for s in ("left", "right")
        )
    if fmt == "sbs-mkv":
        frames = read_video(paths[0])
    else:
        frames = [np.asarray(Image.open(os.path.join(paths[0], n))) for n in sorted(os.listdir(paths[0]))]
    return [f[:, :W] for f in frames], [f[:, W:] for f in frames]


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_round_trip(tmp_path, fmt):
    left, right = clip(5), clip(6)
    out = str(tmp_path / "out")
    with StereoWriter(out, fmt=fmt, width=W, height=H, fps=Fraction(30000, 1001)) as w:
        for a, b in zip(left, right):
            w.write(a, b)
    assert w.paths == output_paths(out, fmt)
    assert all(os.path.exists(p) for p in w.paths)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in w.paths)  # no temporaries left
    got_l, got_r = read_back(fmt, w.paths)
    assert_same(got_l, left)
    assert_same(got_r, right)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_grey(tmp_path, fmt):
    frames = [np.repeat(a[:, :, :1], 3, axis=2) for a in clip(7)]
    with StereoWriter(str(tmp_path / "g"), fmt=fmt, width=W, height=H, fps=30, grey=True) as w:
        for a in frames:
            w.write(a, a)
    if fmt.endswith("mkv"):
        with av.open(w.paths[0]) as c:
            assert c.streams.video[0].codec_context.pix_fmt == "gray"
    else:
        first = os.path.join(w.paths[0], "left" if fmt == "png" else "", "000000.png")
        assert Image.open(first).mode == "L"
    # What the codec reads back from its own output is again grey and bit-exact.
    if fmt == "mkv":
        src = open_stereo(*w.paths)
    elif fmt == "png":
        src = open_stereo(os.path.join(w.paths[0], "left"), os.path.join(w.paths[0], "right"))
    else:
        src = open_stereo(w.paths[0], side_by_side=True)
    assert src.grey
    assert_same([p[0] for p in src.frames()], frames)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_exception_leaves_nothing(tmp_path, fmt):
    out = str(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with StereoWriter(out, fmt=fmt, width=W, height=H, fps=30) as w:
            w.write(*clip(n=2)[:2])
            raise RuntimeError("decoder failed")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_exception_keeps_previous_output(tmp_path, fmt):
    out = str(tmp_path / "out")
    old = clip(8, n=2)
    with StereoWriter(out, fmt=fmt, width=W, height=H, fps=30) as w:
        w.write(old[0], old[1])
    before = sorted(os.walk(tmp_path))
    with pytest.raises(RuntimeError):
        with StereoWriter(out, fmt=fmt, width=W, height=H, fps=30, overwrite=True) as w:
            w.write(*clip(9, n=2))
            raise RuntimeError("decoder failed")
    assert sorted(os.walk(tmp_path)) == before
    assert_same(read_back(fmt, w.paths)[0], old[:1])
    # Without overwrite an existing output is refused up front; with it, a successful run
    # replaces the previous output.
    with pytest.raises(InputError, match="already exists"):
        StereoWriter(out, fmt=fmt, width=W, height=H, fps=30)
    assert sorted(os.walk(tmp_path)) == before
    new = clip(10, n=2)
    with StereoWriter(out, fmt=fmt, width=W, height=H, fps=30, overwrite=True) as w:
        w.write(new[0], new[1])
    got_l, _ = read_back(fmt, w.paths)
    assert_same(got_l, new[:1])
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in w.paths)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_never_replaces_an_output_that_appears_meanwhile(tmp_path, fmt):
    """Checked when the writer starts and again when it publishes (a file someone else made
    while we decoded survives, and our output is dropped as a whole)."""
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="already exists"):
        with StereoWriter(out, fmt=fmt, width=W, height=H, fps=30) as w:
            w.write(*clip(n=2)[:2])
            last = w.paths[-1]
            if fmt.endswith("mkv"):
                Path(last).write_bytes(b"precious")
            else:
                os.mkdir(last)
                Path(last, "precious.txt").write_bytes(b"precious")
    kept = Path(last) if fmt.endswith("mkv") else Path(last, "precious.txt")
    assert kept.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(last)]  # no temporaries, no half output


def test_writer_refuses_foreign_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="out"):
        StereoWriter(str(tmp_path / "out"), fmt="png", width=W, height=H, fps=30)
    assert os.listdir(tmp_path / "out") == ["holiday.jpg"]


def test_writer_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        StereoWriter(str(tmp_path / "no" / "out"), fmt="mkv", width=W, height=H, fps=30)
    with pytest.raises(InputError, match="unknown output format"):
        StereoWriter(str(tmp_path / "out"), fmt="avi", width=W, height=H, fps=30)
    with StereoWriter(str(tmp_path / "out"), fmt="png", width=W, height=H, fps=30) as w:
        with pytest.raises(ValueError):
            w.write(np.zeros((H, W, 3), np.float32), np.zeros((H, W, 3), np.uint8))
        w.abort()
    assert os.listdir(tmp_path) == []


def test_output_names():
    assert output_paths("d/clip.mkv", "mkv") == ["d/clip.left.mkv", "d/clip.right.mkv"]
    assert output_paths("d/clip", "sbs-mkv") == ["d/clip.mkv"]
    assert output_paths("d/frames/", "png") == ["d/frames"]
    assert default_output_name("d/clip.svc", "mkv") == "d/clip"
    assert default_output_name("d/clip.svc", "sbs-mkv") == "d/clip.sbs.mkv"
    assert default_output_name("d/clip.svc", "png") == "d/clip.frames"
    assert default_output_name("d/clip.svc", "sbs-png") == "d/clip.sbs-frames"
    # only ".svc" is dropped, so a default name never equals the stream's own name
    for stream in ("d/clip.mkv", "d/clip.frames", "d/clip", "d/.svc", "d/x.sbs.mkv"):
        for fmt in FORMATS:
            assert stream not in output_paths(default_output_name(stream, fmt), fmt)


def test_temporary_names_fit_long_output_names(tmp_path):
    """A 255-byte output name (the usual limit) still gets a temporary: it is cut, not extended."""
    name = "é" * 100 + "x" * 51 + ".mkv"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    with StereoWriter(str(tmp_path / name), fmt="sbs-mkv", width=W, height=H, fps=30) as w:
        w.write(*clip(n=2)[:2])
    assert os.listdir(tmp_path) == [name]


def test_outputs_get_umask_permissions(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    old = os.umask(0o022)
    try:
        for fmt in ("mkv", "png"):
            out = str(tmp_path / f"o_{fmt}")
            with StereoWriter(out, fmt=fmt, width=8, height=8, fps=Fraction(30)) as w:
                w.write(frame, frame)
            for path in output_paths(out, fmt):
                mode = os.stat(path).st_mode & 0o777
                assert mode == (0o755 if os.path.isdir(path) else 0o644), (path, oct(mode))
    finally:
        os.umask(old)
