"""What the CLI shows: rich progress bars, summary lines and tables."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..container import MOTION_KINDS, FrameType

err = Console(stderr=True)
out = Console(markup=False, emoji=False, soft_wrap=True)  # file paths verbatim: no markup, no wrapping
MOTION_WORDS = {"dis": "estimated (DIS) motion", "zero": "zero motion"}


def _stop(progress) -> None:
    try:
        progress.stop()  # shows the cursor again
    except OSError:  # the terminal went away (SIGHUP): nothing left to restore
        pass


def restore_terminal() -> None:
    """Show the cursor again (a progress bar hides it) after an interruption."""
    try:
        err.show_cursor(True)
    except OSError:  # the terminal went away (SIGHUP)
        pass


class EncodeProgress:
    """Progress bar with frame pairs per second and the running bits per pixel."""

    def __init__(self, total, width, height, quiet):
        self.pixels = 2 * width * height
        self.quiet = quiet
        self.bytes = 0
        self.psnr_sum = 0.0
        self.n = 0
        self.t0 = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]encode"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=err, disable=quiet,
        )
        self.task = self.progress.add_task("encode", total=total, stats="")

    def __enter__(self):
        # the bar starts with the first coded frame, so set-up errors are not preceded by it
        return self

    def __exit__(self, *exc):
        _stop(self.progress)

    def update(self, stats):
        if self.n == 0:
            self.progress.start()
        self.n += 1
        self.bytes += stats.bytes
        self.psnr_sum += stats.psnr_left + stats.psnr_right
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        bpp = self.bytes * 8 / (self.pixels * self.n)
        # the mean over all frames so far, as in the summary (not the last frame's value)
        self.progress.update(self.task, advance=1, stats=f"{self.n / elapsed:.2f} fps  payload {bpp:.4f} bpp  "
                                                         f"mean {self.psnr_sum / (2 * self.n):.2f} dB")


class DecodeProgress:
    def __init__(self, total, quiet):
        self.progress = Progress(
            TextColumn("[bold]decode"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(), console=err, disable=quiet,
        )
        self.task = self.progress.add_task("decode", total=total, speed="")
        self.n = 0
        self.t0 = time.perf_counter()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        _stop(self.progress)

    def advance(self):
        self.n += 1
        self.progress.update(self.task, advance=1, speed=f"{self.fps:.2f} fps")

    @property
    def fps(self) -> float:
        return self.n / max(1e-9, time.perf_counter() - self.t0)


def decode_warning(stream, recovery) -> str | None:
    """The one warning line of a decode that concealed frames or stopped at a cut, or None."""
    if recovery is None or not (recovery.concealed or recovery.cut):
        return None
    parts = []
    if recovery.concealed:
        parts.append(f"concealed {len(recovery.concealed)} of {recovery.frames_out} frames output "
                     f"(repeated the last good pair): {'; '.join(recovery.problems)}")
    if recovery.cut:
        parts.append(f"recovered {recovery.frames_out} of {recovery.declared_frames} frames "
                     f"(the complete GOPs before the cut): {recovery.cut}")
    return f"svc: warning: {stream}: " + "; ".join(parts)


def print_decode_summary(stream, paths, prog, recovery, as_json: bool, quiet: bool) -> None:
    warning = decode_warning(stream, recovery)
    if warning:
        err.print(warning, markup=False, highlight=False, soft_wrap=True)
    if as_json:
        summary = {"stream": str(stream), "outputs": list(paths), "frames": prog.n, "fps": prog.fps}
        if recovery is not None:
            summary.update(declared_frames=recovery.declared_frames, decoded_frames=recovery.frames_decoded,
                           concealed_frames=recovery.concealed, problems=recovery.problems, cut=recovery.cut)
        out.print_json(json.dumps(summary))
    elif not quiet:
        out.print(f"decoded {prog.n} frame pairs ({prog.fps:.2f} fps) -> {', '.join(paths)}")


def print_encode_report(report, as_json: bool) -> None:
    overhead = report.bytes - report.payload_bytes
    est_total = report.est_bits / 8 + overhead
    summary = {
        "output": report.path, "frames": report.frames, "width": report.width, "height": report.height,
        "bytes": report.bytes, "bpp": report.bpp, "psnr_rgb": report.psnr,
        "payload_bytes": report.payload_bytes, "container_overhead_bytes": overhead,
        "estimated_bytes": est_total, "real_vs_estimated": report.bytes / est_total - 1,
        "enc_seconds": report.enc_seconds, "enc_fps": report.frames / max(1e-9, report.enc_seconds),
    }
    motion = report.p_frame_motion
    if motion:
        summary["p_frame_motion"] = motion
    summary["scene_cuts"] = report.scene_cuts
    if as_json:
        summary["per_frame"] = [vars(f) for f in report.per_frame]
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"{report.path}: {report.frames} frame pairs {report.width}x{report.height}, "
        f"{report.bytes} bytes, {report.bpp:.4f} bpp, RGB PSNR {report.psnr:.2f} dB, "
        f"{summary['enc_fps']:.2f} fps"
    )
    out.print(
        f"  real size {report.bytes} B = payload {report.payload_bytes} B + container {overhead} B; "
        f"model estimate {est_total:.0f} B (payload {report.est_bits / 8:.0f} B + container); "
        f"difference {summary['real_vs_estimated'] * 100:+.2f}%"
    )
    if motion:
        kept = ", ".join(f"{n} with {MOTION_WORDS.get(k, k)}" for k, n in motion.items())
        out.print(f"  P-frames: {kept}")
    if report.scene_cuts:
        out.print(f"  scene cuts (new GOP, I-frame pair): frame{'s' if len(report.scene_cuts) > 1 else ''} "
                  f"{', '.join(map(str, report.scene_cuts))}")


def print_info(reader, units) -> None:
    seq = reader.sequence
    t = Table(title=f"{reader.path}  (.svc v{reader.version[0]}.{reader.version[1]}, {reader.file_size} bytes)",
              show_header=False)
    for k, v in seq.to_dict().items():
        t.add_row(k, str(v))
    t.add_row("overhead_bytes", str(reader.overhead_bytes()))
    pixels = 2 * seq.width * seq.height
    if seq.frame_count:
        t.add_row("bpp", f"{reader.file_size * 8 / (pixels * seq.frame_count):.4f}")
    out.print(t)
    g = Table(title="GOPs")
    for col in ("gop", "first frame", "frames", "bytes"):
        g.add_column(col, justify="right")
    for gh in reader.gops:
        g.add_row(str(gh.index), str(gh.first_frame), str(gh.frame_count), str(gh.data_length))
    out.print(g)
    if not units:
        return
    f = Table(title="Access units (bytes per view: mv = motion of P-frames, ctx = context/texture)")
    for col in ("frame", "type", "mv L", "mv R", "ctx L", "ctx R", "total B", "bpp", "recon crc"):
        f.add_column(col, justify="right")
    def part(au, view, motion):
        return sum(len(s.data) for s in au.substreams if s.view == view and (s.kind in MOTION_KINDS) == motion)

    for au in units:
        total = au.payload_bytes()
        is_p = au.frame_type == FrameType.P
        mv = [str(part(au, v, True)) if is_p else "-" for v in (0, 1)]
        ctx = [str(part(au, v, False)) for v in (0, 1)]
        f.add_row(str(au.frame_index), FrameType(au.frame_type).name, *mv, *ctx, str(total),
                  f"{total * 8 / pixels:.4f}", f"{au.recon_crc32:08x}")
    out.print(f)
