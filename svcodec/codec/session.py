"""The codec loop: stereo frame pairs <-> .svc files.

Frames are grouped into GOPs of `gop` access units: one stereo I-frame pair (ELIC per view,
intra.py) followed by stereo P-frame pairs (DCVC-TCM-style backbone with HDC, inter.py), each
predicted from the previous reconstruction of its own view and from the other view. The
reference state (reconstruction and feature of each view) lives for one GOP, so every GOP
decodes on its own (random access). `--gop 1` gives an all-intra stream.

The I-frames of a stream with P-frames are coded at a higher rate than its P-frames (the inter
weights fix the offset), as the paper and DCVC do.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import psnr_rgb
from ..container import AccessUnit, Colour, FrameType, SequenceHeader, SvcReader, SvcWriter, frame_crc32
from ..container.format import MAX_GOP_SIZE
from ..entropy import CodingClock
from ..errors import BitstreamError, InputError, ModelError
from ..zoo import LoadedIntra, ModelSet, load_inter_of_stream, load_set, load_set_of_stream
from . import DEFAULT_GOP, DEFAULT_MOTION, MAX_REFINE_STEPS, MOTION_SEARCHES, SCENECUT_COST_JUMP
from .inter import decode_inter, encode_inter_best
from .intra import decode_intra, encode_intra_refined
from .motion import motion_candidates
from .rdo import rd_cost

ALIGN = 64  # total downsampling of the analysis + hyper-analysis transforms


def deterministic_inference(device: str) -> torch.device:
    """Settings under which encoder and decoder compute bit-identical tensors on a CPU whatever
    the thread count: oneDNN convolutions split their reductions by thread, the reference
    kernels do not."""
    torch.backends.mkldnn.enabled = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA GPU is available")
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device != "cpu":
        raise InputError(f"unknown device {device!r} (use cpu or cuda)")
    return torch.device(device)


def padded_size(h: int, w: int) -> tuple[int, int]:
    return (-(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN)


def to_tensor(left: np.ndarray, right: np.ndarray, device) -> torch.Tensor:
    """Two HxWx3 uint8 frames -> (2, 3, Hp, Wp) float in [0, 1], replicate-padded."""
    # .contiguous(): a permuted (channels-last) input would send the convolutions down other
    # kernels than the decoder's, and the float results would differ in the last bits.
    x = torch.from_numpy(np.stack([left, right])).to(device).permute(0, 3, 1, 2).float().contiguous() / 255.0
    h, w = left.shape[:2]
    hp, wp = padded_size(h, w)
    return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else x


def to_frames(x: torch.Tensor, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, 3, Hp, Wp) in [0, 1] -> two HxWx3 uint8 frames, cropped back."""
    u8 = (x[:, :, :h, :w] * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(u8[0]), np.ascontiguousarray(u8[1])


@dataclass
class FrameStats:
    index: int
    frame_type: str
    bytes: int
    bytes_left: int
    bytes_right: int
    est_bits: float
    psnr_left: float
    psnr_right: float
    motion: str = ""  # P-frames: the motion candidate the encoder kept (see motion.MOTION_SEARCHES)


@dataclass
class EncodeReport:
    path: str
    frames: int = 0
    width: int = 0
    height: int = 0
    bytes: int = 0  # whole file
    payload_bytes: int = 0  # entropy-coded substreams only
    est_bits: float = 0.0  # the model's rate estimate for the same symbols
    enc_seconds: float = 0.0
    # where the encoder's time went (seconds): motion estimation, the networks (and the tensor
    # work around them), range coding
    timings: dict = field(default_factory=lambda: {"motion_estimation": 0.0, "networks": 0.0,
                                                   "entropy_coding": 0.0})
    per_frame: list[FrameStats] = field(default_factory=list)
    scene_cuts: list[int] = field(default_factory=list)  # frames coded as I-frames ahead of the GOP period

    @property
    def bpp(self) -> float:
        return self.bytes * 8 / max(1, 2 * self.width * self.height * self.frames)

    @property
    def p_frame_motion(self) -> dict[str, int]:
        """How many P-frames kept which motion candidate (empty for an all-intra stream)."""
        return dict(sorted(Counter(f.motion for f in self.per_frame if f.frame_type == "P").items()))

    @property
    def psnr(self) -> float:
        vals = [p for f in self.per_frame for p in (f.psnr_left, f.psnr_right)]
        return float(np.mean(vals)) if vals else float("nan")


def as_model_set(codec: ModelSet | LoadedIntra | None) -> ModelSet | None:
    """Callers may pass a ModelSet or, for intra-only use, just the intra weights."""
    return ModelSet(codec, None) if isinstance(codec, LoadedIntra) else codec


def _with_inter(models: ModelSet, inter_weights: str | None, device: str) -> ModelSet:
    if models.inter is not None:
        return models
    from ..zoo import load_inter

    return ModelSet(models.intra, load_inter(inter_weights, device))


def intra_rate(models: ModelSet, rate: float) -> float:
    """The rate I-frames are coded at: the stream's rate, raised for streams with P-frames."""
    return rate if models.inter is None else models.inter.model.intra_rate(rate)


def encode_pairs(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    out_path: str | Path,
    *,
    width: int,
    height: int,
    fps: Fraction,
    rate: float = 2.0,
    gop: int = DEFAULT_GOP,
    grey: bool = False,
    device: str = "cpu",
    weights: str | None = None,
    inter_weights: str | None = None,
    codec: ModelSet | LoadedIntra | None = None,
    motion: str = DEFAULT_MOTION,
    refine: int = 0,
    on_frame: Callable[[FrameStats], None] | None = None,
    sample_aspect: tuple[int, int] | None = None,
    scenecut: bool = True,
) -> EncodeReport:
    """Encode an iterable of (left, right) HxWx3 uint8 RGB frames into `out_path`.
    `sample_aspect`: the source's non-square pixel shape (width : height), kept in the header.
    `scenecut`: a P-frame that would cost more than an I-frame starts a new GOP (an I-frame);
    otherwise a GOP is `gop` frames long."""
    if not 0.0 <= rate <= 3.0:
        raise InputError(f"--rate must be within 0..3, got {rate}")
    if not 1 <= gop <= MAX_GOP_SIZE:  # the container's limit (a reader holds one GOP in memory)
        raise InputError(f"--gop must be within 1..{MAX_GOP_SIZE}, got {gop}")
    if motion not in MOTION_SEARCHES:
        raise InputError(f"--motion must be one of {', '.join(MOTION_SEARCHES)}, got {motion!r}")
    if not 0 <= refine <= MAX_REFINE_STEPS:
        raise InputError(f"--refine must be within 0..{MAX_REFINE_STEPS}, got {refine}")
    dev = deterministic_inference(device)
    models = as_model_set(codec) or load_set(weights, inter_weights, need_inter=gop > 1, device=str(dev))
    if gop > 1:
        models = _with_inter(models, inter_weights, str(dev))
    else:
        models = ModelSet(models.intra, None)  # an all-intra stream needs only the intra weights
    candidates = motion_candidates(motion) if gop > 1 else []
    header = SequenceHeader(
        width=width, height=height, fps_num=fps.numerator, fps_den=fps.denominator, gop_size=gop,
        model_id=models.model_id, model_name=models.name, rate=rate,
        colour=Colour.GREY if grey else Colour.RGB, sample_aspect=sample_aspect,
    )
    report = EncodeReport(path=str(out_path), width=width, height=height)
    t0 = time.perf_counter()
    coding0 = CodingClock.seconds
    with SvcWriter(out_path, header) as writer:
        rate = header.rate  # the float32 the decoder will read back
        i_rate = intra_rate(models, rate)
        gop_units: list[AccessUnit] = []
        ref = None
        for index, (left, right) in enumerate(pairs):
            for view, frame in (("left", left), ("right", right)):
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise InputError(f"frame {index} ({view}): expected {height}x{width}x3 uint8, "
                                     f"got shape {frame.shape} {frame.dtype}")
            x = to_tensor(left, right, dev)
            t_frame = time.perf_counter()

            def intra():
                return encode_intra_refined(models.intra.model, models.intra.z_tables, x, i_rate, refine,
                                            (height, width))

            if not gop_units:
                res, ftype, motion_used = intra(), FrameType.I, ""
            else:
                t_me = time.perf_counter()
                flows = [estimate(x, ref.frame) for _, estimate in candidates]
                report.timings["motion_estimation"] += time.perf_counter() - t_me
                res, pick = encode_inter_best(models.inter.model, models.inter.z_tables, x, flows, ref, rate,
                                              refine, (height, width))
                ftype, motion_used = FrameType.P, candidates[pick][0]
            if scenecut and gop > 1:
                cost = rd_cost(x, res, rate, (height, width))
                if ftype == FrameType.P and cost > SCENECUT_COST_JUMP * last_cost:
                    cut = intra()
                    cut_cost = rd_cost(x, cut, rate, (height, width))
                    if cut_cost < cost:
                        writer.write_gop(gop_units)  # the GOP ends before this frame
                        gop_units, res, ftype, motion_used, cost = [], cut, FrameType.I, "", cut_cost
                        report.scene_cuts.append(index)
                last_cost = cost
            if ftype == FrameType.I:
                ref = models.inter.model.reference_from_intra(res.x_hat) if models.inter is not None else None
            else:
                ref = res.reference
            report.timings["networks"] += time.perf_counter() - t_frame
            rec_l, rec_r = to_frames(res.x_hat, height, width)
            au = AccessUnit(index, ftype, frame_crc32(rec_l, rec_r), res.substreams)
            gop_units.append(au)
            sizes = [sum(len(s.data) for s in res.substreams if s.view == v) for v in (0, 1)]
            stats = FrameStats(index, ftype.name, au.payload_bytes(), sizes[0], sizes[1], res.est_bits,
                               psnr_rgb(left, rec_l), psnr_rgb(right, rec_r), motion_used)
            report.per_frame.append(stats)
            report.payload_bytes += au.payload_bytes()
            report.est_bits += res.est_bits
            if len(gop_units) == gop:
                writer.write_gop(gop_units)
                gop_units = []
            if on_frame:
                on_frame(stats)
        if gop_units:
            writer.write_gop(gop_units)
        report.frames = len(report.per_frame)
        if report.frames == 0:
            raise InputError("the input has no frames")
        writer.set_frame_count(report.frames)
    report.enc_seconds = time.perf_counter() - t0
    report.timings["entropy_coding"] = CodingClock.seconds - coding0
    report.timings["networks"] -= report.timings["motion_estimation"] + report.timings["entropy_coding"]
    report.bytes = Path(out_path).stat().st_size
    return report


def encode_frames(left_frames, right_frames, out_path, *, rate=2.0, gop=DEFAULT_GOP, fps=Fraction(30),
                  device="cpu", weights=None, inter_weights=None, codec=None, motion=DEFAULT_MOTION,
                  refine=0, scenecut=True) -> EncodeReport:
    """Convenience wrapper over lists of frames (benchmarks, tests)."""
    if len(left_frames) != len(right_frames):
        raise InputError("left and right have different frame counts")
    h, w = left_frames[0].shape[:2]
    return encode_pairs(zip(left_frames, right_frames), out_path, width=w, height=h, fps=fps,
                        rate=rate, gop=gop, device=device, weights=weights, inter_weights=inter_weights,
                        codec=codec, motion=motion, refine=refine, scenecut=scenecut)


def open_stream(path: str | Path, weights: str | None = None, device: str = "cpu",
                codec: ModelSet | LoadedIntra | None = None,
                inter_weights: str | None = None, recover: bool = False) -> tuple[SvcReader, ModelSet]:
    """Open a stream and the weights it needs: those it names (shipped weights only), unless the
    caller passes weights or loaded models explicitly; their id must match the stream's.
    `recover`: open a damaged or cut stream too (SvcReader(recover=True))."""
    reader = SvcReader(path, recover=recover)
    seq = reader.sequence
    dev = deterministic_inference(device)
    models = as_model_set(codec)
    if models is None:
        models = load_set_of_stream(seq.model_name, weights, inter_weights, device=str(dev))
    elif "+" not in seq.model_name:
        models = ModelSet(models.intra, None)  # an all-intra stream
    elif models.inter is None:
        models = ModelSet(models.intra, load_inter_of_stream(seq.model_name, inter_weights, str(dev)))
    if models.model_id != seq.model_id:
        raise ModelError(
            f"{path} was encoded with weights {seq.model_id.hex()} ({seq.model_name}); "
            f"loaded weights are {models.model_id.hex()} ({models.name}) — pass the matching "
            "--weights / --inter-weights"
        )
    return reader, models


@dataclass
class Recovery:
    """Asks iter_decode to get through a damaged or cut stream, and records what it did.

    conceal: a frame that fails a check (access unit CRC, range decoder, reconstruction CRC), and
        the rest of its GOP, is output as the last good frame pair (mid-grey before the first
        one); so is a GOP whose header cannot be read. Decoding resumes at the next intact GOP.
    partial: a cut file yields its complete GOPs and stops at the cut instead of failing.
    """

    conceal: bool = False
    partial: bool = False
    concealed: list[int] = field(default_factory=list)  # frame indices output as a repeat
    problems: list[str] = field(default_factory=list)  # one line per concealed run of frames
    declared_frames: int = 0  # frames the sequence header announces
    cut: str | None = None  # why the output stops early (partial), if it does
    frames_out: int = 0  # frame pairs yielded, concealed ones included

    @property
    def frames_decoded(self) -> int:
        return self.frames_out - len(self.concealed)


def _decode_unit(models: ModelSet, au, ref, size, i_rate: float, rate: float):
    """One access unit -> (reconstruction tensor, reference state for the next P-frame); a
    decoding error names the frame."""
    if au.frame_type != FrameType.I and (models.inter is None or ref is None):
        raise BitstreamError(f"frame {au.frame_index}: a P-frame in a stream without P-frame weights")
    try:
        if au.frame_type == FrameType.I:
            x_hat = decode_intra(models.intra.model, models.intra.z_tables, au.substreams, size, i_rate)
            return x_hat, (models.inter.model.reference_from_intra(x_hat) if models.inter is not None else None)
        return decode_inter(models.inter.model, models.inter.z_tables, au.substreams, ref, rate)
    except BitstreamError as e:
        raise BitstreamError(f"frame {au.frame_index}: {e}") from None


def _checked_frames(x_hat, au, seq) -> tuple[np.ndarray, np.ndarray]:
    left, right = to_frames(x_hat, seq.height, seq.width)
    if frame_crc32(left, right) != au.recon_crc32:
        raise BitstreamError(
            f"frame {au.frame_index}: reconstruction differs from the encoder's "
            "(corrupt stream, or decoded with different weights/arithmetic)"
        )
    return left, right


def iter_decode(path: str | Path, *, weights: str | None = None, device: str = "cpu",
                codec: ModelSet | LoadedIntra | None = None, inter_weights: str | None = None,
                start: int = 0, count: int | None = None,
                recovery: Recovery | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (frame index, left, right) as HxWx3 uint8 frames, from frame `start` (decoding
    starts at the GOP that holds it: random access through the index) for `count` frames.
    Every frame's reconstruction is checked against the encoder's CRC; a mismatch raises
    BitstreamError, unless `recovery` asks to conceal it (see Recovery)."""
    reader, models = open_stream(path, weights, device, codec, inter_weights, recover=recovery is not None)
    seq = reader.sequence
    if start < 0 or (seq.frame_count and start >= seq.frame_count):
        raise InputError(f"{path}: --start {start} is outside the stream's {seq.frame_count} frames")
    end = None if count is None else start + count
    size = padded_size(seq.height, seq.width)
    i_rate = intra_rate(models, seq.rate)
    if recovery is not None:
        yield from _decode_recovering(reader, models, recovery, start, end, size, i_rate)
        return
    for g in range(reader.gop_of_frame(start), len(reader)):
        ref = None
        for au in reader.read_gop(g):
            if end is not None and au.frame_index >= end:
                return
            x_hat, ref = _decode_unit(models, au, ref, size, i_rate, seq.rate)
            if au.frame_index < start:
                continue
            left, right = _checked_frames(x_hat, au, seq)
            yield au.frame_index, left, right


def _decode_recovering(reader: SvcReader, models: ModelSet, recovery: Recovery, start: int,
                       end: int | None, size, i_rate: float) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """iter_decode over a recovering reader: GOPs and lost frame ranges in frame order."""
    seq = reader.sequence
    recovery.declared_frames = seq.frame_count
    prefix = f"{reader.path}: "
    segments = sorted([(g.first_frame, g.first_frame + g.frame_count, i) for i, g in enumerate(reader.gops)]
                      + [(lost.first, lost.end, lost) for lost in reader.lost], key=lambda seg: seg[0])
    last = None  # the last good frame pair

    def conceal(first: int, stop: int, reason: str):
        nonlocal last
        if last is None:
            grey = np.full((seq.height, seq.width, 3), 128, np.uint8)
            last = (grey, grey)
        first, stop = max(first, start), stop if end is None else min(stop, end)
        if first < stop:
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
            recovery.problems.append(f"frames {first}-{stop - 1}: {reason}")
        for n in range(first, stop):
            recovery.concealed.append(n)
            recovery.frames_out += 1
            yield n, last[0], last[1]

    for first, stop, item in segments:
        if end is not None and first >= end:
            return
        if stop <= start:
            continue
        if not isinstance(item, int):  # frames the reader could not locate
            if item.cut:
                if recovery.partial:
                    recovery.cut = item.reason
                    return
                raise BitstreamError(f"{prefix}{item.reason}; --partial decodes the complete GOPs before the cut")
            if not recovery.conceal:
                raise BitstreamError(f"{prefix}{item.reason}")
            yield from conceal(first, stop, item.reason)
            continue
        ref, frame = None, first
        try:
            for au in reader.iter_gop(item):
                if end is not None and au.frame_index >= end:
                    return
                x_hat, ref = _decode_unit(models, au, ref, size, i_rate, seq.rate)
                # checked before `start` too: a frame concealed after it repeats this one
                last = _checked_frames(x_hat, au, seq)
                frame = au.frame_index + 1
                if au.frame_index >= start:
                    recovery.frames_out += 1
                    yield au.frame_index, last[0], last[1]
        except BitstreamError as e:
            if not recovery.conceal:
                raise
            yield from conceal(frame, stop, str(e))


def decode_file(path, *, device="cpu", weights=None, codec=None, inter_weights=None, start=0, count=None,
                recovery: Recovery | None = None):
    """Decode a whole file (or `count` frames from `start`) to (left_list, right_list)."""
    lefts, rights = [], []
    for _, left, right in iter_decode(path, weights=weights, device=device, codec=codec,
                                      inter_weights=inter_weights, start=start, count=count,
                                      recovery=recovery):
        lefts.append(left)
        rights.append(right)
    return lefts, rights
