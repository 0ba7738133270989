#!/usr/bin/env python
"""Streaming memory and start-up latency of real `svc` processes (docs/RELIABILITY.md; issue 7
items 5 and 6). Prints a summary and writes JSON.

    nice python scripts/bench_memory.py --json docs/bench_memory.json

memory  a synthetic moving stereo clip (textured scene panning 2 px per frame, the right view
        3 px to the side; FFV1 .mkv per view) at each --frames count; `svc encode` and
        `svc decode` (to FFV1 .mkv) each run as their own process, and their peak RSS is the
        kernel's ru_maxrss for exactly that child (os.wait4). A third process only imports the
        codec and loads the weights: the floor every encode/decode starts from. Memory that
        does not grow with the frame count shows as equal peaks at 30 and 300 frames.
first   time to the first decoded frame of samples/left.mp4 + right.mp4: the sample is encoded
        once, then `svc decode` is started --repeat times; the clock starts in this script just
        before the process is spawned (interpreter start, imports, stream checks and model
        loading are all inside) and stops when the child's first StereoWriter.write call has
        returned (the first frame pair handed to the output files); the child reports that
        instant (time.time(), same clock) through a file. The child is the real `svc` entry
        point with only that write wrapped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Runs `svc` (the console entry point's function) in the child; with SVC_FIRST_WRITE set, records
# when the first frame pair has been written.
_LAUNCHER = r"""
import os, sys, time
marker = os.environ.get("SVC_FIRST_WRITE")
if marker:
    from svcodec.io import writers
    original = writers.StereoWriter.write
    def write(self, left, right):
        original(self, left, right)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(repr(time.time()))
    writers.StereoWriter.write = write
from svcodec.cli.main import main
sys.argv = ["svc", *sys.argv[1:]]
main()
"""

_LOAD_ONLY = r"""
import sys
from svcodec.codec.session import deterministic_inference
from svcodec.zoo import load_set
deterministic_inference("cpu")
load_set(None, None, need_inter=True, device="cpu")
"""


def moving_clip(n: int, h: int, w: int, seed: int = 0):
    """Frames of a smoothed random texture panning 2 px per frame; yielded one at a time."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (h, w + 2 * n + 12, 3)).astype(np.float32)
    big = ((big + np.roll(big, 1, 1) + np.roll(big, 1, 0)) / 3).astype(np.uint8)
    for t in range(n):
        yield (np.ascontiguousarray(big[:, 2 * t + 3: 2 * t + 3 + w]), np.ascontiguousarray(big[:, 2 * t: 2 * t + w]))


def write_clip(folder: Path, n: int, h: int, w: int) -> tuple[Path, Path]:
    paths = folder / "left.mkv", folder / "right.mkv"
    containers = [av.open(str(p), "w") for p in paths]
    streams = []
    for c in containers:
        s = c.add_stream("ffv1", rate=Fraction(30))
        s.width, s.height, s.pix_fmt = w, h, "bgr0"
        streams.append(s)
    for pair in moving_clip(n, h, w):
        for c, s, a in zip(containers, streams, pair):
            for packet in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(packet)
    for c, s in zip(containers, streams):
        for packet in s.encode():
            c.mux(packet)
        c.close()
    return paths


def run(args, env_extra=None, code=_LAUNCHER) -> dict:
    """Run one child; its exit code, wall time and peak RSS (ru_maxrss of that child only)."""
    # One torch thread: the deterministic (reference) convolutions slow down many times over when
    # two threads compete with other work for the cores; the output is identical for any count.
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    env.pop("SVC_DEBUG", None)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    result = {"exit": proc.returncode, "seconds": round(time.time() - t0, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "started": t0}
    if proc.returncode != 0:
        raise SystemExit(f"svc {' '.join(map(str, args))} failed ({proc.returncode}): {stderr.decode()[-500:]}")
    return result


def memory(frame_counts, h, w, gop, tmp: Path) -> dict:
    out = {"floor_models_loaded": run([], code=_LOAD_ONLY)}
    out["floor_models_loaded"].pop("started")
    print(f"floor (torch imported, intra + inter weights loaded): {out['floor_models_loaded']['peak_rss_mb']:.0f} MB",
          flush=True)
    for n in frame_counts:
        folder = tmp / f"clip{n}"
        folder.mkdir()
        left, right = write_clip(folder, n, h, w)
        stream = folder / "clip.svc"
        enc = run(["encode", left, right, "-o", stream, "--gop", gop, "-q", "--threads", 1])
        dec = run(["decode", stream, "-o", folder / "dec", "-q", "--threads", 1])
        for r in (enc, dec):
            r.pop("started")
        out[str(n)] = {"frames": n, "stream_bytes": stream.stat().st_size, "encode": enc, "decode": dec}
        print(f"{n:4d} frames {w}x{h} gop {gop}: encode peak {enc['peak_rss_mb']:.0f} MB ({enc['seconds']:.1f} s), "
              f"decode peak {dec['peak_rss_mb']:.0f} MB ({dec['seconds']:.1f} s)", flush=True)
    return out


def first_frame(sample_dir: Path, repeat: int, tmp: Path) -> dict:
    stream = tmp / "sample.svc"
    enc = run(["encode", sample_dir / "left.mp4", sample_dir / "right.mp4", "-o", stream, "-q", "--threads", 1])
    times, totals = [], []
    for k in range(repeat):
        marker = tmp / f"first{k}"
        dec = run(["decode", stream, "-o", tmp / f"sample{k}", "-q", "--threads", 1],
                  {"SVC_FIRST_WRITE": str(marker)})
        times.append(round(float(marker.read_text()) - dec["started"], 2))
        totals.append(dec["seconds"])
        print(f"sample decode {k + 1}: first frame after {times[-1]:.2f} s, whole decode {dec['seconds']:.2f} s, "
              f"peak {dec['peak_rss_mb']:.0f} MB", flush=True)
    return {"sample": str(sample_dir), "encode_seconds": enc["seconds"], "stream_bytes": stream.stat().st_size,
            "first_frame_seconds": times, "first_frame_median": statistics.median(times),
            "decode_seconds": totals}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[30, 300])
    ap.add_argument("--size", default="128x96", help="WxH of the synthetic clip")
    ap.add_argument("--gop", type=int, default=32)
    ap.add_argument("--sample", default=str(ROOT / "samples"), help="folder with left.mp4 and right.mp4")
    ap.add_argument("--repeat", type=int, default=3, help="timed decodes of the sample")
    ap.add_argument("--skip-first-frame", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    w, h = map(int, a.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as d:
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
            "clip": {"width": w, "height": h, "gop": a.gop},
            "memory": memory(a.frames, h, w, a.gop, Path(d)),
        }
        if not a.skip_first_frame:
            result["first_frame"] = first_frame(Path(a.sample), a.repeat, Path(d))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
