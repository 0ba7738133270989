"""Stereo output: lossless FFV1/Matroska video or PNG frames, two views or side-by-side.

Output naming (``output_paths`` gives the exact paths for any format):

========  ===========================================  ==============================
fmt       ``output`` is                                written
========  ===========================================  ==============================
mkv       a path stem (a trailing ``.mkv`` is dropped)  ``<stem>.left.mkv``, ``<stem>.right.mkv``
sbs-mkv   a file name (``.mkv`` added if missing)       ``<stem>.mkv``, 2W x H
png       a folder                                      ``<folder>/left/000000.png``, ``<folder>/right/...``
sbs-png   a folder                                      ``<folder>/000000.png``, ..., 2W x H
========  ===========================================  ==============================

FFV1 stores colour as ``bgr0`` (grey as ``gray``), so RGB frames read back bit-exactly;
PNGs are RGB (grey: mode "L"). Output is written under hidden temporary names in the
destination folder (svcodec.fsutil) and renamed into place only by a successful
``close()``, all outputs together; on an exception (signals included) the temporaries
are removed and existing files are left untouched. An existing output is replaced only
with ``overwrite=True``, and an existing folder only when it holds nothing but frames in
the layout above (a previous run's output), so a user's folder is never deleted.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from svcodec import fsutil
from svcodec.errors import InputError
from svcodec.io.readers import _reason

FORMATS = ("mkv", "png", "sbs-mkv", "sbs-png")
_FRAME_NAME = re.compile(r"\d{6,}\.png")


def _strip_mkv(path: str) -> str:
    return path[:-4] if path.lower().endswith(".mkv") else path


def output_paths(output: str, fmt: str) -> list[str]:
    """The final paths a StereoWriter with these arguments creates."""
    output = os.fspath(output)
    if fmt == "mkv":
        stem = _strip_mkv(output)
        return [f"{stem}.left.mkv", f"{stem}.right.mkv"]
    if fmt == "sbs-mkv":
        return [_strip_mkv(output) + ".mkv"]
    if fmt in ("png", "sbs-png"):
        return [output.rstrip("/\\") or output]
    raise InputError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")


def default_output_name(svc_path: str, fmt: str) -> str:
    """The ``output`` argument to use when the user names none: next to the .svc file.

    clip.svc -> mkv: ``clip`` (clip.left.mkv, clip.right.mkv); sbs-mkv: ``clip.sbs.mkv``;
    png: ``clip.frames/``; sbs-png: ``clip.sbs-frames/``. Only a ``.svc`` extension is
    dropped (``clip.mkv`` gives ``clip.mkv.left.mkv``...), so a default name always
    differs from the stream's own name, and the dotted suffixes keep clear of the
    ``NAME_left.mkv`` style of source videos.
    """
    path = os.fspath(svc_path)
    stem = path[:-4] if path.lower().endswith(".svc") and len(os.path.basename(path)) > 4 else path
    names = {"mkv": stem, "sbs-mkv": f"{stem}.sbs.mkv", "png": f"{stem}.frames", "sbs-png": f"{stem}.sbs-frames"}
    if fmt not in names:
        raise InputError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    return names[fmt]


def check_outputs(paths, fmt: str, inputs, overwrite: bool | None) -> None:
    """Refuse before any work starts: an output that is an input (always), an existing output
    (unless ``overwrite``), a folder where a video goes, a user's folder where frames go."""
    for final in paths:
        if fmt.endswith("mkv") and os.path.isdir(final):
            raise InputError(f"{final}: is a folder, cannot write a video file there")
        if fmt.endswith("png") and os.path.lexists(final) and not _replaceable_folder(final, fmt):
            raise InputError(f"{final}: already exists and is not a previous {fmt} output; "
                             "remove it or choose another output name")
        fsutil.check_output(final, inputs, overwrite)
        parent = os.path.dirname(os.path.abspath(final))
        if not os.path.isdir(parent):
            raise InputError(f"{final}: output folder {parent} does not exist")


def _replaceable_folder(final: str, fmt: str) -> bool:
    subdirs = () if fmt.startswith("sbs-") else ("left", "right")
    return os.path.isdir(final) and not os.path.islink(final) and _is_previous_output(final, subdirs)


def _is_previous_output(folder: str, subdirs: tuple[str, ...]) -> bool:
    try:
        if subdirs:
            entries = os.listdir(folder)
            return set(entries) <= set(subdirs) and all(
                _is_previous_output(os.path.join(folder, d), ()) for d in entries
            )
        return all(_FRAME_NAME.fullmatch(n) and os.path.isfile(os.path.join(folder, n))
                   for n in os.listdir(folder))
    except OSError:
        return False


def _to_grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    # Mean of the channels: exact when they are identical, sensible when they are not.
    return ((arr.astype(np.uint16).sum(axis=2) + 1) // 3).astype(np.uint8)


class _Ffv1Sink:
    def __init__(self, path: str, width: int, height: int, fps: Fraction, grey: bool):
        self.grey = grey
        self.container = av.open(path, "w", format="matroska")
        self.stream = self.container.add_stream("ffv1", rate=fps)
        self.stream.width, self.stream.height = width, height
        # FFV1 has no 8-bit gbrp; bgr0 is its lossless packed RGB.
        self.stream.pix_fmt = "gray" if grey else "bgr0"
        self.time_base = 1 / Fraction(fps)
        self.count = 0

    def write(self, arr: np.ndarray) -> None:
        if self.grey:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="gray")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24").reformat(format="bgr0")
        frame.pts, frame.time_base = self.count, self.time_base
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass  # the temporary file is deleted next anyway


class _PngSink:
    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.count = folder, 0

    def write(self, arr: np.ndarray) -> None:
        # Level 1: decoded video is large and zlib effort buys little on natural images.
        Image.fromarray(arr).save(os.path.join(self.folder, f"{self.count:06d}.png"), compress_level=1)
        self.count += 1

    def close(self) -> None:
        pass

    abort = close


class StereoWriter:
    """Write decoded stereo frames; use as a context manager (see module docstring)."""

    def __init__(self, output: str, *, fmt: str, width: int, height: int, fps: Fraction, grey: bool = False,
                 overwrite: bool = False):
        self.paths = output_paths(output, fmt)
        self.fmt, self.width, self.height, self.grey = fmt, width, height, grey
        self.overwrite = overwrite
        self._sbs = fmt.startswith("sbs-")
        self._temps: list[tuple[str, str]] = []  # (temporary, final), renamed in order
        self._sinks: list = []
        self._closed = False
        fps = Fraction(str(fps))  # str(): 29.97 -> 2997/100, not a binary fraction
        sink_width = 2 * width if self._sbs else width
        try:
            check_outputs(self.paths, fmt, (), overwrite or None)
            if fmt.endswith("mkv"):
                for final in self.paths:
                    tmp = self._temp(final, fsutil.create_temp_file)
                    self._sinks.append(_Ffv1Sink(tmp, sink_width, height, fps, grey))
            else:
                tmp = self._temp(self.paths[0], fsutil.create_temp_dir)
                self._sinks = [_PngSink(os.path.join(tmp, s)) for s in (("",) if self._sbs else ("left", "right"))]
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise InputError(f"{self.paths[0]}: cannot create output ({_reason(e)})") from e
        except BaseException:
            self.abort()
            raise

    def _temp(self, final: str, make) -> str:
        # Registered with fsutil before it exists, so even a signal right here cannot orphan it.
        made = make(final)
        self._temps.append((made, final))
        # the temporary was created with the umask's modes already (0666 / 0777 & ~umask)
        return made

    def _refuse_folder(self, final: str) -> bool:
        # re-checked at the end: a folder that became a user's folder meanwhile is kept
        return self.fmt.endswith("png") and os.path.lexists(final) and not _replaceable_folder(final, self.fmt)

    def write(self, left: np.ndarray, right: np.ndarray) -> None:
        if self._closed:
            raise ValueError("StereoWriter.write() after close()")
        shapes = [(self.height, self.width, 3)] + ([(self.height, self.width)] if self.grey else [])
        for name, arr in (("left", left), ("right", right)):
            if arr.dtype != np.uint8 or arr.shape not in shapes:
                raise ValueError(f"{name} frame must be uint8 of shape {shapes[0]}, got {arr.dtype} {arr.shape}")
        if self.grey:
            left, right = _to_grey(left), _to_grey(right)
        views = [np.concatenate([left, right], axis=1)] if self._sbs else [left, right]
        try:
            for sink, arr in zip(self._sinks, views):
                sink.write(arr)
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"{self.paths[0]}: writing failed ({_reason(e)})") from e

    def close(self) -> None:
        """Finish the files and move them to their final names."""
        if self._closed:
            return
        try:
            for sink in self._sinks:
                sink.close()
            with fsutil.signals_deferred():  # both views appear, or neither
                published = []
                try:
                    for tmp, final in self._temps:
                        fsutil.publish(tmp, final, self.overwrite and not self._refuse_folder(final))
                        published.append(final)
                except BaseException:
                    for final in published:  # the views of one decode only exist together
                        fsutil.discard(final)
                    raise
        except BaseException as e:
            self.abort()
            if isinstance(e, (av.FFmpegError, OSError)):
                raise InputError(f"{self.paths[0]}: finishing output failed ({_reason(e)})") from e
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; existing output stays as it was."""
        self._closed = True
        for sink in self._sinks:
            sink.abort()
        for tmp, _ in self._temps:
            fsutil.discard(tmp)
        self._temps.clear()

    def __enter__(self) -> "StereoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
