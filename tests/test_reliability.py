"""What a user can count on (docs/RELIABILITY.md): real signals on real `svc` processes leave no
file behind and give the terminal back; input and stream errors come before torch is imported;
inputs svc cannot code faithfully are refused or announced."""

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import stereo_frames, write_png_pair, write_video
from svcodec.cli.main import main
from svcodec.codec.api import encode_frames
from svcodec.container import AccessUnit, FrameType, SvcReader, SvcWriter
from svcodec.container.mutate import crafted_stream

pytestmark = pytest.mark.usefixtures("one_thread")

SIGNALS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
HIDE, SHOW = b"\x1b[?25l", b"\x1b[?25h"


def env():
    e = {k: v for k, v in os.environ.items() if k != "SVC_DEBUG"}
    e.update(OMP_NUM_THREADS="1", TERM="xterm", COLUMNS="100")
    return e


def svc_process(args, **kw):
    """A real `svc` (python -m svcodec.cli.main, the entry point's code) as a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "svcodec.cli.main", *map(str, args)], env=env(),
                            stdin=subprocess.DEVNULL, **kw)


# ------------------------------------------------------------------- signals


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A side-by-side FFV1 clip long enough (240 pairs of 256x192) that encoding is still busy
    when the signal comes."""
    lefts, rights = stereo_frames(4, 192, 256, seed=11)
    sbs = [np.concatenate([a, b], axis=1) for a, b in zip(lefts, rights)]
    return write_video(tmp_path_factory.mktemp("clip") / "sbs.mkv", sbs * 60)


@pytest.fixture(scope="module")
def long_stream(tmp_path_factory, tiny_codec):
    """A 300-frame stream, cheap to make: one coded 256x192 frame pair repeated (I-frames decode
    on their own, so the copies are a valid stream)."""
    root = tmp_path_factory.mktemp("long")
    lefts, rights = stereo_frames(1, 192, 256, seed=12)
    encode_frames(lefts, rights, root / "one.svc", gop=30, codec=tiny_codec)  # header: 30-frame GOPs
    reader = SvcReader(root / "one.svc")
    (au,) = reader.read_gop(0)
    path = root / "long.svc"
    with SvcWriter(path, reader.sequence) as w:
        for g in range(0, 300, 30):
            w.write_gop([AccessUnit(g + k, FrameType.I, au.recon_crc32, au.substreams) for k in range(30)])
    return path


def interrupt(args, cwd, sig, busy):
    """Run `svc` with stderr on a pseudo-terminal (so the progress bar hides the cursor), send
    `sig` once `busy()` says the command has temporaries on disk and the bar is drawn, and
    return (exit code, what the terminal received)."""
    master, slave = pty.openpty()
    proc = svc_process(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave, start_new_session=True)
    os.close(slave)
    received = bytearray()

    def drain():  # a full pty would block the child
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not (busy() and HIDE in received):  # temporaries on disk and the progress bar drawn
            assert proc.poll() is None, ("svc ended before the signal", proc.returncode, bytes(received))
            assert time.monotonic() < deadline, ("svc never got going", bytes(received))
            time.sleep(0.02)
        time.sleep(0.3)  # inside the frame loop
        assert proc.poll() is None, "the clip is too short: svc finished before the signal"
        proc.send_signal(getattr(signal, sig))
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    os.close(master)
    return code, bytes(received)


def hidden(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


def check_interrupted(code, tty, sig):
    assert code == SIGNALS[sig], (code, tty[-500:])
    assert f"svc: interrupted ({sig})".encode() in tty
    assert HIDE in tty, "the progress bar never hid the cursor: the test did not exercise it"
    assert tty.rfind(SHOW) > tty.rfind(HIDE), "cursor left hidden"


@pytest.mark.parametrize("sig", list(SIGNALS))
def test_signal_during_encode_leaves_nothing(tmp_path, long_clip, tiny_weights, sig):
    out = tmp_path / "out"
    out.mkdir()
    code, tty = interrupt(["encode", long_clip, "--sbs", "-o", out / "clip.svc", "--weights", tiny_weights,
                           "--gop", 1, "--threads", 1], tmp_path, sig,
                          lambda: len(hidden(out)) >= 2)  # the reserved name and the writer's temporary
    check_interrupted(code, tty, sig)
    assert os.listdir(out) == []  # no .svc, no temporary, nothing hidden


# PNG output (a hidden folder of frames) with one signal: the cleanup path is the same
@pytest.mark.parametrize("fmt,sig", [("mkv", s) for s in SIGNALS] + [("png", "SIGTERM")])
def test_signal_during_decode_leaves_nothing(tmp_path, long_stream, tiny_weights, sig, fmt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, tty = interrupt(["decode", long_stream, "-f", fmt, "-o", out / "dec", "--weights", tiny_weights,
                           "--threads", 1], tmp_path, sig, lambda: hidden(out))
    check_interrupted(code, tty, sig)
    assert os.listdir(out) == ["mine.txt"]


# SIGKILL (what the out-of-memory killer sends) cannot be caught: the reaper process removes
# the temporaries instead, a moment after the kill.
def wait_until_only(folder, names, seconds=20):
    deadline = time.monotonic() + seconds
    while sorted(os.listdir(folder)) != sorted(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(os.listdir(folder))


def test_sigkill_during_encode_leaves_nothing(tmp_path, long_clip, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    code, _ = interrupt(["encode", long_clip, "--sbs", "-o", out / "clip.svc", "--weights", tiny_weights,
                         "--gop", 1, "--threads", 1], tmp_path, "SIGKILL", lambda: len(hidden(out)) >= 2)
    assert code == -signal.SIGKILL
    assert wait_until_only(out, []) == []


@pytest.mark.parametrize("fmt", ["mkv", "png"])
def test_sigkill_during_decode_leaves_nothing(tmp_path, long_stream, tiny_weights, fmt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _ = interrupt(["decode", long_stream, "-f", fmt, "-o", out / "dec", "--weights", tiny_weights,
                         "--threads", 1], tmp_path, "SIGKILL", lambda: hidden(out))
    assert code == -signal.SIGKILL
    assert wait_until_only(out, ["mine.txt"]) == ["mine.txt"]


KILLED_WRITER = """
import os, signal, sys
from svcodec import fsutil
d = sys.argv[1]
fsutil.create_temp_file(os.path.join(d, "a.svc"))
frames = fsutil.create_temp_dir(os.path.join(d, "frames"))
open(os.path.join(frames, "0.png"), "w").close()
done = fsutil.create_temp_file(os.path.join(d, "done.svc"))
fsutil.publish(done, os.path.join(d, "done.svc"), overwrite=False)
fsutil.discard(fsutil.create_temp_file(os.path.join(d, "gone.svc")))
print(len(os.listdir(d)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("reaper", ["1", "0"])
def test_reaper_removes_only_what_a_killed_process_left(tmp_path, reaper):
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, text=True,
                       env={**env(), "SVC_REAPER": reaper}, timeout=60)
    assert p.returncode == -signal.SIGKILL and p.stdout.strip() == "3", p
    if reaper == "1":
        assert wait_until_only(tmp_path, ["done.svc"]) == ["done.svc"]  # published output kept
    else:  # switched off, the two temporaries stay: what the reaper is there for
        time.sleep(0.5)
        assert len(hidden(tmp_path)) == 2


def test_reaper_runs_only_while_temporaries_exist(tmp_path):
    from svcodec import fsutil

    tmp = fsutil.create_temp_file(str(tmp_path / "x.svc"))
    reaper = fsutil._reaper
    assert reaper is not None and reaper.poll() is None
    fsutil.publish(tmp, str(tmp_path / "x.svc"), overwrite=False)
    assert fsutil._reaper is None and reaper.returncode == 0
    assert os.listdir(tmp_path) == ["x.svc"]


# ------------------------------------------------------------------- start-up: no torch for errors


def imported_modules(stderr: str) -> set:
    """Module names from `python -X importtime` lines ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


def run_importtime(args, cwd):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "svcodec.cli.main", *map(str, args)],
                       cwd=cwd, env=env(), capture_output=True, text=True, timeout=120)
    lines = [l for l in p.stderr.splitlines() if not l.startswith("import time:")]
    return p.returncode, lines, imported_modules(p.stderr)


def test_errors_come_before_torch_is_imported(tmp_path, pngs_small):
    """Missing file, text given as video, mismatched views, an existing output, a hostile header,
    through `svc encode`/`svc decode`/`svc info`: one line, exit 1, and torch never imported."""
    left, right = pngs_small
    (tmp_path / "notes.txt").write_text("a text file, not a video\n" * 20)
    narrow = write_png_pair(tmp_path / "narrow", *stereo_frames(2, 48, 32))[1]
    (tmp_path / "exists.svc").write_bytes(b"mine")
    (tmp_path / "hostile.svc").write_bytes(crafted_stream(65535, 65535, slices=4))
    cases = [  # (arguments, the file the error names, what it says)
        (["encode", tmp_path / "missing.mp4", right, "-o", tmp_path / "o.svc"], "missing.mp4", "no such file"),
        (["encode", tmp_path / "notes.txt", right, "-o", tmp_path / "o.svc"], "notes.txt", "not a video"),
        (["encode", left, narrow, "-o", tmp_path / "o.svc"], narrow, "32x48"),
        (["encode", left, right, "-o", tmp_path / "exists.svc"], "exists.svc", "already exists"),
        (["info", tmp_path / "hostile.svc"], "hostile.svc", "65535x65535"),
        (["decode", tmp_path / "hostile.svc", "-o", tmp_path / "d"], "hostile.svc", "65535x65535"),
        (["decode", tmp_path / "missing.svc"], "missing.svc", "no such file"),
    ]
    for args, named, message in cases:
        code, lines, modules = run_importtime(args, tmp_path)
        assert code == 1 and len(lines) == 1 and lines[0].startswith("svc: error: "), (args, lines)
        assert message in lines[0], (message, lines[0])
        assert str(tmp_path / named) in lines[0], "the error names the file"
        assert "torch" not in modules and "compressai" not in modules, args
        assert len(modules) > 20  # importtime did report (the check above is not vacuous)
    assert sorted(os.listdir(tmp_path)) == ["exists.svc", "hostile.svc", "in", "narrow", "notes.txt"]


def test_info_never_imports_torch(tmp_path, pngs_small, tiny_weights):
    out = tmp_path / "c.svc"
    assert CliRunner().invoke(main, ["encode", *pngs_small, "-o", str(out), "--weights", str(tiny_weights),
                                     "-q"]).exit_code == 0
    code, lines, modules = run_importtime(["info", out], tmp_path)
    assert code == 0 and "torch" not in modules and "svcodec.container.stream" in modules


@pytest.fixture
def pngs_small(tmp_path):
    return write_png_pair(tmp_path / "in", *stereo_frames(2, 48, 64, seed=3))


# ------------------------------------------------------------------- honest input handling


def svc(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"SVC_DEBUG": None})


def write_10bit_with_audio(path, frames, audio: bool):
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=30)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p10le"
        a = c.add_stream("pcm_s16le", rate=8000) if audio else None
        if a is not None:
            a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv444p10le")
            vf.pts, vf.time_base = i, Fraction(1, 30)
            for p in s.encode(vf):
                c.mux(p)
            if a is not None:
                af = av.AudioFrame.from_ndarray(np.zeros((1, 266), np.int16), format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = 8000, 266 * i, Fraction(1, 8000)
                for p in a.encode(af):
                    c.mux(p)
        for st in filter(None, (s, a)):
            for p in st.encode():
                c.mux(p)
    return str(path)


def test_text_file_is_not_a_video(tmp_path, pngs_small, tiny_weights):
    """FFmpeg turns a .txt file into a 640x400 'video' of rendered text; svc refuses it."""
    (tmp_path / "notes.txt").write_text("meeting notes\n" * 50)
    res = svc("encode", tmp_path / "notes.txt", "--sbs", "-o", tmp_path / "o.svc", "--weights", tiny_weights)
    assert res.exit_code == 1 and res.stderr.startswith(f"svc: error: {tmp_path / 'notes.txt'}: not a video")
    assert not (tmp_path / "o.svc").exists()


def test_notices_for_deep_samples_audio_and_fps(tmp_path, tiny_weights):
    lefts, rights = stereo_frames(2, 48, 64, seed=4)
    l10 = write_10bit_with_audio(tmp_path / "l10.mkv", lefts, audio=True)
    r10 = write_10bit_with_audio(tmp_path / "r10.mkv", rights, audio=False)
    res = svc("encode", l10, r10, "-o", tmp_path / "o.svc", "--weights", tiny_weights, "-q", "--fps", 25)
    assert res.exit_code == 0, res.output
    notes = [l for l in res.stderr.splitlines() if l.startswith("svc: note: ")]
    assert len(notes) == 4 and len(res.stderr.splitlines()) == 4, res.stderr
    assert any("l10.mkv: 10 bits per sample" in n for n in notes)
    assert any("r10.mkv: 10 bits per sample" in n for n in notes)
    assert any("l10.mkv: has audio" in n for n in notes)
    assert any("--fps 25 applies to image folders only" in n for n in notes)
    assert SvcReader(tmp_path / "o.svc").sequence.fps_num == 30  # the video's own rate
    # 8-bit video without audio or --fps: not a word
    res = svc("encode", write_video(tmp_path / "l.mkv", lefts), write_video(tmp_path / "r.mkv", rights),
              "-o", tmp_path / "p.svc", "--weights", tiny_weights, "-q")
    assert res.exit_code == 0 and res.stderr == ""


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264rgb"), ("mkv", "ffv1")])
def test_frames_option_is_consistent_across_containers(tmp_path, tiny_weights, ext, codec):
    """Views of 5 and 3 frames: `--frames 3` is accepted whether or not the container knows its
    frame count (mp4 does, FFV1 mkv does not), and refused without --frames for both."""
    lefts, rights = stereo_frames(5, 48, 64, seed=6)
    lv = write_video(tmp_path / f"l.{ext}", lefts, codec=codec)
    rv = write_video(tmp_path / f"r.{ext}", rights[:3], codec=codec)
    res = svc("encode", lv, rv, "-o", tmp_path / "three.svc", "--frames", 3, "--weights", tiny_weights, "-q")
    assert res.exit_code == 0, res.output
    assert SvcReader(tmp_path / "three.svc").sequence.frame_count == 3
    res = svc("encode", lv, rv, "-o", tmp_path / "all.svc", "--weights", tiny_weights, "-q")
    assert res.exit_code == 1 and "r." + ext in res.stderr and not (tmp_path / "all.svc").exists()


def test_cleanup_failing_after_a_signal_still_exits_as_interrupted(tmp_path, pngs_small, tiny_weights, monkeypatch):
    """After SIGHUP the terminal may be gone and the progress bar's cleanup may fail with
    OSError: svc still removes its temporaries and exits 129, not 'internal error'."""
    import svcodec.codec.session as session
    from svcodec.cli import main as cli_main
    from svcodec.cli import views

    def hang_up(*args, **kw):
        raise cli_main.Interrupted(signal.SIGHUP)

    def broken_stop(progress):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(session, "encode_pairs", hang_up)
    monkeypatch.setattr(views, "_stop", broken_stop)
    out = tmp_path / "out"
    out.mkdir()
    res = svc("encode", *pngs_small, "-o", out / "o.svc", "--weights", tiny_weights)
    assert res.exit_code == 129 and "interrupted (SIGHUP)" in res.stderr, (res.exit_code, res.stderr)
    assert os.listdir(out) == []


def test_api_gop_limit_is_the_containers(tmp_path, tiny_codec):
    """encode_pairs refuses a GOP the container cannot hold with an InputError (an API caller's
    mistake), before anything is written."""
    from svcodec.codec.api import encode_pairs
    from svcodec.container.format import MAX_GOP_SIZE
    from svcodec.errors import InputError

    lefts, rights = stereo_frames(1, 16, 16)
    with pytest.raises(InputError, match=f"1..{MAX_GOP_SIZE}"):
        encode_pairs(zip(lefts, rights), tmp_path / "a.svc", width=16, height=16, fps=Fraction(25),
                     gop=MAX_GOP_SIZE + 1, codec=tiny_codec)
    assert list(tmp_path.iterdir()) == []
