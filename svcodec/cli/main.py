"""`svc`: the command line. Thin: argument parsing, progress and tables; the work is in
svcodec.codec / svcodec.io / svcodec.container."""

from __future__ import annotations

import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import warnings

import click

# compressai's import trips a torch.jit deprecation warning that means nothing to a user.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

from ..errors import SvcError
from . import views

DEVICE = click.Choice(["cpu", "cuda"])


class _Cli(click.Group):
    """Turns every error into one line on stderr and a non-zero exit (SVC_DEBUG=1 shows
    the traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except SvcError as exc:
            self._fail(exc, 1)
        except KeyboardInterrupt:
            click.echo("svc: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence: no tracebacks for users
            self._fail(exc, 3, prefix="internal error: ")

    @staticmethod
    def _fail(exc, code, prefix=""):
        if os.environ.get("SVC_DEBUG"):
            raise exc
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"svc: error: {prefix}{msg}", err=True)
        sys.exit(code)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svcodec")
def main():
    """svcodec: a neural stereo video codec.

    \b
      svc encode left.mp4 right.mp4 -o clip.svc     compress a stereo pair of videos
      svc info clip.svc                             headers, GOPs and per-frame sizes
      svc decode clip.svc                           back to lossless stereo video
    """


@main.command()
@click.argument("left", type=click.Path())
@click.argument("right", type=click.Path(), required=False)
@click.option("-o", "--output", required=True, type=click.Path(), help="Output .svc file.")
@click.option("--sbs", is_flag=True, help="LEFT is one side-by-side video (left half | right half); no RIGHT.")
@click.option("--rate", type=float, default=2.0, show_default=True,
              help="Rate point 0 (smallest) .. 3 (best quality); fractions interpolate.")
@click.option("--gop", type=int, default=32, show_default=True, help="Access units per GOP (seek granularity).")
@click.option("--frames", type=int, default=None, help="Encode only the first N frame pairs.")
@click.option("--fps", default=None, help="Frame rate for image-folder input (e.g. 30 or 30000/1001).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--weights", default=None, help="Weights name in weights/ or a .safetensors path.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (output is identical for any value).")
@click.option("--json", "as_json", is_flag=True, help="Print the encode report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def encode(left, right, output, sbs, rate, gop, frames, fps, device, weights, threads, as_json, quiet):
    """Compress a stereo clip into an .svc file.

    LEFT and RIGHT are two videos (anything FFmpeg reads) or two folders of PNG/WebP/JPEG
    frames; with --sbs, LEFT alone is a side-by-side video. Frames are coded in RGB; YUV
    sources are converted with the matrix/range they declare (BT.601 limited if none).
    """
    from ..codec.session import encode_pairs
    from ..errors import InputError
    from ..io import open_stereo

    if sbs == (right is not None):
        raise click.UsageError("give LEFT and RIGHT, or one side-by-side input with --sbs")
    out = Path(output)
    for src in filter(None, (left, right)):
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise InputError(f"{output}: output would overwrite an input")
    if frames is not None and frames < 1:
        raise InputError("--frames must be at least 1")
    _threads(threads)
    source = open_stereo(left, right, side_by_side=sbs, **({"fps": fps} if fps else {}))
    with source:
        total = source.frame_count if frames is None else min(frames, source.frame_count or frames)
        with views.EncodeProgress(total, source.width, source.height, quiet or as_json) as prog:
            report = encode_pairs(
                source.frames(frames), out, width=source.width, height=source.height, fps=source.fps,
                rate=rate, gop=gop, grey=source.grey, device=device, weights=weights, on_frame=prog.update,
            )
    views.print_encode_report(report, as_json)


@main.command()
@click.argument("stream", type=click.Path())
@click.option("-o", "--output", default=None,
              help="Output path (default: next to STREAM). mkv: a stem giving STEM_left.mkv/STEM_right.mkv; "
                   "png: a folder with left/ and right/; sbs-*: one side-by-side file/folder.")
@click.option("-f", "--format", "fmt", type=click.Choice(["mkv", "png", "sbs-mkv", "sbs-png"]),
              default="mkv", show_default=True, help="Lossless output: FFV1 Matroska or PNG frames.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--weights", default=None, help="Override the weights named in the stream.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (output is identical for any value).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def decode(stream, output, fmt, device, weights, threads, quiet):
    """Decode an .svc file back to stereo frames (lossless containers of the reconstruction).

    Every frame is checked against the encoder's reconstruction checksum: a corrupt stream
    stops with an error instead of producing garbage, and no partial output is left behind.
    """
    from ..codec.session import iter_decode, open_stream
    from ..container import Colour
    from ..io import StereoWriter, default_output_name, output_paths

    _threads(threads)
    reader, codec = open_stream(stream, weights=weights, device=device)
    seq = reader.sequence
    output = output or default_output_name(stream, fmt)
    fps = Fraction(seq.fps_num, seq.fps_den)
    with views.DecodeProgress(seq.frame_count, quiet) as prog, StereoWriter(
        output, fmt=fmt, width=seq.width, height=seq.height, fps=fps, grey=seq.colour == Colour.GREY
    ) as writer:
        for _, left, right in iter_decode(stream, device=device, codec=codec):
            writer.write(left, right)
            prog.advance()
    if not quiet:
        click.echo(f"decoded {seq.frame_count} frame pairs -> {', '.join(output_paths(output, fmt))}")


@main.command()
@click.argument("stream", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--frames/--no-frames", "per_frame", default=True, show_default=True,
              help="List every access unit.")
def info(stream, as_json, per_frame):
    """Show an .svc file's headers, GOPs and per-frame sizes per view."""
    from ..container import SvcReader

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


def _threads(n):
    if n is not None:
        import torch

        if n < 1:
            raise click.BadParameter("--threads must be at least 1")
        torch.set_num_threads(n)


def _mount_bench():
    try:
        from ..bench.run import bench_command
    except ImportError:  # the benchmark needs matplotlib etc.; the codec does not
        return
    main.add_command(bench_command, name="bench")


_mount_bench()

if __name__ == "__main__":
    main()
