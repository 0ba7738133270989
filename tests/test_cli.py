"""The `svc` command line: round trips with the tiny model (in-process through click's runner),
one round trip with the shipped weights through the real `svc` executable, and bad inputs:
each must end with a non-zero exit, one `svc: error:` line, no traceback, no output or
temporary file left behind and the inputs untouched."""

import hashlib
import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import (read_png_folder, read_video, stereo_frames, to_grey, write_png_folder,
                      write_png_pair, write_video)
from svcodec.cli.main import main
from svcodec.codec.api import decode_file, encode_frames
from svcodec.container import Colour, SvcReader
from svcodec.container.format import MAGIC

pytestmark = pytest.mark.usefixtures("one_thread")

W, H = 64, 48


def svc(*args):
    # SVC_DEBUG would turn errors back into tracebacks; make sure it is off.
    return CliRunner().invoke(main, [str(a) for a in args], env={"SVC_DEBUG": None})


def ok(res):
    assert res.exit_code == 0, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    return res


def fails(res, match=None, code=1):
    """Exit code 1 (SvcError; 3 would be an internal error), exactly one `svc: error:` line, the
    last one on stderr; anything before it can only be a progress bar (when not --quiet)."""
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("svc: error: "), res.stderr
    assert all(line.startswith(("encode ", "decode ", "svc: note: ")) for line in lines[:-1]), res.stderr
    line = lines[-1]
    assert "internal error" not in line
    assert "Traceback" not in res.output and res.stdout == ""
    if match:
        assert match in line, line
    return line


def snapshot(root):
    """{relative path: sha256} of every file and folder under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


class Unchanged:
    """Asserts that a failing command left `root` exactly as it was (no output, no temp files,
    inputs byte-identical)."""

    def __init__(self, root):
        self.root = root

    def __enter__(self):
        self.before = snapshot(self.root)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            after = snapshot(self.root)
            assert after == self.before, {"added": sorted(set(after) - set(self.before)),
                                          "removed": sorted(set(self.before) - set(after)),
                                          "changed": sorted(k for k in after if k in self.before
                                                            and after[k] != self.before[k])}


@pytest.fixture(scope="module")
def frames():
    return stereo_frames(3, H, W, seed=2)


@pytest.fixture
def pngs(tmp_path, frames):
    return write_png_pair(tmp_path / "in", *frames)


@pytest.fixture
def stream(tmp_path, pngs, tiny_weights):
    """A good 3-frame .svc (gop 2) made by the CLI with the tiny weights."""
    out = tmp_path / "clip.svc"
    ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "--gop", 2, "-q"))
    return out


def api_frames(path, codec):
    lefts, rights = decode_file(path, codec=codec)
    return lefts, rights


def assert_frames_equal(got, want):
    assert len(got) == len(want) and len(got) > 0
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------- round trips


def test_encode_info_decode_mkv(tmp_path, pngs, frames, tiny_weights, tiny_codec):
    out = tmp_path / "clip.svc"
    res = ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "-q"))
    assert res.stdout.startswith(f"{out}: 3 frame pairs 64x48, ")
    seq = SvcReader(out).sequence
    assert (seq.width, seq.height, seq.frame_count, seq.fps_num, seq.fps_den) == (W, H, 3, 30, 1)
    # with P-frames the stream names a model set ("tiny+<inter weights>")
    assert seq.model_name.split("+")[0] == "tiny" and seq.rate == 2.0

    info = ok(svc("info", out)).stdout
    assert "tiny" in info and seq.model_id.hex() in info and "Access units" in info

    ok(svc("decode", out, "-o", tmp_path / "dec", "--weights", tiny_weights, "-q"))
    want_l, want_r = api_frames(out, tiny_codec)
    assert_frames_equal(read_video(tmp_path / "dec.left.mkv"), want_l)
    assert_frames_equal(read_video(tmp_path / "dec.right.mkv"), want_r)
    with av.open(str(tmp_path / "dec.left.mkv")) as c:
        assert c.streams.video[0].average_rate == 30
    # the reconstruction is lossy but not the input (a random model), and no temp file remains
    assert not np.array_equal(want_l[0], frames[0][0])
    assert sorted(os.listdir(tmp_path)) == ["clip.svc", "dec.left.mkv", "dec.right.mkv", "in"]


@pytest.mark.parametrize("fmt", ["png", "sbs-png", "sbs-mkv"])
def test_decode_other_formats(tmp_path, stream, tiny_weights, tiny_codec, fmt):
    want_l, want_r = api_frames(stream, tiny_codec)
    out = tmp_path / "dec"
    res = ok(svc("decode", stream, "-f", fmt, "-o", out, "--weights", tiny_weights))
    assert "decoded 3 frame pairs" in res.stdout
    if fmt == "png":
        assert sorted(os.listdir(out)) == ["left", "right"]
        assert sorted(os.listdir(out / "left")) == ["000000.png", "000001.png", "000002.png"]
        assert_frames_equal(read_png_folder(out / "left"), want_l)
        assert_frames_equal(read_png_folder(out / "right"), want_r)
    else:
        sbs = read_png_folder(out) if fmt == "sbs-png" else read_video(tmp_path / "dec.mkv")
        assert_frames_equal(sbs, [np.concatenate([a, b], axis=1) for a, b in zip(want_l, want_r)])


def test_decode_default_output_name(tmp_path, stream, tiny_weights, tiny_codec):
    ok(svc("decode", stream, "--weights", tiny_weights, "-q"))
    assert_frames_equal(read_video(tmp_path / "clip.left.mkv"), api_frames(stream, tiny_codec)[0])


def test_decode_replaces_previous_output_only_with_y(tmp_path, stream, tiny_weights):
    ok(svc("decode", stream, "-f", "png", "-o", tmp_path / "dec", "--weights", tiny_weights, "-q"))
    with Unchanged(tmp_path):
        fails(svc("decode", stream, "-f", "png", "-o", tmp_path / "dec", "--weights", tiny_weights, "-q"),
              "already exists (use -y")
        fails(svc("decode", stream, "-f", "png", "-o", tmp_path / "dec", "--weights", tiny_weights, "-q", "-n"),
              "already exists")
    ok(svc("decode", stream, "-f", "png", "-o", tmp_path / "dec", "--weights", tiny_weights, "-q", "-y"))
    assert len(os.listdir(tmp_path / "dec" / "left")) == 3
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_info_json(stream):
    d = json.loads(ok(svc("info", stream, "--json")).stdout)
    r = SvcReader(stream)
    aus = [au for _, g in r for au in g]
    assert d["file_size"] == stream.stat().st_size
    assert d["sequence"]["frame_count"] == 3 and d["sequence"]["model_name"].split("+")[0] == "tiny"
    assert [g["frame_count"] for g in d["gops"]] == [2, 1]
    assert len(d["access_units"]) == 3
    for j, au in zip(d["access_units"], aus):
        assert j["payload_bytes"] == au.payload_bytes() > 0
        assert [s["size"] for s in j["substreams"]] == [len(s.data) for s in au.substreams]
        assert sum(s["size"] for s in j["substreams"]) == j["payload_bytes"]
        assert j["recon_crc32"] == f"{au.recon_crc32:08x}"
    assert d["overhead_bytes"] == d["file_size"] - sum(j["payload_bytes"] for j in d["access_units"])
    assert "access_units" not in json.loads(ok(svc("info", stream, "--json", "--no-frames")).stdout)


def test_encode_json_report(tmp_path, pngs, tiny_weights):
    out = tmp_path / "c.svc"
    d = json.loads(ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "--json")).stdout)
    assert d["bytes"] == out.stat().st_size and d["frames"] == 3
    assert d["payload_bytes"] + d["container_overhead_bytes"] == d["bytes"]
    assert [f["index"] for f in d["per_frame"]] == [0, 1, 2]
    assert sum(f["bytes"] for f in d["per_frame"]) == d["payload_bytes"]


def test_video_and_side_by_side_inputs_give_the_same_stream(tmp_path, pngs, frames, tiny_weights):
    """Lossless video inputs (FFV1 .mkv, libx264rgb .mp4) and a side-by-side video decode to
    the same RGB frames as the PNGs, so all encode to byte-identical .svc files."""
    lefts, rights = frames
    ok(svc("encode", *pngs, "-o", tmp_path / "png.svc", "--weights", tiny_weights, "-q"))
    l_mkv = write_video(tmp_path / "l.mkv", lefts)
    r_mp4 = write_video(tmp_path / "r.mp4", rights, codec="libx264rgb")
    sbs = write_video(tmp_path / "sbs.mkv", [np.concatenate([a, b], axis=1) for a, b in zip(lefts, rights)])
    ok(svc("encode", l_mkv, r_mp4, "-o", tmp_path / "vid.svc", "--weights", tiny_weights, "-q"))
    ok(svc("encode", sbs, "--sbs", "-o", tmp_path / "sbs.svc", "--weights", tiny_weights, "-q"))
    ref = (tmp_path / "png.svc").read_bytes()
    assert (tmp_path / "vid.svc").read_bytes() == ref
    assert (tmp_path / "sbs.svc").read_bytes() == ref


def test_phone_video_is_coded_upright_unless_told_otherwise(tmp_path, pngs, frames, tiny_weights):
    """Videos whose display matrix says 'turn 90 degrees clockwise' (a phone held upright) code
    like PNGs of the upright frames, with a note; --no-autorotate codes them as stored."""
    lefts, rights = frames
    display = (-90, False, False)
    l = write_video(tmp_path / "l.mp4", lefts, codec="libx264rgb", display=display)
    r = write_video(tmp_path / "r.mp4", rights, codec="libx264rgb", display=display)
    upright = write_png_pair(tmp_path / "up", [np.rot90(a, -1) for a in lefts], [np.rot90(b, -1) for b in rights])
    ok(svc("encode", *upright, "-o", tmp_path / "up.svc", "--weights", tiny_weights, "-q"))
    res = ok(svc("encode", l, r, "-o", tmp_path / "phone.svc", "--weights", tiny_weights, "-q"))
    assert (tmp_path / "phone.svc").read_bytes() == (tmp_path / "up.svc").read_bytes()
    seq = SvcReader(tmp_path / "phone.svc").sequence
    assert (seq.width, seq.height) == (H, W)
    assert "svc: note: " in res.stderr and "rotated 90 degrees clockwise" in res.stderr
    ok(svc("encode", *pngs, "-o", tmp_path / "png.svc", "--weights", tiny_weights, "-q"))
    res = ok(svc("encode", l, r, "-o", tmp_path / "stored.svc", "--no-autorotate", "--weights", tiny_weights, "-q"))
    assert (tmp_path / "stored.svc").read_bytes() == (tmp_path / "png.svc").read_bytes()
    assert "rotated" not in res.stderr


def test_non_square_pixels_travel_with_the_stream(tmp_path, frames, tiny_weights, tiny_codec):
    """An anamorphic source: coded as stored (same bytes but for the header item), svc info shows
    its ratio, and decode says how to show the output, which has no field for it."""
    lefts, rights = frames
    l = write_video(tmp_path / "l.mp4", lefts, codec="libx264rgb", sar=Fraction(4, 3))
    r = write_video(tmp_path / "r.mp4", rights, codec="libx264rgb", sar=Fraction(4, 3))
    res = ok(svc("encode", l, r, "-o", tmp_path / "wide.svc", "--weights", tiny_weights, "-q"))
    assert "pixels are not square (sample aspect ratio 4:3)" in res.stderr
    reader = SvcReader(tmp_path / "wide.svc")
    assert reader.version == (2, 1) and reader.sequence.sample_aspect == (4, 3)
    assert api_frames(tmp_path / "wide.svc", tiny_codec)[0][0].shape == (H, W, 3)
    info = ok(svc("info", tmp_path / "wide.svc", "--json"))
    assert json.loads(info.stdout)["sequence"]["sample_aspect"] == "4:3"
    res = ok(svc("decode", tmp_path / "wide.svc", "-o", tmp_path / "dec", "--weights", tiny_weights, "-q"))
    assert f"the source's pixels are not square (4:3)" in res.stderr and f"show it {round(W * 4 / 3)}x{H}" in res.stderr
    assert read_video(tmp_path / "dec.left.mkv")[0].shape == (H, W, 3)


def test_grey_round_trip(tmp_path, tiny_weights, tiny_codec):
    lefts, rights = stereo_frames(2, H, W, seed=8, grey=True)
    l, r = write_png_pair(tmp_path / "in", lefts, rights, grey=True)
    out = tmp_path / "g.svc"
    ok(svc("encode", l, r, "-o", out, "--weights", tiny_weights, "-q"))
    assert SvcReader(out).sequence.colour == Colour.GREY
    want_l, want_r = api_frames(out, tiny_codec)
    ok(svc("decode", out, "-o", tmp_path / "dec", "--weights", tiny_weights, "-q"))
    got = read_video(tmp_path / "dec.left.mkv")
    assert got[0].ndim == 2
    assert_frames_equal(got, [to_grey(f) for f in want_l])
    assert_frames_equal(read_video(tmp_path / "dec.right.mkv"), [to_grey(f) for f in want_r])
    ok(svc("decode", out, "-f", "png", "-o", tmp_path / "pngs", "--weights", tiny_weights, "-q"))
    with Image.open(tmp_path / "pngs" / "left" / "000000.png") as im:
        assert im.mode == "L"
    assert_frames_equal(read_png_folder(tmp_path / "pngs" / "right"), [to_grey(f) for f in want_r])
    # the same grey content given as RGB frames codes identically, only the colour flag differs
    rgb = encode_frames(lefts, rights, tmp_path / "rgb.svc", codec=tiny_codec)
    a = [au for _, g in SvcReader(out) for au in g]
    b = [au for _, g in SvcReader(tmp_path / "rgb.svc") for au in g]
    assert [x.recon_crc32 for x in a] == [x.recon_crc32 for x in b] and rgb.frames == 2


def test_frames_option_limits(tmp_path, pngs, tiny_weights):
    ok(svc("encode", *pngs, "-o", tmp_path / "all.svc", "--weights", tiny_weights, "-q"))
    ok(svc("encode", *pngs, "-o", tmp_path / "two.svc", "--frames", 2, "--weights", tiny_weights, "-q"))
    assert SvcReader(tmp_path / "two.svc").sequence.frame_count == 2
    a = [au for _, g in SvcReader(tmp_path / "all.svc") for au in g]
    b = [au for _, g in SvcReader(tmp_path / "two.svc") for au in g]
    assert [x.recon_crc32 for x in b] == [x.recon_crc32 for x in a[:2]]
    ok(svc("decode", tmp_path / "two.svc", "-o", tmp_path / "d", "--weights", tiny_weights, "-q"))
    assert len(read_video(tmp_path / "d.left.mkv")) == 2


def test_options_reach_the_stream(tmp_path, pngs, tiny_weights):
    out = tmp_path / "o.svc"
    ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "-q", "--rate", "1.3",
           "--gop", 1, "--fps", "30000/1001", "--threads", 1))
    r = SvcReader(out)
    assert r.sequence.rate == 1.3 and r.sequence.gop_size == 1 and len(r.gops) == 3
    assert (r.sequence.fps_num, r.sequence.fps_den) == (30000, 1001)


def test_paths_with_markup_characters_are_printed_verbatim(tmp_path, pngs, tiny_weights):
    # "[...]" and ":name:" are rich markup / emoji codes; in a file name they are just text
    folder = tmp_path / "take[red]["
    folder.mkdir()
    out = folder / "i]_:100:.svc"  # the full path holds "[red]", "[/i]" and ":100:"
    assert "[/i]" in str(out)
    res = ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "-q"))
    assert out.is_file()
    # verbatim and on one line (no markup, no wrapping at 80 columns when piped)
    assert res.stdout.splitlines()[0].startswith(f"{out}: 3 frame pairs 64x48, ")
    assert str(out) in ok(svc("info", out, "--no-frames")).stdout.splitlines()[0]


def test_scene_cuts_are_reported_and_can_be_turned_off(tmp_path, shipped_codec):
    """Shipped weights, two unrelated 3-frame scenes: the report names the cut; --no-scenecut
    codes one GOP and says nothing of cuts (JSON: an empty list)."""
    (la, ra), (lb, rb) = stereo_frames(3, 64, 64, seed=0), stereo_frames(3, 64, 64, seed=5)
    l, r = write_png_pair(tmp_path / "in", la + lb, ra + rb)
    res = ok(svc("encode", l, r, "-o", tmp_path / "cut.svc", "--rate", "1", "-q"))
    assert "scene cuts (new GOP, I-frame pair): frame 3" in res.stdout
    assert [g.frame_count for g in SvcReader(tmp_path / "cut.svc").gops] == [3, 3]
    res = ok(svc("encode", l, r, "-o", tmp_path / "one.svc", "--rate", "1", "--no-scenecut", "-q", "--json"))
    assert json.loads(res.stdout)["scene_cuts"] == []
    assert [g.frame_count for g in SvcReader(tmp_path / "one.svc").gops] == [6]


def test_shipped_weights_round_trip_with_the_real_executable(tmp_path, shipped_codec):
    """`svc` as installed, default weights, 64x64, 2 frames: decoded video == API decode.
    (One real process for encode and one for an error; each costs seconds of imports.)"""
    exe = shutil.which("svc") or pytest.skip("svc is not on PATH")
    lefts, rights = stereo_frames(2, 64, 64, seed=9)
    l, r = write_png_pair(tmp_path / "in", lefts, rights)
    env = {k: v for k, v in os.environ.items() if k != "SVC_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "c.svc"
    run = lambda *a: subprocess.run([exe, *map(str, a)], capture_output=True, text=True, env=env, timeout=300)
    p = run("encode", l, r, "-o", out, "-q", "--threads", 1)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no warnings or progress leak out with -q
    assert p.stdout.startswith(f"{out}: 2 frame pairs 64x64, ")
    seq = SvcReader(out).sequence
    assert seq.model_name.split("+")[0] == "elic_small_vr"
    ok(svc("decode", out, "-o", tmp_path / "d", "-q"))  # weights named by the stream
    want_l, want_r = api_frames(out, shipped_codec)
    assert_frames_equal(read_video(tmp_path / "d.left.mkv"), want_l)
    assert_frames_equal(read_video(tmp_path / "d.right.mkv"), want_r)
    # an error from the real process: exit 1, one line, nothing else on stderr
    (tmp_path / "bad.svc").write_bytes(b"nope" * 10)
    p = run("info", tmp_path / "bad.svc")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith("svc: error: ")
    assert "magic" in p.stderr


# ------------------------------------------------------------------- nothing a user has is lost


def test_encode_never_replaces_an_existing_file_without_y(tmp_path, pngs, tiny_weights):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    with Unchanged(tmp_path):
        fails(svc("encode", *pngs, "-o", precious, "--weights", tiny_weights, "-q"), "already exists (use -y")
        fails(svc("encode", *pngs, "-o", precious, "--weights", tiny_weights, "-q", "-n"), "not overwritten")
        res = svc("encode", *pngs, "-o", precious, "--weights", tiny_weights, "-q", "-n", "-y")
        assert res.exit_code == 2 and "exclude each other" in res.stderr
    ok(svc("encode", *pngs, "-o", precious, "--weights", tiny_weights, "-q", "-y"))
    assert SvcReader(precious).sequence.frame_count == 3
    assert sorted(os.listdir(tmp_path)) == ["in", "precious.txt"]  # and no temporary


def test_encode_output_is_never_an_input(tmp_path, frames, tiny_weights):
    """By path, through a symbolic link and through a hard link (same inode), even with -y."""
    lv = write_video(tmp_path / "l.mkv", frames[0])
    rv = write_video(tmp_path / "r.mkv", frames[1])
    os.symlink(lv, tmp_path / "sym.svc")
    os.link(rv, tmp_path / "hard.svc")
    with Unchanged(tmp_path):
        for out in (lv, tmp_path / "." / "r.mkv", tmp_path / "sym.svc", tmp_path / "hard.svc"):
            fails(svc("encode", lv, rv, "-o", out, "--weights", tiny_weights, "-q", "-y"), "overwrite the input")


def test_default_decode_names_leave_the_sources_alone(tmp_path, frames, tiny_weights):
    """The issue's scenario: scene_left.mkv/scene_right.mkv -> scene.svc -> decode with no -o
    must not touch the lossless originals; a second decode is refused, not silently redone."""
    lv = write_video(tmp_path / "scene_left.mkv", frames[0])
    rv = write_video(tmp_path / "scene_right.mkv", frames[1])
    ok(svc("encode", lv, rv, "-o", tmp_path / "scene.svc", "--weights", tiny_weights, "-q"))
    sources = {p: Path(p).read_bytes() for p in (lv, rv)}
    ok(svc("decode", tmp_path / "scene.svc", "--weights", tiny_weights, "-q"))
    assert all(Path(p).read_bytes() == b for p, b in sources.items())
    assert sorted(os.listdir(tmp_path)) == ["scene.left.mkv", "scene.right.mkv", "scene.svc",
                                            "scene_left.mkv", "scene_right.mkv"]
    with Unchanged(tmp_path):
        fails(svc("decode", tmp_path / "scene.svc", "--weights", tiny_weights, "-q"), "scene.left.mkv: already exists")
    (tmp_path / "scene.left.mkv").unlink()  # one of the two still exists: still refused
    with Unchanged(tmp_path):
        fails(svc("decode", tmp_path / "scene.svc", "--weights", tiny_weights, "-q"), "scene.right.mkv: already exists")


def test_decode_output_is_never_the_stream(tmp_path, stream, tiny_weights):
    """`svc decode st.mkv -f sbs-mkv -o st.mkv` and friends, by path and by inode, even with -y."""
    st = tmp_path / "st.mkv"
    shutil.copy(stream, st)
    os.link(st, tmp_path / "alias.mkv")
    with Unchanged(tmp_path):
        for fmt, out in (("sbs-mkv", st), ("sbs-mkv", tmp_path / "st"), ("sbs-mkv", tmp_path / "alias.mkv"),
                         ("sbs-png", st), ("png", st)):
            line = fails(svc("decode", st, "-f", fmt, "-o", out, "--weights", tiny_weights, "-q", "-y"))
            assert "overwrite the input" in line or "not a previous" in line, line
    for fmt in ("mkv", "sbs-mkv", "png", "sbs-png"):  # and the default names never are
        ok(svc("decode", st, "-f", fmt, "--weights", tiny_weights, "-q"))
    assert st.read_bytes() == stream.read_bytes()


# ------------------------------------------------------------------- bad encode inputs


def test_missing_input(tmp_path, pngs, tiny_weights):
    with Unchanged(tmp_path):
        fails(svc("encode", tmp_path / "nope.mp4", pngs[1], "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "no such file")
        fails(svc("encode", pngs[0], tmp_path / "nope", "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "no such file")


def test_text_file_named_mp4(tmp_path, pngs, tiny_weights):
    (tmp_path / "fake.mp4").write_text("this is not a video\n")
    with Unchanged(tmp_path):
        fails(svc("encode", tmp_path / "fake.mp4", pngs[1], "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "fake.mp4")
        fails(svc("encode", tmp_path / "fake.mp4", "--sbs", "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "fake.mp4")


def test_views_of_different_size(tmp_path, frames, tiny_weights):
    l = write_png_folder(tmp_path / "l", frames[0])
    r = write_png_folder(tmp_path / "r", [f[:, :32] for f in frames[1]])
    with Unchanged(tmp_path):
        fails(svc("encode", l, r, "-o", tmp_path / "o.svc", "--weights", tiny_weights), "32x48")


def test_image_of_different_size_inside_a_folder(tmp_path, frames, tiny_weights):
    l = write_png_folder(tmp_path / "l", frames[0])
    r = write_png_folder(tmp_path / "r", frames[1])
    Image.fromarray(frames[1][0][:40]).save(Path(r) / "0002.png")
    with Unchanged(tmp_path):
        fails(svc("encode", l, r, "-o", tmp_path / "o.svc", "--weights", tiny_weights), "0002.png")


def test_different_frame_counts(tmp_path, frames, tiny_weights):
    lefts, rights = frames
    lp = write_png_folder(tmp_path / "l", lefts)
    rp = write_png_folder(tmp_path / "r", rights[:2])
    lv = write_video(tmp_path / "l.mkv", lefts)
    rv = write_video(tmp_path / "r.mkv", rights[:2])  # count unknown up front: fails mid-encode
    out = tmp_path / "o.svc"
    with Unchanged(tmp_path):
        fails(svc("encode", lp, rp, "-o", out, "--weights", tiny_weights, "-q"), "frames")
        fails(svc("encode", lv, rv, "-o", out, "--weights", tiny_weights, "-q"), "ended after 2 frames")
        fails(svc("encode", rv, lv, "-o", out, "--weights", tiny_weights, "-q"), "ended after 2 frames")


def test_different_fps(tmp_path, frames, tiny_weights):
    lv = write_video(tmp_path / "l.mkv", frames[0], fps=30)
    rv = write_video(tmp_path / "r.mkv", frames[1], fps=25)
    with Unchanged(tmp_path):
        fails(svc("encode", lv, rv, "-o", tmp_path / "o.svc", "--weights", tiny_weights), "fps")


def test_zero_frames(tmp_path, pngs, tiny_weights):
    (tmp_path / "empty").mkdir()
    with Unchanged(tmp_path):
        fails(svc("encode", tmp_path / "empty", pngs[1], "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "no PNG")
        fails(svc("encode", pngs[0], tmp_path / "empty", "-o", tmp_path / "o.svc",
                  "--weights", tiny_weights), "no PNG")


def test_bad_encode_options(tmp_path, pngs, tiny_weights):
    with Unchanged(tmp_path):
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "--rate", 4), "rate")
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "--gop", 0), "gop")
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "--frames", 0), "frames")
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "--fps", "abc"), "abc")
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "--refine", -1), "refine")


def test_encode_output_not_writable(tmp_path, pngs, tiny_weights):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with Unchanged(tmp_path):
        fails(svc("encode", *pngs, "-o", tmp_path / "no" / "such" / "o.svc", "--weights", tiny_weights))
        fails(svc("encode", *pngs, "-o", tmp_path / "afile" / "o.svc", "--weights", tiny_weights))
        fails(svc("encode", *pngs, "-o", tmp_path / "adir", "--weights", tiny_weights), "directory")


def test_encode_refuses_to_overwrite_its_input(tmp_path, frames, tiny_weights):
    lv = write_video(tmp_path / "l.mkv", frames[0])
    rv = write_video(tmp_path / "r.mkv", frames[1])
    with Unchanged(tmp_path):
        fails(svc("encode", lv, rv, "-o", rv, "--weights", tiny_weights), "overwrite")


def test_encode_with_missing_weights(tmp_path, pngs):
    with Unchanged(tmp_path):
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", tmp_path / "none.safetensors"),
              "weights not found")
        fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--weights", "no_such_model"), "weights not found")


# ------------------------------------------------------------------- bad streams


def _decode_and_info_fail(tmp_path, path, weights, match=None):
    with Unchanged(tmp_path):
        for fmt in ("mkv", "png"):
            fails(svc("decode", path, "-f", fmt, "-o", tmp_path / "out", "--weights", weights, "-q"), match)
        fails(svc("info", path), match)
        fails(svc("info", path, "--json"), match)


@pytest.mark.parametrize("cut", ["4", "header", "gop", "mid", "trailer", "last"])
def test_truncated_stream(tmp_path, stream, tiny_weights, cut):
    data = stream.read_bytes()
    r = SvcReader(stream)
    n = {"4": 4, "header": 20, "gop": r.gop_offsets[1] + 5, "mid": len(data) // 2,
         "trailer": len(data) - 10, "last": len(data) - 1}[cut]
    bad = tmp_path / "cut.svc"
    bad.write_bytes(data[:n])
    _decode_and_info_fail(tmp_path, bad, tiny_weights)


@pytest.mark.parametrize("where", [0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
def test_bit_flipped_stream(tmp_path, stream, tiny_weights, where):
    data = bytearray(stream.read_bytes())
    data[int(len(data) * where)] ^= 0x04
    bad = tmp_path / "flip.svc"
    bad.write_bytes(bytes(data))
    _decode_and_info_fail(tmp_path, bad, tiny_weights)


def test_flip_in_last_frame_leaves_no_partial_output_and_keeps_old_output(tmp_path, stream, tiny_weights):
    """Frames 0-1 decode and are written before frame 2 turns out corrupt: everything written
    is dropped, and a previous decode's output stays as it was."""
    for fmt, out in (("mkv", "dec"), ("png", "decpng")):
        ok(svc("decode", stream, "-f", fmt, "-o", tmp_path / out, "--weights", tiny_weights, "-q"))
    r = SvcReader(stream)
    data = bytearray(stream.read_bytes())
    data[r.gop_offsets[1] + 40] ^= 0x01  # inside frame 2, the only AU of GOP 1
    bad = tmp_path / "late.svc"
    bad.write_bytes(bytes(data))
    with Unchanged(tmp_path):
        for fmt, out in (("mkv", "dec"), ("png", "decpng"), ("sbs-mkv", "new"), ("png", "newpng")):
            fails(svc("decode", bad, "-f", fmt, "-o", tmp_path / out, "--weights", tiny_weights, "-q", "-y"),
                  "access unit 2")


def test_wrong_magic(tmp_path, stream, tiny_weights):
    data = bytearray(stream.read_bytes())
    assert data[:4] == MAGIC
    data[1:4] = b"XYZ"
    bad = tmp_path / "magic.svc"
    bad.write_bytes(bytes(data))
    _decode_and_info_fail(tmp_path, bad, tiny_weights, "magic")
    (tmp_path / "text.svc").write_text("just some text, long enough to hold a header\n" * 3)
    _decode_and_info_fail(tmp_path, tmp_path / "text.svc", tiny_weights, "magic")
    (tmp_path / "empty.svc").write_bytes(b"")
    _decode_and_info_fail(tmp_path, tmp_path / "empty.svc", tiny_weights)


def test_unknown_version(tmp_path, stream, tiny_weights):
    data = bytearray(stream.read_bytes())
    data[4] = 3  # major version
    bad = tmp_path / "v3.svc"
    bad.write_bytes(bytes(data))
    _decode_and_info_fail(tmp_path, bad, tiny_weights, "version 3.")  # 3.<minor of this release>


def test_stream_with_other_weights(tmp_path, stream, tiny_weights, other_weights):
    with Unchanged(tmp_path):
        line = fails(svc("decode", stream, "-o", tmp_path / "d", "--weights", other_weights, "-q"), "weights")
        assert "--weights" in line
        fails(svc("decode", stream, "-o", tmp_path / "d", "--weights", tmp_path / "missing.safetensors", "-q"),
              "weights not found")
        fails(svc("decode", stream, "-o", tmp_path / "d", "-q"), "tiny")  # "tiny" is not shipped
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with Unchanged(tmp_path):
        fails(svc("decode", stream, "-o", tmp_path / "d", "--weights", tmp_path / "junk.safetensors", "-q"),
              "not a valid")


def test_missing_or_directory_stream(tmp_path, tiny_weights):
    (tmp_path / "dir.svc").mkdir()
    with Unchanged(tmp_path):
        for p in (tmp_path / "none.svc", tmp_path / "dir.svc"):
            fails(svc("decode", p, "-o", tmp_path / "d", "--weights", tiny_weights, "-q"))
            fails(svc("info", p))


def test_decode_output_not_writable(tmp_path, stream, tiny_weights):
    (tmp_path / "afile").write_text("x")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    (tmp_path / "clash.left.mkv").mkdir()  # a folder where a video file should go
    with Unchanged(tmp_path):
        fails(svc("decode", stream, "-o", tmp_path / "no" / "such" / "d", "--weights", tiny_weights, "-q"))
        fails(svc("decode", stream, "-o", tmp_path / "afile" / "d", "--weights", tiny_weights, "-q"))
        fails(svc("decode", stream, "-f", "png", "-o", tmp_path / "afile" / "d", "--weights", tiny_weights, "-q"))
        fails(svc("decode", stream, "-f", "png", "-o", user, "--weights", tiny_weights, "-q"), "already exists")
        fails(svc("decode", stream, "-o", tmp_path / "clash", "--weights", tiny_weights, "-q"), "folder")


def test_encode_never_replaces_a_file_that_appears_while_it_runs(tmp_path, pngs, tiny_weights, monkeypatch):
    """The output name is checked at the start and again when the finished stream is moved
    into place: a file created under that name in between survives (and nothing else is left)."""
    import svcodec.codec.session as session

    real = session.encode_pairs
    out = tmp_path / "o.svc"

    def encode_then_someone_writes(*args, **kw):
        report = real(*args, **kw)
        out.write_text("someone else's")
        return report

    monkeypatch.setattr(session, "encode_pairs", encode_then_someone_writes)
    fails(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "-q"), "already exists")
    assert out.read_text() == "someone else's"
    assert sorted(os.listdir(tmp_path)) == ["in", "o.svc"]
    ok(svc("encode", *pngs, "-o", out, "--weights", tiny_weights, "-q", "-y"))  # -y: replaced
    assert SvcReader(out).sequence.frame_count == 3


@pytest.mark.parametrize("message, expect", [
    ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
     "allocate 224133120 bytes. Error code 12 (Cannot allocate memory)", "out of memory (an allocation of 214 MiB failed)"),
    ("CUDA out of memory. Tried to allocate 20.00 MiB", "the GPU ran out of memory; run with --device cpu"),
])
def test_out_of_memory_is_one_line_naming_the_cause_and_leaves_nothing(tmp_path, pngs, tiny_weights, monkeypatch,
                                                                          message, expect):
    """Running out of memory mid-encode (measured: 512x288 under `ulimit -v 4800000`) is a
    resource limit, not an internal error: exit 1, one line that says so, no partial output."""
    import svcodec.codec.session as session

    real, calls = session.encode_intra_refined, []

    def encode_until_memory_runs_out(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(message)
        return real(*args, **kw)

    monkeypatch.setattr(session, "encode_intra_refined", encode_until_memory_runs_out)
    before = snapshot(tmp_path)
    fails(svc("encode", *pngs, "-o", tmp_path / "o.svc", "--gop", 1, "--weights", tiny_weights, "-q"), expect)
    assert len(calls) == 2
    assert snapshot(tmp_path) == before


def test_help_lists_every_environment_variable_the_codec_reads():
    """`svc --help` names each SVC_* variable read outside the trainers, so none is a secret."""
    import re

    root = Path(__file__).resolve().parent.parent / "svcodec"
    names = {m for p in root.rglob("*.py") if "train" not in p.relative_to(root).parts
             for m in re.findall(r'"(SVC_[A-Z_]+)"', p.read_text())}
    assert {"SVC_DEBUG", "SVC_REAPER", "SVC_MALLOC_TUNING"} <= names
    text = ok(svc("--help")).output
    assert [n for n in sorted(names) if n not in text] == []
