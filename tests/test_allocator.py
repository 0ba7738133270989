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
