"""svcodec.allocator: glibc malloc tuning is applied once, and stays off where the user chose
glibc's own settings or turned it off."""

import os
import platform
import subprocess
import sys

import pytest

_PROBE = ("import resource, sys, torch\n"
          "from svcodec.allocator import tune_malloc\n"
          "tuned = tune_malloc() if sys.argv[1] == '1' else False\n"
          "x = torch.ones(2, 64, 256, 512)\n"  # 64 MiB: above glibc's default mmap threshold
          "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "for _ in range(32):\n"
          "    y = x * 2\n"
          "    del y\n"
          "print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")


def _env_without_malloc_settings(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "SVC_MALLOC"))}
    return {**env, **extra}


def _probe(tune: bool) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if tune else "0"], env=_env_without_malloc_settings(),
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc
def test_tuning_keeps_large_blocks_for_reuse():
    tuned, faults = _probe(True)
    _, faults_default = _probe(False)
    assert tuned == 1
    # default: each 64 MiB temporary is a fresh mmap, faulted in page by page (16k pages, or 32
    # where transparent huge pages are always on); tuned: the heap keeps them, and after the first
    # few (1-7 measured) every one reuses that memory
    assert faults_default >= 32 * 32
    assert faults < faults_default / 2


@glibc
@pytest.mark.parametrize("env", [{"SVC_MALLOC_TUNING": "0"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_tuning_stays_off_when_the_user_chose(env):
    out = subprocess.run([sys.executable, "-c", "from svcodec.allocator import tune_malloc; print(tune_malloc())"],
                         env=_env_without_malloc_settings(**env), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------- tuning only where memory allows

from click.testing import CliRunner  # noqa: E402

from conftest import stereo_frames, write_png_pair  # noqa: E402
from svcodec import allocator  # noqa: E402
from svcodec.cli.main import main  # noqa: E402

GB = 1e9


def test_peak_estimate_meets_the_measured_peaks_and_grows_with_size():
    assert allocator.peak_memory_estimate(1280, 720, "encode", True) == pytest.approx(5.1 * GB)
    assert allocator.peak_memory_estimate(1920, 1080, "decode", False) == pytest.approx(6.1 * GB)
    sizes = [(64, 48), (512, 288), (1280, 720), (1920, 1080), (3840, 2160)]
    for task in ("encode", "decode"):
        tuned = [allocator.peak_memory_estimate(w, h, task, True) for w, h in sizes]
        plain = [allocator.peak_memory_estimate(w, h, task, False) for w, h in sizes]
        assert tuned == sorted(tuned) and all(p < t for p, t in zip(plain, tuned)) and plain[0] > 0


def test_plan_tunes_only_where_the_tuned_peak_fits():
    need_tuned = allocator.peak_memory_estimate(1920, 1080, "encode", True)
    need_plain = allocator.peak_memory_estimate(1920, 1080, "encode", False)
    assert allocator.plan_memory(1920, 1080, "encode", need_tuned + GB) == allocator.MemoryPlan(True, None)
    assert allocator.plan_memory(1920, 1080, "encode", None) == allocator.MemoryPlan(True, None)  # unknown
    saving = allocator.plan_memory(1920, 1080, "encode", (need_tuned + need_plain) / 2)
    assert not saving.tune and "saves memory" in saving.note
    short = allocator.plan_memory(1920, 1080, "encode", need_plain - GB)
    assert not short.tune and "may run out of memory" in short.note and "1920x1080" in short.note
    # the user's own malloc settings: never tuned, but still warned
    assert allocator.plan_memory(1920, 1080, "encode", need_tuned + GB, allowed=False) == allocator.MemoryPlan(False, None)
    assert "may run out" in allocator.plan_memory(1920, 1080, "encode", GB, allowed=False).note


@pytest.mark.parametrize("available,tuned,note", [(100 * GB, True, None), (1.5 * GB, False, "saves memory"),
                                                  (0.5 * GB, False, "may run out of memory")])
def test_cli_tunes_for_the_frame_size_and_free_memory(tmp_path, tiny_weights, monkeypatch, one_thread,
                                                      available, tuned, note):
    calls = []
    monkeypatch.setattr(allocator, "available_memory", lambda: available)
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    monkeypatch.delenv("SVC_MALLOC_TUNING", raising=False)
    pngs = write_png_pair(tmp_path / "in", *stereo_frames(2, 48, 64, seed=5))
    for args in (["encode", *pngs, "-o", tmp_path / "a.svc"], ["decode", tmp_path / "a.svc", "-o", tmp_path / "a.mkv"]):
        res = CliRunner().invoke(main, [str(a) for a in [*args, "--weights", tiny_weights, "-q"]],
                                 env={"SVC_DEBUG": None})
        assert res.exit_code == 0, res.output
        notes = [line for line in res.stderr.splitlines() if line.startswith("svc: note: ")]
        assert bool(calls) == tuned
        assert (note in notes[0] and len(notes) == 1) if note else notes == []
        calls.clear()


def test_available_memory_is_the_tighter_of_the_machine_and_the_container(tmp_path):
    def tree(meminfo_kb, v2=None, v1=None):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        files = {"proc/meminfo": f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n"}
        if v2:
            files.update({"sys/fs/cgroup/memory.max": v2[0], "sys/fs/cgroup/memory.current": v2[1]})
        if v1:
            files.update({"sys/fs/cgroup/memory/memory.limit_in_bytes": v1[0],
                          "sys/fs/cgroup/memory/memory.usage_in_bytes": v1[1]})
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(f"{text}\n")
        return str(root)

    assert allocator.available_memory(tree(8_000_000)) == 8_000_000 * 1024
    assert allocator.available_memory(tree(8_000_000, v2=("max", "123"))) == 8_000_000 * 1024
    assert allocator.available_memory(tree(8_000_000, v2=(str(4 * 2**30), str(2**30)))) == 3 * 2**30
    assert allocator.available_memory(tree(8_000_000, v1=("9223372036854771712", "5"))) == 8_000_000 * 1024
    assert allocator.available_memory(tree(1_000, v1=(str(4 * 2**30), "0"))) == 1_000 * 1024
    assert allocator.available_memory(str(tmp_path / "nothing")) is None
