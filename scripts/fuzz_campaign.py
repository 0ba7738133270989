#!/usr/bin/env python
"""The long fuzz campaign over the .svc reader and the full decoder (the suite runs a short one:
tests/test_fuzz.py). Prints a summary and writes JSON.

    nice python scripts/fuzz_campaign.py --parser 100000 --decodes 1000 --json fuzz.json
    nice python scripts/fuzz_campaign.py --parser 100000 --decodes 0 --hostile   # no model work

Parts:
  parser   mutated (svcodec.container.mutate.Mutator, CRC-repairing) and generated streams
           through SvcReader and every GOP/access unit; seeded from real streams made with the
           shipped weights.
  decodes  full decodes of mutated streams with the shipped weights (iter_decode, in process).
  hostile  crafted files (lying headers with valid CRCs) through real `svc info` and
           `svc decode` processes: exit code, one-line error naming the file, wall time, peak
           RSS (os.wait4) and whether torch was imported (python -X importtime).

An input "passes" when it ends in svcodec's own error (SvcError) or decodes; anything else
(another exception, an input slower than --slow seconds) is a finding, listed with its seed
and index so that it can be replayed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from svcodec.container import SvcReader
from svcodec.container.mutate import Mutator, crafted_stream, generated
from svcodec.errors import SvcError


def smooth_pair(n: int, h: int, w: int, seed: int):
    """n stereo frame pairs of moving gradients plus noise (the right view shifted by 3 px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lefts, rights = [], []
    for i in range(n):
        base = np.stack([(xx * 3 + 7 * i + 40 * seed) % 256, yy * 180 / h + 30, (xx + yy) * 100 / (w + h) + 60], -1)
        left = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        lefts.append(left)
        rights.append(np.ascontiguousarray(np.roll(left, 3, axis=1)))
    return lefts, rights


def make_seeds(folder: Path, codec) -> list[bytes]:
    """Real streams from the shipped weights: 64x64, 3 frames, GOP 2 (I P I when P-frame weights
    are present) and 80x48, 2 frames, GOP 1 (all intra)."""
    from svcodec.codec.api import encode_frames

    out = []
    for k, (n, h, w, gop) in enumerate(((3, 64, 64, 2), (2, 48, 80, 1))):
        path = folder / f"seed{k}.svc"
        encode_frames(*smooth_pair(n, h, w, k), path, gop=gop, codec=codec)
        out.append(path.read_bytes())
    return out


def parse_everything(path) -> None:
    reader = SvcReader(path)
    for _, units in reader:
        for au in units:
            au.to_dict()


def run_inputs(label, inputs, fn, path: Path, slow: float) -> dict:
    """Feed (operation, bytes) inputs to fn(path); count outcomes, keep findings."""
    outcomes, findings, worst = Counter(), [], 0.0
    t0 = time.perf_counter()
    for i, (op, data) in enumerate(inputs):
        path.write_bytes(data)
        t = time.perf_counter()
        try:
            fn(path)
            result = "ok"
        except SvcError as e:
            result = type(e).__name__
            if "\n" in str(e).strip() or not str(e).strip():
                findings.append({"index": i, "op": op, "finding": f"message not one line: {e!r}"})
        except Exception as e:  # noqa: BLE001 - this is what we are looking for
            result = "OTHER:" + type(e).__name__
            findings.append({"index": i, "op": op, "finding": f"{type(e).__name__}: {e}"[:300]})
        dt = time.perf_counter() - t
        worst = max(worst, dt)
        if dt > slow:
            findings.append({"index": i, "op": op, "finding": f"slow: {dt:.2f} s"})
        outcomes[f"{op} -> {result}"] += 1
    total = sum(outcomes.values())
    print(f"{label}: {total} inputs in {time.perf_counter() - t0:.1f} s, slowest {worst * 1000:.1f} ms, "
          f"{len(findings)} findings")
    return {"inputs": total, "seconds": time.perf_counter() - t0, "slowest_s": worst,
            "outcomes": dict(sorted(outcomes.items())), "findings": findings[:50]}


def parser_inputs(seeds, n, seed):
    mutators = [Mutator(s, seed + k) for k, s in enumerate(seeds)]
    gen = random.Random(seed)
    for i in range(n):
        if i % 5 == 4:
            yield "generated", generated(gen)
        else:
            yield mutators[i % len(mutators)].next()


def decode_inputs(seeds, n, seed):
    mutators = [Mutator(s, 1000 + seed + k) for k, s in enumerate(seeds)]
    for i in range(n):
        m = mutators[i % len(mutators)]
        op = "payload_fixed" if i % 2 else m.rng.choice(("field_fixed", "bytes_fixed", "resize_fixed", "flip_fixed"))
        yield op, getattr(m, "_" + op)()


def hostile_files(model_id: bytes) -> dict[str, bytes]:
    real = dict(model_id=model_id)  # so that a sound container would really be decoded
    huge = crafted_stream(65535, 65535, slices=4, **real)
    assert len(huge) == 175
    return {
        "65535x65535_175_bytes": huge,
        "8192x4320_empty_payloads": crafted_stream(8192, 4320, **real),
        "1024x1024_empty_payloads": crafted_stream(1024, 1024, **real),
        "1024x1024_4_byte_payloads": crafted_stream(1024, 1024, payload=b"\x01\x02\x03\x04", **real),
        "claims_2^32-1_frames": crafted_stream(64, 64, claimed_frames=0xFFFFFFFF, **real),
        "gop_size_65535": crafted_stream(64, 64, gop_size=0xFFFF, **real),
        "model_name_is_a_path": crafted_stream(64, 64, model_name="../../../etc/passwd", **real),
        "200_substreams_per_frame": crafted_stream(64, 64, slices=100, **real),
        "1024x1024_per_slice_table": crafted_stream(1024, 1024, slices=3, payload=bytes(4), **real),
    }


# The child reports its own peak RSS (VmHWM of its process image, which starts at exec):
# getrusage/wait4 would include the pages of this torch-sized parent copied by fork.
_CHILD = """import atexit, runpy, sys
def _hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("svc-fuzz-peak-kb " + line.split()[1] + "\\n")
atexit.register(_hwm)
sys.argv = ["svc", *sys.argv[1:]]
runpy.run_module("svcodec.cli.main", run_name="__main__", alter_sys=True)
"""


def run_svc(args, cwd) -> dict:
    """One real `svc` process: exit code, stderr lines, seconds, peak RSS, torch imported?"""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", _CHILD, *map(str, args)],
                          cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    stderr = proc.stderr.splitlines()
    modules = {l.rsplit("|", 1)[1].strip() for l in stderr if l.startswith("import time:") and "|" in l}
    peak = [int(l.split()[1]) for l in stderr if l.startswith("svc-fuzz-peak-kb ")]
    lines = [l for l in stderr if not l.startswith(("import time:", "svc-fuzz-peak-kb "))]
    return {"exit": proc.returncode, "stderr": lines, "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak[0] / 1024, 1) if peak else None, "torch_imported": "torch" in modules}


def hostile_part(model_id, folder: Path) -> dict:
    results = {}
    for name, data in hostile_files(model_id).items():
        path = folder / f"{name}.svc"
        path.write_bytes(data)
        for cmd in ("info", "decode"):
            args = [cmd, path] + (["-o", folder / "out", "-q"] if cmd == "decode" else ["--no-frames"])
            r = run_svc(args, folder)
            r["bytes"] = len(data)
            r["one_line_naming_file"] = (len(r["stderr"]) == 1 and r["stderr"][0].startswith(f"svc: error: {path}"))
            results[f"{name} / svc {cmd}"] = r
            print(f"  {name:28s} svc {cmd:6s} exit {r['exit']}  {r['seconds']:6.2f} s  "
                  f"{r['peak_rss_mb']:7.1f} MB  torch={'yes' if r['torch_imported'] else 'no '}  "
                  f"{(r['stderr'] or [''])[-1][:110]}")
    leftovers = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".svc"))
    return {"files": results, "leftovers": leftovers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parser", type=int, default=100_000, help="mutated/generated inputs for the reader")
    ap.add_argument("--decodes", type=int, default=1_000, help="full decodes of mutated streams")
    ap.add_argument("--hostile", action="store_true", help="also run crafted files through real svc processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow", type=float, default=1.0, help="seconds after which one parser input is a finding")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from svcodec.zoo import load_intra

    codec = load_intra()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
              "python": platform.python_version(), "seed": args.seed, "model_id": codec.model_id.hex()}
    with tempfile.TemporaryDirectory(prefix="svc-fuzz-") as tmp:
        tmp = Path(tmp)
        seeds = make_seeds(tmp, codec)
        report["seed_stream_bytes"] = [len(s) for s in seeds]
        report["seed_streams"] = [
            {"model_name": r.sequence.model_name, "frame_types": "".join(au.frame_type.name for _, g in r for au in g)}
            for r in (SvcReader(tmp / f"seed{k}.svc") for k in range(len(seeds)))]
        if args.parser:
            report["parser"] = run_inputs("parser", parser_inputs(seeds, args.parser, args.seed),
                                          parse_everything, tmp / "p.svc", args.slow)
        if args.decodes:
            from svcodec.codec.api import iter_decode

            report["decodes"] = run_inputs(
                "decodes", decode_inputs(seeds, args.decodes, args.seed),
                lambda p: [None for _ in iter_decode(p, codec=codec)], tmp / "d.svc", slow=60.0)
        if args.hostile:
            (tmp / "hostile").mkdir()
            print("hostile files through real svc processes:")
            report["hostile"] = hostile_part(codec.model_id, tmp / "hostile")
    findings = sum(len(report[k]["findings"]) for k in ("parser", "decodes") if k in report)
    report["findings_total"] = findings
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    print(f"findings: {findings}")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
