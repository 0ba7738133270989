"""`svc`: the command line. Thin: argument parsing, progress and tables; the work is in
svcodec.codec / svcodec.io / svcodec.container.

Start-up order matters: every check that needs no model (options, paths, outputs, probing the
input videos, parsing the stream's headers) runs first, and torch (5-10 s to import) is
imported only when there is real work to do. `svc info` never imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import warnings
from fractions import Fraction

import click

from .. import allocator, fsutil
from ..codec import DEFAULT_GOP, DEFAULT_MOTION, MAX_REFINE_STEPS, MOTION_SEARCHES  # the package's __init__ imports nothing heavy
from ..errors import BitstreamError, InputError, SvcError

# compressai's import trips a torch.jit deprecation warning that means nothing to a user.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

DEVICE = click.Choice(["cpu", "cuda"])
_SIGNAL_NAMES = {getattr(signal, n): n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so every `with` block drops its
    temporaries on the way out (a BaseException: `except Exception` cannot swallow it)."""

    def __init__(self, signum: int):
        super().__init__(_SIGNAL_NAMES.get(signum, str(signum)))
        self.signum = signum


def _raise_interrupted(signum, _frame):
    # Further signals are ignored from here on, so that they cannot cut the cleanup short.
    for s in _SIGNAL_NAMES:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_unwind():
    """Turn SIGINT/SIGTERM/SIGHUP into `Interrupted` while a command runs (restored after, so
    in-process callers such as tests keep their own handlers)."""
    try:
        old = {s: signal.signal(s, _raise_interrupted) for s in _SIGNAL_NAMES}
    except ValueError:  # not the main thread: leave signals alone
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Cli(click.Group):
    """Turns every error into one line on stderr and a non-zero exit (SVC_DEBUG=1 shows
    the traceback); a signal removes every temporary and exits 128 + its number."""

    def invoke(self, ctx):
        with _signals_unwind():
            try:
                return super().invoke(ctx)
            except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
                raise
            except SvcError as exc:
                self._fail(exc, 1)
            except KeyboardInterrupt as exc:
                self._interrupted(exc)
            except Exception as exc:  # noqa: BLE001 - last line of defence: no tracebacks for users
                cause = _interruption(exc)
                if cause is not None:  # e.g. the progress bar could not write to a closed terminal
                    self._interrupted(cause)
                oom = _out_of_memory(exc)
                if oom is not None:  # a resource limit, not a bug: say what ran out
                    self._fail(RuntimeError(oom), 1)
                self._fail(exc, 3, prefix="internal error: ")

    @staticmethod
    def _interrupted(exc: KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        fsutil.discard_all()  # whatever a `with` block did not get to
        _restore_terminal()
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            click.echo(f"svc: interrupted ({_SIGNAL_NAMES.get(signum, signum)})", err=True)
        sys.exit(128 + signum)

    @staticmethod
    def _fail(exc, code, prefix=""):
        if os.environ.get("SVC_DEBUG"):
            raise exc
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with contextlib.suppress(OSError):  # stderr closed: the exit code still tells
            click.echo(f"svc: error: {prefix}{msg}", err=True)
        sys.exit(code)

    # `svc bench` pulls in matplotlib, scipy and torch: imported only when it is the command.
    _LAZY = {"bench": ("..bench.run", "bench_command", "RD benchmark against x265/x264 anchors.")}

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self._LAZY])

    def get_command(self, ctx, name):
        if name in self._LAZY and name not in self.commands:
            module, attr, _ = self._LAZY[name]
            try:
                from importlib import import_module

                return getattr(import_module(module, __package__), attr)
            except ImportError:  # the benchmark needs matplotlib etc.; the codec does not
                return None
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(n, self.commands[n].get_short_help_str(60)) for n in super().list_commands(ctx)]
        rows += [(n, help_) for n, (_, _, help_) in self._LAZY.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


_ALLOC_BYTES = re.compile(r"tried to allocate (\d+) bytes")


def _out_of_memory(exc: BaseException) -> str | None:
    """A one-line explanation when exc is an allocation failure (MemoryError, torch's CPU
    allocator, CUDA out of memory), else None."""
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text:
        m = _ALLOC_BYTES.search(text)
        need = f" (an allocation of {int(m.group(1)) / 2**20:.0f} MiB failed)" if m else ""
        return (f"out of memory{need}; memory grows with the frame size (about 1.9 GB at 512x288, "
                f"5 GB at 1280x720, 8.4 GB at 1920x1080): free some, or set SVC_MALLOC_TUNING=0 "
                f"(a quarter less, a quarter slower)")
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return "the GPU ran out of memory; run with --device cpu, or on a GPU with more memory"
    return None


def _interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption an exception was raised while handling, if any (cleanup after a signal
    can fail in its own way, e.g. writing to a terminal that SIGHUP closed)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


def _restore_terminal():
    from . import views

    views.restore_terminal()


def _overwrite_option(f):
    f = click.option("-n", "--no-overwrite", "no_overwrite", is_flag=True,
                     help="Never overwrite an existing output (exit with an error instead).")(f)
    return click.option("-y", "--overwrite", "overwrite", is_flag=True,
                        help="Replace existing outputs (never an input).")(f)


def _overwrite_mode(overwrite: bool, no_overwrite: bool) -> bool | None:
    if overwrite and no_overwrite:
        raise click.UsageError("-y/--overwrite and -n/--no-overwrite exclude each other")
    return True if overwrite else (False if no_overwrite else None)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svcodec")
def main():
    """svcodec: a neural stereo video codec.

    \b
      svc encode left.mp4 right.mp4 -o clip.svc     compress a stereo pair of videos
      svc info clip.svc                             headers, GOPs and per-frame sizes
      svc decode clip.svc                           back to lossless stereo video

    \b
    Environment:
      SVC_DEBUG=1          show the traceback behind an error
      SVC_MALLOC_TUNING=0  never keep freed memory for reuse (slower, smaller peak;
                           by default only where the estimated peak fits in memory)
      SVC_REAPER=0         no helper process removing temporaries after a kill -9
      SVC_WEIGHTS_DIR      where the shipped weights are looked up (default: weights/)
      OMP_NUM_THREADS      torch threads (or --threads)
    """


@main.command()
@click.argument("left", type=click.Path())
@click.argument("right", type=click.Path(), required=False)
@click.option("-o", "--output", required=True, type=click.Path(), help="Output .svc file.")
@_overwrite_option
@click.option("--sbs", is_flag=True, help="LEFT is one side-by-side video (left half | right half); no RIGHT.")
@click.option("--rate", type=float, default=2.0, show_default=True,
              help="Rate point 0 (smallest) .. 3 (best quality); fractions interpolate.")
@click.option("--gop", type=int, default=DEFAULT_GOP, show_default=True, help="Frames per GOP: one I-frame pair, then P-frame pairs predicted from the previous frame and the other view; every GOP decodes on its own (seek granularity). 1 = all-intra. Longer GOPs spend fewer bits, but the P-frame quality drifts down along a GOP (even on static footage); 16 measured better than 32 on every clip tried.")
@click.option("--motion", type=click.Choice(list(MOTION_SEARCHES)), default=DEFAULT_MOTION, show_default=True,
              help="Motion for P-frames: 'rd' codes each P-frame with the estimated (DIS optical flow) "
                   "motion and with zero motion and keeps the cheaper in rate-distortion cost (1.4-2.7x the "
                   "P-frame encode time; the decoder's work is unchanged); 'dis' or 'zero' code one.")
@click.option("--refine", type=int, default=0, show_default=True, metavar="N",
              help="Slow, smaller: N gradient steps per frame pair on the coded latents against the "
                   "rate-distortion loss (I-frames: all latents; P-frames: the texture latents, after the "
                   "motion choice). Kept only where it codes for less. Same format and decoder. "
                   "Measured with 20 steps: +0.03..+0.21 dB for -4..+1 % bits, at 6-13x the encode time. "
                   f"At most {MAX_REFINE_STEPS}.")
@click.option("--scenecut/--no-scenecut", default=True, show_default=True,
              help="Start a new GOP (an I-frame pair) at a frame that would cost more as a P-frame than as "
                   "an I-frame (in rate-distortion cost): a cut, a flash. Tried only where a P-frame's cost "
                   "jumps to over twice the previous frame's. --no-scenecut: every GOP is --gop frames long.")
@click.option("--frames", type=int, default=None, help="Encode only the first N frame pairs.")
@click.option("--no-autorotate", "no_autorotate", is_flag=True,
              help="Code frames as stored. By default they are turned upright as players show them "
                   "(like ffmpeg): a video's display matrix (phones), an image's EXIF orientation.")
@click.option("--fps", default=None, help="Frame rate for image-folder input (e.g. 30 or 30000/1001).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--weights", default=None, help="I-frame weights: a name in weights/ or a .safetensors path.")
@click.option("--inter-weights", default=None, help="P-frame weights (name or path) for GOPs longer than 1.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (output is identical for any value).")
@click.option("--json", "as_json", is_flag=True, help="Print the encode report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def encode(left, right, output, overwrite, no_overwrite, sbs, rate, gop, motion, refine, scenecut, frames,
           no_autorotate, fps, device, weights, inter_weights, threads, as_json, quiet):
    """Compress a stereo clip into an .svc file.

    LEFT and RIGHT are two videos (anything FFmpeg reads) or two folders of PNG/WebP/JPEG
    frames; with --sbs, LEFT alone is a side-by-side video. Frames are coded in RGB; YUV
    sources are converted with the matrix/range they declare (BT.601 limited if none).
    An existing OUTPUT is only replaced with -y.
    """
    from ..container.format import MAX_GOP_SIZE, check_frame_size
    from ..io import open_stereo

    if sbs == (right is not None):
        raise click.UsageError("give LEFT and RIGHT, or one side-by-side input with --sbs")
    mode = _overwrite_mode(overwrite, no_overwrite)
    if frames is not None and frames < 1:
        raise InputError("--frames must be at least 1")
    if not 0.0 <= rate <= 3.0:
        raise InputError(f"--rate must be within 0..3, got {rate}")
    if not 1 <= gop <= MAX_GOP_SIZE:
        raise InputError(f"--gop must be within 1..{MAX_GOP_SIZE}, got {gop}")
    if not 0 <= refine <= MAX_REFINE_STEPS:
        raise InputError(f"--refine must be within 0..{MAX_REFINE_STEPS}, got {refine}")
    if threads is not None and threads < 1:
        raise click.BadParameter("--threads must be at least 1")
    if os.path.isdir(output):
        raise InputError(f"{output}: is a directory")
    fsutil.check_output(output, (left, right), mode)
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise InputError(f"{output}: output folder {os.path.dirname(os.path.abspath(output))} does not exist")
    source = open_stereo(left, right, side_by_side=sbs, max_frames=frames, autorotate=not no_autorotate,
                         **({"fps": fps} if fps else {}))
    with source:
        try:
            check_frame_size(source.width, source.height)
        except ValueError as e:
            raise InputError(f"{left}: {e}") from None
        # before torch allocates anything: the allocator settings suit the frame size and memory
        _notices([*source.notices, *_memory_note(source.width, source.height, "encode", device)])
        from . import views
        from ..codec.session import encode_pairs  # torch: only now that the input is known good

        _threads(threads)
        total = source.frame_count if frames is None else min(frames, source.frame_count or frames)
        # The codec writes the finished stream onto a name reserved here; it reaches `output`
        # only through fsutil.publish, which (without -y) refuses a file that appeared meanwhile.
        reserved = fsutil.create_temp_file(output)
        try:
            with views.EncodeProgress(total, source.width, source.height, quiet or as_json) as prog:
                report = encode_pairs(
                    source.frames(frames), reserved, width=source.width, height=source.height, fps=source.fps,
                    rate=rate, gop=gop, grey=source.grey, device=device, weights=weights, motion=motion,
                    refine=refine, on_frame=prog.update, sample_aspect=source.sample_aspect, scenecut=scenecut,
                    **_inter(inter_weights),
                )
            with fsutil.signals_deferred():
                fsutil.publish(reserved, output, overwrite=bool(mode))
        finally:
            fsutil.discard(reserved)  # gone already after a successful publish
    report.path = output
    views.print_encode_report(report, as_json)


def _start_frame(text: str, seq) -> int:
    """--start: a frame number ('120') or a time ('2.5s', '1:02.5', '0:01:02.5') at the stream's
    frame rate (the frame shown at that time)."""
    text = text.strip()
    try:
        if text.isdigit():
            return int(text)
        if text.endswith("s"):
            seconds = float(text[:-1])
        else:
            seconds = 0.0
            for part in text.split(":"):
                seconds = seconds * 60 + float(part)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a frame number or a time like 2.5s or 1:02.5",
                                 param_hint="--start") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise click.BadParameter(f"{text!r}: must be a time >= 0", param_hint="--start")
    return int(seconds * seq.fps_num // seq.fps_den + 1e-9)


@main.command()
@click.argument("stream", type=click.Path())
@click.option("-o", "--output", default=None,
              help="Output path (default: next to STREAM, named after it). mkv: a stem giving "
                   "STEM.left.mkv/STEM.right.mkv; png: a folder with left/ and right/; "
                   "sbs-*: one side-by-side file/folder.")
@_overwrite_option
@click.option("-f", "--format", "fmt", type=click.Choice(["mkv", "png", "sbs-mkv", "sbs-png"]),
              default="mkv", show_default=True, help="Lossless output: FFV1 Matroska or PNG frames.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--weights", default=None, help="Override the weights named in the stream.")
@click.option("--inter-weights", default=None, help="Override the P-frame weights named in the stream.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (output is identical for any value).")
@click.option("--start", default="0", show_default=True,
              help="First frame to output: a frame number, or a time in seconds ('2.5s', '1:02.5'). "
                   "Decoding seeks through the index and starts at the I-frame of the GOP holding it.")
@click.option("--frames", "count", type=click.IntRange(min=1), default=None, help="Output at most N frame pairs.")
@click.option("--conceal", is_flag=True,
              help="Do not stop at a corrupt frame: repeat the last good frame pair until the next intact "
                   "GOP (I-frame), list the concealed frames in a warning, and exit 0.")
@click.option("--partial", is_flag=True,
              help="Decode a cut file: every complete GOP before the cut (found by scanning from the "
                   "start), with a warning saying how many frames were recovered; exit 0.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON (concealed frames included).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def decode(stream, output, overwrite, no_overwrite, fmt, device, weights, inter_weights, threads, start, count,
           conceal, partial, as_json, quiet):
    """Decode an .svc file back to stereo frames (lossless containers of the reconstruction).

    Every frame is checked against the encoder's reconstruction checksum: a corrupt stream
    stops with an error naming the frame instead of producing garbage, and no partial output
    is left behind; --conceal and --partial instead decode what can be decoded and say what
    was not (one `svc: warning:` line on stderr, exit status 0).
    Existing files are only replaced with -y; the stream itself never is.
    """
    from ..container import Colour, SvcReader
    from ..io import StereoWriter, check_outputs, default_output_name, output_paths

    mode = _overwrite_mode(overwrite, no_overwrite)
    if threads is not None and threads < 1:
        raise click.BadParameter("--threads must be at least 1")
    recovering = conceal or partial
    # headers, index and limits: a hostile file stops here
    try:
        reader = SvcReader(stream, recover=recovering)
    except BitstreamError as e:
        if "truncated" in str(e):
            raise BitstreamError(f"{e}; --partial decodes the complete GOPs before the cut") from None
        raise
    if not recovering:  # and every access unit's CRC and table, one GOP at a time
        for i in range(len(reader)):
            reader.read_gop(i)
    seq = reader.sequence
    first = _start_frame(start, seq)
    if seq.frame_count and first >= seq.frame_count:
        raise InputError(f"{stream}: --start {start} is past the stream's end ({seq.frame_count} frames)")
    available = reader.cut_frames.first if partial and reader.cut_frames else seq.frame_count
    total = max(0, available - first) if count is None else min(count, max(0, available - first))
    output = output or default_output_name(stream, fmt)
    paths = output_paths(output, fmt)
    check_outputs(paths, fmt, (stream,), mode)
    _notices([*_aspect_note(paths[0], seq), *_memory_note(seq.width, seq.height, "decode", device)])
    from . import views
    from ..codec.session import Recovery, iter_decode, open_stream  # torch: only now that the stream looks sound

    _threads(threads)
    fps = Fraction(seq.fps_num, seq.fps_den)
    recovery = Recovery(conceal=conceal, partial=partial) if recovering else None
    try:
        _, codec = open_stream(stream, weights=weights, device=device, recover=recovering, **_inter(inter_weights))
        with views.DecodeProgress(total, quiet or as_json) as prog, StereoWriter(
            output, fmt=fmt, width=seq.width, height=seq.height, fps=fps, grey=seq.colour == Colour.GREY,
            overwrite=bool(mode),
        ) as writer:
            for _, left, right in iter_decode(stream, device=device, codec=codec, start=first, count=count,
                                              recovery=recovery):
                writer.write(left, right)
                prog.advance()
            if prog.n == 0:
                raise BitstreamError(f"{stream}: no frame could be decoded ({_recovery_text(recovery)})")
    except BitstreamError as e:
        raise _naming(e, stream) from None
    views.print_decode_summary(stream, paths, prog, recovery, as_json, quiet)


def _recovery_text(recovery) -> str:
    parts = list(recovery.problems) if recovery else []
    if recovery and recovery.cut:
        parts.append(recovery.cut)
    return "; ".join(parts)


@main.command()
@click.argument("stream", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--frames/--no-frames", "per_frame", default=True, show_default=True,
              help="List every access unit.")
def info(stream, as_json, per_frame):
    """Show an .svc file's headers, GOPs and per-frame sizes per view."""
    from ..container import SvcReader
    from . import views

    reader = SvcReader(stream)
    units = [au for _, aus in reader for au in aus] if per_frame else []
    if as_json:
        d = reader.to_dict()
        d["overhead_bytes"] = reader.overhead_bytes()
        if per_frame:
            d["access_units"] = [au.to_dict() for au in units]
        click.echo(json.dumps(d, indent=2))
    else:
        views.print_info(reader, units)


def _naming(exc: BitstreamError, path: str) -> BitstreamError:
    """Stream errors name the file (the codec's own messages start at the frame)."""
    text = str(exc)
    return exc if text.startswith(os.fspath(path)) else BitstreamError(f"{path}: {text}")


def _inter(inter_weights):
    # passed only when given, so an intra-only codec API keeps being called as before
    return {"inter_weights": inter_weights} if inter_weights else {}


def _aspect_note(output: str, seq) -> list[str]:
    """The stream keeps a source's non-square pixels, but neither output format can carry them
    (PNG has no such field; PyAV writes no Matroska display size): say how to show them."""
    if seq.sample_aspect is None:
        return []
    n, d = seq.sample_aspect
    shown = max(1, round(seq.width * n / d))
    return [f"{output}: the source's pixels are not square ({n}:{d}); the output keeps the coded "
            f"{seq.width}x{seq.height} pixels without saying so: show it {shown}x{seq.height} "
            f"(e.g. ffmpeg -vf setsar={n}/{d}, mpv --video-aspect-override={shown}:{seq.height})"]


def _memory_note(width: int, height: int, task: str, device: str) -> list[str]:
    note = allocator.tune_for_frames(width, height, task, device)
    return [note] if note else []


def _notices(lines) -> None:
    for line in lines:
        click.echo(f"svc: note: {line}", err=True)


def _threads(n):
    if n is not None:
        import torch

        torch.set_num_threads(n)


if __name__ == "__main__":
    main()
