"""The codec on a GPU, checked in one short step of a lent device call (weights/README.md).

Encodes the shipped sample on the CPU and on DEVICE, decodes each stream on both, and reports
whether the streams' bytes and the decoded frames agree, the quality, and the seconds each step
took; the JSON goes to OUT/codec_check.json. README "Using it" says a stream decoded on another
device than the one that encoded it is not guaranteed to be bit-exact (the reconstruction
checksum then reports a mismatch instead of handing back other frames): this measures it.

It needs no PyAV, which the device machine lacks: the sample is read with OpenCV (the trainers'
fallback, svcodec.train.data.decode_video) and the codec is driven through svcodec.codec.api
(constriction travels as a wheel, see gpu_burst.sh).

    python scripts/gpu_codec_check.py --out DIR [--device cuda] [--frames 6] [--rate 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mean_psnr(ref: list[np.ndarray], test: list[np.ndarray]) -> float:
    """Mean of the per-frame RGB PSNRs, as the encoder's report averages them."""
    from svcodec.metrics import psnr_rgb

    return float(np.mean([psnr_rgb(a, b) for a, b in zip(ref, test)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--rate", type=float, default=2.0)
    args = ap.parse_args()

    import torch

    from svcodec.codec.api import decode_file, encode_frames
    from svcodec.train.data import decode_video  # OpenCV where PyAV is missing, as in training

    args.out.mkdir(parents=True, exist_ok=True)
    devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]
    ours = [args.out / "codec_check.json"] + [args.out / f"sample_{d.replace(':', '')}.svc" for d in devices]
    taken = [p for p in ours if p.exists()]
    if taken:  # never overwrite what is there
        raise SystemExit(f"error: {taken[0]}: exists (give --out an empty folder)")
    left = decode_video(ROOT / "samples/left.mp4")[:args.frames]
    right = decode_video(ROOT / "samples/right.mp4")[:args.frames]
    report = {"device": args.device, "torch": torch.__version__, "frames": len(left),
              "size": list(left[0].shape[:2]), "rate": args.rate, "encodes": {}, "decodes": []}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    streams = {}
    for dev in devices:
        path = args.out / f"sample_{dev.replace(':', '')}.svc"
        t = time.time()
        rep = encode_frames(left, right, path, rate=args.rate, device=dev)
        seconds = time.time() - t
        streams[dev] = path.read_bytes()
        report["encodes"][dev] = {"seconds": round(seconds, 2), "bytes": len(streams[dev]),
                                  "psnr_reported": round(rep.psnr, 3)}
        print(f"encode on {dev}: {len(streams[dev])} B, {rep.psnr:.2f} dB, {seconds:.1f} s", flush=True)
    if len(devices) == 2:
        report["same_bytes"] = streams[devices[0]] == streams[devices[1]]
    reference = {}
    for enc in devices:
        path = args.out / f"sample_{enc.replace(':', '')}.svc"
        for dec in [enc] + [d for d in devices if d != enc]:  # the encoder's own device first
            row = {"encoded_on": enc, "decoded_on": dec}
            t = time.time()
            try:
                lefts, rights = decode_file(path, device=dec)
            except Exception as e:  # a mismatch is an answer here, not a crash
                row.update(ok=False, error=f"{type(e).__name__}: {e}")
            else:
                row.update(ok=True, psnr=round(mean_psnr(left + right, lefts + rights), 3))
                if dec == enc:
                    reference[enc] = (lefts, rights)
                elif enc in reference:
                    ref_l, ref_r = reference[enc]
                    row["same_frames_as_encoder_device"] = all(
                        np.array_equal(a, b) for a, b in zip(lefts + rights, ref_l + ref_r))
            row["seconds"] = round(time.time() - t, 2)
            report["decodes"].append(row)
            print(f"decode {enc} stream on {dec}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                              if k not in ("encoded_on", "decoded_on")), flush=True)
        path.unlink()  # only the JSON comes back (the device returns at most 8 files)
    (args.out / "codec_check.json").write_text(json.dumps(report, indent=2) + "\n")
    own = [r for r in report["decodes"] if r["encoded_on"] == r["decoded_on"]]
    return 0 if all(r["ok"] for r in own) else 1


if __name__ == "__main__":
    sys.exit(main())
