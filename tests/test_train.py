"""Training machinery: the entry point resumes where it stopped (also after SIGTERM), two
gloo processes train together, the pack is deterministic and readable by the loaders, the
video decoder falls back to OpenCV, and derived second views move content by the disparity.

All data here is generated under tmp_path; nothing reads ../shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import smooth_frames, stereo_frames, write_video

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["--config", "tiny", "--crop", "64", "--batch", "2", "--threads", "1", "--log-seconds", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data dir with the shared layout: a stereo clip, a mono clip, two still pairs, and an
    evaluation clip under stereo/ that training and packing must never read."""
    root = tmp_path_factory.mktemp("data")
    (root / "stereo_video").mkdir()
    (root / "mono_video").mkdir()
    lefts, rights = stereo_frames(4, 96, 128, seed=1)
    write_video(root / "stereo_video" / "clip_left.mp4", lefts, codec="libx264rgb")
    write_video(root / "stereo_video" / "clip_right.mp4", rights, codec="libx264rgb")
    write_video(root / "mono_video" / "mono.mp4", smooth_frames(5, 80, 112, seed=2), codec="libx264rgb")
    for i in range(2):
        d = root / "stereo_pairs" / "cam"
        d.mkdir(parents=True, exist_ok=True)
        l, r = stereo_frames(1, 72, 100, seed=10 + i)
        Image.fromarray(l[0]).save(d / f"p{i}_L.png")
        Image.fromarray(r[0]).save(d / f"p{i}_R.png")
    ev = root / "stereo" / "evalclip" / "left"
    ev.mkdir(parents=True)
    Image.fromarray(lefts[0]).save(ev / "0000.png")
    return root


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, SVC_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train(tmp_path, data_dir, ckpt, *extra, timeout=120):
    cmd = [sys.executable, "-m", "svcodec.train", "intra", "--ckpt", str(ckpt), "--data", str(data_dir),
           *TINY_RUN, *extra]
    return subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_entry_point_trains_then_resumes_exactly(tmp_path, data_dir, monkeypatch):
    from svcodec.train.train_intra import main as train_main

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    first = _train(tmp_path, data_dir, a, "--steps", "2", "--minutes", "1")
    assert first.returncode == 0, first.stderr
    assert "steps/s" in first.stdout and "Mpix/s" in first.stdout and "psnr" in first.stdout
    assert _ckpt(a)["step"] == 2
    second = _train(tmp_path, data_dir, a, "--steps", "4", "--minutes", "1")
    assert second.returncode == 0, second.stderr
    assert "resumed at step 2" in second.stdout
    # the same 4 steps in one go, in this process (saves a second start-up)
    monkeypatch.setenv("SVC_CACHE", str(tmp_path / "cache"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    threads = torch.get_num_threads()
    # the codec tests' deterministic inference turns oneDNN off in this process; the training
    # subprocesses above ran with it on: compare the same arithmetic
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    try:
        train_main(["--ckpt", str(b), "--data", str(data_dir), *TINY_RUN, "--steps", "4", "--minutes", "1"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
    ra, rb = _ckpt(a), _ckpt(b)
    assert ra["step"] == rb["step"] == 4
    # same data position, rates and noise after resuming: the same weights as one straight run
    for k, v in rb["model"].items():
        assert torch.equal(ra["model"][k], v), k
    # ... and the same exported weight average (it travels in the checkpoint)
    assert ra["average"]["updates"] == rb["average"]["updates"] == 4
    for k, v in rb["average"]["weights"].items():
        assert torch.equal(ra["average"]["weights"][k], v), k
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_weight_average_follows_the_weights_resumes_and_is_exported():
    from svcodec.train.common import WeightAverage, exported_weights

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    avg = WeightAverage(model, decay=0.9)
    expected = 0.0
    for n in range(1, 41):
        with torch.no_grad():
            model.weight.fill_(float(n))
        avg.update(model)
        d = min(0.9, (1 + n) / (10 + n))  # a short horizon first, then the decay
        expected = d * expected + (1 - d) * n
    got = avg.weights["weight"]
    assert torch.allclose(got, torch.full_like(got, expected)) and 30 < expected < 40  # lags the raw 40
    # resumed from its state it continues where it was; for another architecture it restarts
    again = WeightAverage(model, 0.9, avg.state_dict())
    assert again.updates == 40 and torch.equal(again.weights["weight"], got)
    other = WeightAverage(torch.nn.Linear(3, 1), 0.9, avg.state_dict())
    assert other.updates == 0
    # the export takes the average; --raw, or a checkpoint without one, the last step's weights
    state = {"model": model.state_dict(), "average": avg.state_dict()}
    weights, note = exported_weights(state)
    assert torch.equal(weights["weight"], got) and "average" in note
    assert torch.equal(exported_weights(state, raw=True)[0]["weight"], model.weight)
    assert exported_weights({"model": model.state_dict()})[1] == "raw weights of the last step"


def test_sigterm_checkpoints_and_exits(tmp_path, data_dir):
    ckpt = tmp_path / "s.pt"
    cmd = [sys.executable, "-m", "svcodec.train", "intra", "--ckpt", str(ckpt), "--data", str(data_dir),
           *TINY_RUN, "--minutes", "5"]
    p = subprocess.Popen(cmd, env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:  # wait for the first logged step
            if line.startswith("step "):
                break
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "stop signal" in out
    assert _ckpt(ckpt)["step"] >= 1


def test_torchrun_two_gloo_processes(tmp_path, data_dir):
    ckpt = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "svcodec.train", "intra", "--ckpt", str(ckpt), "--data", str(data_dir), *TINY_RUN,
           "--steps", "2", "--minutes", "1"]
    r = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "device cpu x2" in r.stdout
    assert r.stdout.count("saved ") == 1  # rank 0 alone logs and saves
    state = _ckpt(ckpt)
    assert state["step"] == 2 and state["rng"]["world"] == 2
    # each rank drew its own crops: the saved data positions differ
    d0, d1 = (s["data"] for s in state["rng"]["ranks"])
    assert d0 != d1


def test_unknown_or_missing_model_is_one_line_error(capsys, monkeypatch):
    from svcodec.train import __main__ as entry

    assert entry.main(["nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    monkeypatch.setitem(entry.TRAINERS, "later", "svcodec.train.not_written_yet")
    assert entry.main(["later", "--minutes", "1"]) == 2
    assert "not in this checkout yet" in capsys.readouterr().err


def test_budget_stops_and_checkpoint_save_is_atomic(tmp_path):
    from svcodec.train.common import Budget, Run, save_atomic

    run = Run(torch.device("cpu"))
    assert not Budget(0.0).keep_going(run, 0)
    b = Budget(1.0, max_steps=3)
    assert b.keep_going(run, 2) and not b.keep_going(run, 3)
    b.stop_requested = True
    assert not b.keep_going(run, 0)
    path = tmp_path / "c.pt"
    save_atomic({"step": 7}, path)
    save_atomic({"step": 8}, path)
    assert torch.load(path)["step"] == 8 and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_cv2_fallback_decodes_like_pyav(tmp_path):
    pytest.importorskip("cv2")
    from svcodec.train.data import decode_video

    path = write_video(tmp_path / "v.mp4", smooth_frames(3, 48, 64), codec="libx264rgb")
    a = np.stack(decode_video(Path(path), backend="av")).astype(float)
    b = np.stack(decode_video(Path(path), backend="cv2")).astype(float)
    assert a.shape == b.shape == (3, 48, 64, 3)
    assert np.abs(a - b).mean() < 1.0


def test_warp_moves_content_by_the_disparity():
    from svcodec.train.data import warp_horizontal

    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view, holes = warp_horizontal(img, np.full((40, 60), 5.0))
    assert np.array_equal(view[:, :55], img[:, 5:])
    assert holes[:, 55:].all() and not holes[:, :55].any()
    # a near object (d=8) in front of a far background (d=2): the near one wins where both land
    d = np.full((40, 60), 2.0)
    d[:, 30:] = 8
    view, holes = warp_horizontal(img, d)
    assert np.array_equal(view[:, 22:52], img[:, 30:60])
    assert np.array_equal(view[:, :20], img[:, 2:22])
    assert holes[:, 52:].all()


def test_derived_second_view_is_plausible():
    from svcodec.train.data import derive_second_view

    rng = np.random.default_rng(3)
    img = smooth_frames(1, 64, 96)[0]
    view, disp = derive_second_view(img, rng, max_disparity=6, photometric=False)
    assert view.shape == img.shape and disp.shape == img.shape[:2]
    assert 0 <= disp.min() and disp.max() <= 6 and disp.max() - disp.min() > 0.1
    x = 40
    d = int(np.rint(disp[:, x]).max())
    assert d > 0  # the warp really moved content
    noisy, _ = derive_second_view(img, np.random.default_rng(3), max_disparity=6)
    assert not np.array_equal(noisy, view)  # its own gain/offset/noise


def test_pack_is_deterministic_and_loadable(tmp_path, data_dir, monkeypatch):
    from svcodec.train.data import training_groups
    from svcodec.train.pack import main as pack_main

    monkeypatch.setenv("SVC_CACHE", str(tmp_path / "cache"))
    outs = [tmp_path / "p1", tmp_path / "p2"]
    for o in outs:
        assert pack_main(["--data", str(data_dir), "--out", str(o), "--side", "64", "--frames", "3"]) == 0
    files = sorted(p.relative_to(outs[0]).as_posix() for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]).as_posix() for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    assert "stereo_video/clip_left.mp4" in files and "mono_video/mono.mp4" in files
    assert "stereo_pairs/cam/p0_L.webp" in files and not any(f.startswith("stereo/") for f in files)
    m = json.loads((outs[0] / "manifest.json").read_text())
    assert "derived" in m and all("evalclip" not in json.dumps(it) for it in m["items"])
    clip = next(it for it in m["items"] if it["files"][0] == "stereo_video/clip_left.mp4")
    assert clip["frame_range"] == [0, 3] and clip["size"] == [64, 64] and clip["source_size"] == [128, 96]
    groups = training_groups(str(outs[0]))
    assert len(groups["stereo_video/clip"]) == 4 and groups["stereo_video/clip"][0].shape == (64, 64, 3)
    # an existing output is never overwritten
    assert pack_main(["--data", str(data_dir), "--out", str(outs[0])]) == 2


class _CountingSampler:
    """Stands in for CropSampler: batches of random integers from its own generator."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    @property
    def state(self):
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value):
        self.rng.bit_generator.state = value

    def batch(self, n, as_uint8=False):
        return torch.from_numpy(self.rng.integers(0, 256, (n, 3, 2, 2), dtype=np.uint8))


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_stream_resumes_each_workers_position(workers):
    from svcodec.train.common import BatchStream

    first = BatchStream(_CountingSampler, 2, workers=workers)
    for _ in range(4):
        next(first)
    saved = first.state
    expected = [next(first) for _ in range(2)]
    again = BatchStream(_CountingSampler, 2, workers=workers, state=saved)
    assert again.restored
    assert all(torch.equal(next(again), e) for e in expected)
    # a position saved with another worker count is not applied
    assert not BatchStream(_CountingSampler, 2, workers=1 if workers == 0 else 0, state=saved).restored


def test_bf16_autocast_patches_only_the_named_transforms():
    from svcodec.train.common import autocast_submodules

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.g_a = torch.nn.Conv2d(3, 4, 3)
    model.h = torch.nn.Conv2d(4, 4, 1)
    x = torch.rand(1, 3, 8, 8)
    keys = list(model.state_dict())
    ref_a, ref_h = model.g_a(x), model.h(model.g_a(x))
    autocast_submodules(model, ["g_a"], "cpu", True)
    out = model.g_a(x)
    assert out.dtype == torch.float32 and list(model.state_dict()) == keys
    assert not torch.equal(out, ref_a) and torch.allclose(out, ref_a, atol=0.05)  # computed in bf16
    assert torch.equal(model.h(ref_a), ref_h)  # other modules untouched


def test_inter_bf16_transforms_exist_and_exclude_entropy_and_warping():
    from svcodec.nn.inter import TINY, StereoInterCodec
    from svcodec.train.train_inter import BF16_TRANSFORMS, VARIANTS, configure_stage

    for variant in VARIANTS:  # the trainer wraps every name in every variant
        model = StereoInterCodec(configure_stage(TINY, "full", variant))
        for name in BF16_TRANSFORMS:
            model.get_submodule(name)
    assert not any(part in name for name in BF16_TRANSFORMS for part in ("em", "h_a", "h_s", "entropy", "temporal"))


def test_inter_trainer_trains_resumes_and_exports(tmp_path, data_dir):
    """The P-frame trainer through the entry point: a few steps on tiny crops, a resume that
    continues at the saved step, and an export that the codec loads."""
    ckpt = tmp_path / "inter.pt"
    cmd = [sys.executable, "-m", "svcodec.train", "inter", "--ckpt", str(ckpt), "--data", str(data_dir),
           "--config", "tiny", "--crop", "64", "--batch", "1", "--frames", "1", "--threads", "1",
           "--log-seconds", "0", "--device", "cpu"]
    first = subprocess.run(cmd + ["--steps", "2"], env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "P psnr" in first.stdout and "prediction" in first.stdout
    assert _ckpt(ckpt)["step"] == 2
    assert "bf16 False" in first.stdout  # the CPU default
    second = subprocess.run(cmd + ["--steps", "3", "--bf16"], env=_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "bf16 True" in second.stdout and _ckpt(ckpt)["step"] == 3
    from svcodec.train.export_inter import export
    from svcodec.zoo import load_inter

    manifest = first = export(ckpt, tmp_path / "w.safetensors")
    assert manifest["training"]["steps"] == 3
    loaded = load_inter(str(tmp_path / "w.safetensors")).model
    assert loaded.cfg.slices == 2 and loaded.intra_rate(0.0) == manifest["training"]["i_rate_offset"]
    # the streams' I/P pairing may differ from the one the P-frames trained with
    manifest = export(ckpt, tmp_path / "w2.safetensors", i_rate_offset=0.5)
    assert load_inter(str(tmp_path / "w2.safetensors")).model.intra_rate(1.0) == 1.5
    assert manifest["rate_points"]["1"]["intra_rate"] == 1.5 and manifest["training"]["i_rate_offset"] != 0.5
    # ... and shipped weights can be re-exported with another offset, tensors bit for bit
    from safetensors.torch import load_file

    from svcodec.train.export_inter import reexport

    again = reexport(tmp_path / "w.safetensors", tmp_path / "w3.safetensors", 0.5)
    a, b = load_file(tmp_path / "w.safetensors"), load_file(tmp_path / "w3.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_inter(str(tmp_path / "w3.safetensors")).model.intra_rate(1.0) == 1.5
    assert again["training"]["steps"] == 3 and again["model_id"] != first["model_id"]
    assert again["model_id"] == manifest["model_id"]  # the same file as exporting with 0.5 from the checkpoint


def test_zero_motion_share_replaces_whole_samples_flow():
    from svcodec.train.train_inter import with_zero_motion

    flow = torch.randn(8, 2, 4, 4)  # 4 samples, left views first, then right views
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert with_zero_motion(flow, 0.0, gen) is flow and torch.equal(gen.get_state(), state)
    assert not with_zero_motion(flow, 1.0, gen).any()
    mixed = [with_zero_motion(flow, 0.5, torch.Generator().manual_seed(s)) for s in range(20)]
    for out in mixed:
        for i in range(4):  # a sample's two views move or stand still together
            left, right = out[i], out[4 + i]
            assert (torch.equal(left, flow[i]) and torch.equal(right, flow[4 + i])) or not (left.any() or right.any())
    zeroed = sum(not out[i].any() for out in mixed for i in range(4))
    assert 20 < zeroed < 60  # about half of the 80 samples


def test_threaded_optical_flow_equals_the_serial_flow():
    """The P-frame trainer spreads a batch's DIS flows over threads on a GPU machine; each
    thread's own DIS object must give exactly the flow the encoder's serial path gives."""
    from svcodec.codec.motion import DisFlow

    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(6, 3, 64, 96, generator=gen)
    cur = torch.roll(ref, shifts=(1, 3), dims=(2, 3)) * 0.9 + 0.05
    serial = DisFlow()(cur, ref)
    threaded = DisFlow(workers=3)
    for _ in range(2):  # the second call reuses the pool and the threads' DIS objects
        assert torch.equal(threaded(cur, ref), serial)
    assert serial[:, 0].mean() < -1.0  # the content moved right: it is found to the left


def test_ablation_variants_configure_the_model():
    """Each ablation variant switches exactly its HDC parts, on top of the stage's."""
    from svcodec.nn.inter import SMALL
    from svcodec.train.train_inter import configure_stage

    def parts(stage, variant):
        c = configure_stage(SMALL, stage, variant)
        return c.fer, c.cross_view, c.hdc_variant

    assert parts("full", "full") == (True, True, "aligned")
    assert parts("full", "backbone") == (False, False, "aligned")
    assert parts("full", "fer-only") == (True, False, "aligned")
    assert parts("full", "em-only") == (False, True, "aligned")
    assert parts("full", "literal") == (True, True, "literal")
    assert parts("em", "noscore") == (False, True, "noscore")
    assert parts("single", "full") == (False, False, "aligned")


def test_inter_warmup_frames_lengthen_the_samples_not_the_trained_cascade(tmp_path, data_dir, monkeypatch):
    """--warmup-frames K: samples hold 1 + K + P frames; the first 0..K P-frames are coded without
    gradients and the loss covers exactly P frames after them."""
    import svcodec.train.train_inter as ti

    lengths, trained = [], []
    real_sampler, real_code = ti.ClipSampler, ti.code_p_frame

    def sampler(clips, frames, *a, **kw):
        lengths.append(frames)
        return real_sampler(clips, frames, *a, **kw)

    def code(model, ref, rate, side):
        trained.append(torch.is_grad_enabled())
        return real_code(model, ref, rate, side)

    monkeypatch.setattr(ti, "ClipSampler", sampler)
    monkeypatch.setattr(ti, "code_p_frame", code)
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "warm.pt"
    ti.main(["--ckpt", str(ckpt), "--data", str(data_dir), "--config", "tiny", "--crop", "64", "--batch", "1",
             "--frames", "2", "--warmup-frames", "3", "--threads", "1", "--log-seconds", "0", "--device", "cpu",
             "--steps", "6"])
    assert lengths == [1 + 3 + 2]
    # per step: some untrained warm-up frames (0..3), then exactly 2 trained ones
    steps, i = [], 0
    while i < len(trained):
        warm = 0
        while not trained[i]:
            warm, i = warm + 1, i + 1
        assert trained[i:i + 2] == [True, True]
        steps.append(warm)
        i += 2
    assert len(steps) == 6 and all(0 <= w <= 3 for w in steps) and max(steps) > 0
    assert _ckpt(ckpt)["runs"][-1]["args"]["warmup_frames"] == "3"


def test_inter_variant_and_i_rate_offset_are_kept_on_resume(tmp_path, data_dir):
    ckpt = tmp_path / "backbone.pt"
    cmd = [sys.executable, "-m", "svcodec.train", "inter", "--ckpt", str(ckpt), "--data", str(data_dir),
           "--config", "tiny", "--crop", "64", "--batch", "1", "--frames", "1", "--threads", "1",
           "--log-seconds", "0", "--device", "cpu"]
    run = subprocess.run(cmd + ["--steps", "1", "--variant", "backbone", "--i-rate-offset", "1.5"],
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    state = _ckpt(ckpt)
    assert state["variant"] == "backbone" and state["config"]["i_rate_offset"] == 1.5
    assert not state["config"]["fer"] and not state["config"]["cross_view"]
    assert not any("hdc" in k or "aligner" in k for k in state["model"])
    resumed = subprocess.run(cmd + ["--steps", "2"], env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    state = _ckpt(ckpt)
    assert state["step"] == 2 and state["variant"] == "backbone" and not state["config"]["fer"]
    assert state["config"]["i_rate_offset"] == 1.5  # the I/P pairing is the run's, not the default
    changed = subprocess.run(cmd + ["--steps", "3", "--variant", "full"], env=_env(tmp_path), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode != 0
    assert "is a 'backbone' run" in changed.stderr and "Traceback" not in changed.stderr
    assert _ckpt(ckpt)["step"] == 2


def test_background_run_resumes_after_a_crash_and_stops_on_kill(tmp_path):
    """scripts/train_background.sh: a trainer killed by SIGSEGV is restarted on its checkpoint;
    `kill PID` (the printed pid) reaches the trainer, which then exits cleanly."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "train_background.sh"
    script.write_text((REPO / "scripts" / "train_background.sh").read_text())
    script.chmod(0o755)
    fake = tmp_path / "fake_python"
    fake.write_text("#!/usr/bin/env bash\n"
                    "echo \"args: $*\"\n"
                    "n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count\n"
                    "[ \"$n\" = 0 ] && kill -SEGV $$\n"
                    "trap 'echo stopped cleanly; exit 0' TERM\n"
                    "sleep 60 & wait\n")
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), MINUTES="5")
    out = subprocess.run([str(script), "inter", "--lr", "1e-4"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pid = int((tmp_path / "runs" / "inter.pid").read_text())
    log = tmp_path / "runs" / "inter.log"
    count = tmp_path / "count"  # trainer starts so far
    deadline = time.time() + 20
    while not (count.exists() and count.read_text().strip() == "2"):
        assert time.time() < deadline, log.read_text()
        time.sleep(0.1)
    time.sleep(0.5)  # let the restarted trainer install its TERM handler
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while "stopped cleanly" not in log.read_text():
        assert time.time() < deadline, log.read_text()
        time.sleep(0.1)
    text = log.read_text()
    assert text.count("args: -m svcodec.train inter --ckpt runs/inter.pt --device cpu --lr 1e-4 --minutes") == 2
    assert "trainer died (exit 139); resuming its checkpoint" in text


def test_background_run_forks_a_copy_of_another_checkpoint(tmp_path):
    """RUN=NAME FROM=CKPT trains a copy of CKPT under runs/NAME.pt (a finishing run beside the
    main one): the source is never written, a second start resumes the fork instead of copying
    again, and a missing source is an error before anything starts."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "train_background.sh"
    script.write_text((REPO / "scripts" / "train_background.sh").read_text())
    script.chmod(0o755)
    fake = tmp_path / "fake_python"
    fake.write_text("#!/usr/bin/env bash\necho \"args: $*\"\n")
    fake.chmod(0o755)
    (tmp_path / "runs").mkdir()
    source = tmp_path / "runs" / "intra.pt"
    source.write_bytes(b"main run")
    env = dict(os.environ, PYTHON=str(fake), MINUTES="5", RUN="intra_fin", FROM="runs/intra.pt")

    def start():
        out = subprocess.run([str(script), "intra", "--lr", "1e-5"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=30)
        log = tmp_path / "runs" / "intra_fin.log"
        deadline = time.time() + 20
        while out.returncode == 0 and "args:" not in (log.read_text() if log.exists() else ""):
            assert time.time() < deadline
            time.sleep(0.05)
        (tmp_path / "runs" / "intra_fin.pid").unlink(missing_ok=True)  # the (fake) run is over
        return out

    out = start()
    assert out.returncode == 0, out.stderr
    assert "forked runs/intra.pt -> runs/intra_fin.pt" in out.stdout
    fork = tmp_path / "runs" / "intra_fin.pt"
    assert fork.read_bytes() == b"main run" and not (tmp_path / "runs" / "intra_fin.pt.fork").exists()
    log = (tmp_path / "runs" / "intra_fin.log").read_text()
    # the fork resumes its own checkpoint, without --init (the copy is the start)
    assert "args: -m svcodec.train intra --ckpt runs/intra_fin.pt --device cpu --lr 1e-5 --minutes" in log
    fork.write_bytes(b"fork trained")
    (tmp_path / "runs" / "intra_fin.log").unlink()
    out = start()
    assert out.returncode == 0 and "forked" not in out.stdout
    assert fork.read_bytes() == b"fork trained" and source.read_bytes() == b"main run"

    env["RUN"], env["FROM"] = "other", "runs/missing.pt"
    out = subprocess.run([str(script), "intra"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "runs/missing.pt: no such checkpoint" in out.stderr
    assert not (tmp_path / "runs" / "other.pt").exists() and not (tmp_path / "runs" / "other.log").exists()


def test_a_non_finite_gradient_is_dropped_not_applied():
    """One infinite gradient must not turn the weights into NaN (an intra run lost 1.1 hours
    that way): the step is dropped, a finite one is clipped and applied."""
    from svcodec.train.common import clipped_finite, finite_weights

    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    (lin(torch.ones(1, 3)).sum() * float("inf")).backward()
    assert not clipped_finite([list(lin.parameters())], 1.0)
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items()) and finite_weights(lin)
    opt.zero_grad()
    (lin(torch.ones(1, 3)).sum() * 1e6).backward()
    assert clipped_finite([list(lin.parameters())], 1.0)
    assert float(torch.cat([p.grad.flatten() for p in lin.parameters()]).norm()) == pytest.approx(1.0, rel=1e-4)
    opt.step()
    assert not torch.equal(before["weight"], lin.weight.detach()) and finite_weights(lin)
    with torch.no_grad():
        lin.bias[0] = float("nan")
    assert not finite_weights(lin)


def test_gpu_codec_check_reports_the_sample_round_trip(tmp_path):
    """scripts/gpu_codec_check.py runs only where a GPU is lent, rarely: here it runs on the CPU
    (the same code path but one device), so that it still works on the day it is needed."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_codec_check.py"), "--out", str(tmp_path),
                          "--device", "cpu", "--frames", "2", "--rate", "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "codec_check.json").read_text())
    assert report["frames"] == 2 and report["size"] == [288, 512]
    assert report["encodes"]["cpu"]["bytes"] > 1000
    (row,) = report["decodes"]
    assert row["ok"] and row["encoded_on"] == row["decoded_on"] == "cpu"
    assert abs(row["psnr"] - report["encodes"]["cpu"]["psnr_reported"]) < 0.1 and row["psnr"] > 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codec_check.json"]  # streams removed
    before = (tmp_path / "codec_check.json").read_bytes()
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_codec_check.py"), "--out", str(tmp_path),
                            "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "codec_check.json").read_bytes() == before  # never overwritten
