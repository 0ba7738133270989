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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
    user_chose = ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
                  or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))
    if user_chose or os.environ.get("SVC_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_LIMIT))
    return _tuned
