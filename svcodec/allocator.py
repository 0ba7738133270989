"""Process-wide memory allocator tuning for the command line and the trainers.

Why: torch allocates CPU tensors with malloc. glibc serves any request above its mmap threshold
(at most 32 MiB with the default, dynamic threshold) with a fresh mmap and returns it to the
kernel on free, so every large activation is page-faulted in anew, page by page: decoding three
1280x720 frame pairs took 6.6 million page faults and 9.9 s of kernel time beside 15.3 s of
computation. Keeping those blocks in the heap (requests up to 2 GiB served from it, and the
heap not trimmed back while under 2 GiB is free) lets the next layer and frame reuse them.
Measured on one core (README "Results", Speed), bit-identical streams: 3 pairs of 1280x720
encode 53.0 -> 40.1 s and decode 23.8 -> 18.1 s; 1920x1080 encode 114 -> 98 s and decode
58.7 -> 50.6 s (there, fragmentation still leaves most of the faults); the 512x288 demo about
25 % faster; a P-frame training step 2 % faster. The cost is peak RSS, because freed blocks
stay mapped: +30-45 % (1280x720 decode 3.4 -> 4.6 GB, 1920x1080 6.1 -> 7.9 GB).

Only glibc has mallopt; elsewhere, where the user set glibc's own malloc settings
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, glibc.malloc.* in GLIBC_TUNABLES), or with
SVC_MALLOC_TUNING=0, this does nothing. It changes no arithmetic: outputs are bit-identical either way.

`svc encode` / `svc decode` know the frame size before they allocate anything large, so they
tune only where the estimated peak (`peak_memory_estimate`, from measured peaks) fits the memory
available, and otherwise keep glibc's thrifty default and say so (`plan_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Requests below this come from the heap, and the heap keeps that much free memory. The largest
# value mallopt takes (a C int): a 1920x1088 stereo feature map of 64 channels is 1.07 GB, and
# with 1 GiB the heap gave such blocks back and faulted them in again on every layer.
HEAP_BLOCK_LIMIT = (1 << 31) - 1

_tuned: bool | None = None


def tune_malloc() -> bool:
    """Keep large tensors' memory in the heap for reuse (see module doc). Returns whether the
    allocator was tuned; safe to call more than once."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not tuning_allowed():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_LIMIT))
    return _tuned


def tuning_allowed() -> bool:
    """False where the user chose glibc's own malloc settings or SVC_MALLOC_TUNING=0."""
    user_chose = ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
                  or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))
    return not user_chose and os.environ.get("SVC_MALLOC_TUNING", "1") != "0"


# Peak RSS (GB) of `svc encode` / `svc decode` of 3 frame pairs (I, P, P) at two sizes, with and
# without the tuning: /usr/bin/time, eighth session (README "Speed"). Sizes as coded: padded to
# a multiple of 64. Activations grow with the pixel count, so the peak is taken as linear in it.
_MEASURED_SIZES = (1280 * 768, 1920 * 1088)
_MEASURED_PEAK_GB = {("encode", True): (5.1, 8.4), ("encode", False): (3.6, 6.2),
                     ("decode", True): (4.6, 7.9), ("decode", False): (3.4, 6.1)}


def peak_memory_estimate(width: int, height: int, task: str, tuned: bool) -> float:
    """Estimated peak resident memory in bytes of `svc encode` or `svc decode` (``task``) on the
    CPU at this frame size (per view), with or without the tuning."""
    pixels = (-(-width // 64) * 64) * (-(-height // 64) * 64)
    (p0, p1), (g0, g1) = _MEASURED_SIZES, _MEASURED_PEAK_GB[(task, tuned)]
    return (g0 + (g1 - g0) * (pixels - p0) / (p1 - p0)) * 1e9


# (limit, usage) files of the cgroup a container sees as its root: cgroup v2, then v1
_CGROUP_FILES = (("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.current"),
                 ("sys/fs/cgroup/memory/memory.limit_in_bytes", "sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_memory(root: str = "/") -> float | None:
    """Bytes this process can still get without swapping: the kernel's MemAvailable, within a
    container's memory limit where there is one (cgroup v2 or v1); None where unknown."""
    found = []
    try:
        with open(os.path.join(root, "proc/meminfo")) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(os.path.join(root, limit_file)) as f:
                limit = f.read().strip()
            with open(os.path.join(root, usage_file)) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" (v2) or ~2^63 (v1): no limit
            found.append(max(0, int(limit) - used))
    return float(min(found)) if found else None


@dataclass(frozen=True)
class MemoryPlan:
    tune: bool  # use tune_malloc()
    note: str | None  # one line for the user, or None


def plan_memory(width: int, height: int, task: str, available: float | None, allowed: bool = True) -> MemoryPlan:
    """Tune where the tuned peak fits ``available``; else stay thrifty and say so, and warn
    where even that does not fit."""
    if not allowed:
        return MemoryPlan(False, _too_big(width, height, task, available))
    if available is None or peak_memory_estimate(width, height, task, True) <= available:
        return MemoryPlan(True, None)
    note = _too_big(width, height, task, available)
    return MemoryPlan(False, note or (
        f"{width}x{height}: {available / 1e9:.1f} GB of memory available, so svc saves memory "
        f"(about {peak_memory_estimate(width, height, task, False) / 1e9:.1f} GB instead of "
        f"{peak_memory_estimate(width, height, task, True) / 1e9:.1f} GB) at 15-30 % more time"))


def _too_big(width: int, height: int, task: str, available: float | None) -> str | None:
    """The warning where even the untuned peak exceeds ``available``, else None."""
    need = peak_memory_estimate(width, height, task, False)
    if available is None or need <= available:
        return None
    return (f"{width}x{height} frames need about {need / 1e9:.0f} GB of memory to {task} on the CPU and "
            f"{available / 1e9:.1f} GB is available: svc may run out of memory (try smaller frames, or --device cuda)")


def tune_for_frames(width: int, height: int, task: str, device: str = "cpu") -> str | None:
    """Tune the allocator for coding frames of this size if the memory allows (see plan_memory);
    returns the note to show the user, if any. On a GPU the activations are not in this heap."""
    if device != "cpu":
        tune_malloc()
        return None
    plan = plan_memory(width, height, task, available_memory(), tuning_allowed())
    if plan.tune:
        tune_malloc()
    return plan.note
