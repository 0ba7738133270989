"""Stereo output: lossless FFV1/Matroska video or PNG frames, two views or side-by-side.

Output naming (``output_paths`` gives the exact paths for any format):

========  ===========================================  ==============================
fmt       ``output`` is                                written
========  ===========================================  ==============================
mkv       a path stem (a trailing ``.mkv`` is dropped)  ``<stem>_left.mkv``, ``<stem>_right.mkv``
sbs-mkv   a file name (``.mkv`` added if missing)       ``<stem>.mkv``, 2W x H
png       a folder                                      ``<folder>/left/000000.png``, ``<folder>/right/...``
sbs-png   a folder                                      ``<folder>/000000.png``, ..., 2W x H
========  ===========================================  ==============================

FFV1 stores colour as ``bgr0`` (grey as ``gray``), so RGB frames read back bit-exactly;
PNGs are RGB (grey: mode "L"). Output is written under hidden temporary names in the
destination folder and renamed into place only by a successful ``close()``; on an
exception the temporaries are removed and existing output is left untouched. An
existing output folder is replaced only when it holds nothing but frames in the
layout above (a previous run's output), so a user's folder is never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from fractions import Fraction

import av
import numpy as np
from PIL import Image

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
        return [f"{stem}_left.mkv", f"{stem}_right.mkv"]
    if fmt == "sbs-mkv":
        return [_strip_mkv(output) + ".mkv"]
    if fmt in ("png", "sbs-png"):
        return [output.rstrip("/\\") or output]
    raise InputError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")


def default_output_name(svc_path: str, fmt: str) -> str:
    """The ``output`` argument to use when the user names none: next to the .svc file.

    clip.svc -> mkv: ``clip`` (clip_left.mkv, clip_right.mkv); sbs-mkv: ``clip_sbs.mkv``;
    png: ``clip_png/``; sbs-png: ``clip_sbs_png/``.
    """
    stem = os.path.splitext(os.fspath(svc_path))[0]
    names = {"mkv": stem, "sbs-mkv": f"{stem}_sbs.mkv", "png": f"{stem}_png", "sbs-png": f"{stem}_sbs_png"}
    if fmt not in names:
        raise InputError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    return names[fmt]


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

    def __init__(self, output: str, *, fmt: str, width: int, height: int, fps: Fraction, grey: bool = False):
        self.paths = output_paths(output, fmt)
        self.fmt, self.width, self.height, self.grey = fmt, width, height, grey
        self._sbs = fmt.startswith("sbs-")
        self._temps: list[tuple[str, str]] = []  # (temporary, final), renamed in order
        self._sinks: list = []
        self._closed = False
        fps = Fraction(str(fps))  # str(): 29.97 -> 2997/100, not a binary fraction
        sink_width = 2 * width if self._sbs else width
        try:
            if fmt.endswith("mkv"):
                for final in self.paths:
                    if os.path.isdir(final):
                        raise InputError(f"{final}: is a folder, cannot write a video file there")
                    tmp = self._temp(final, lambda d, p: tempfile.mkstemp(".mkv", p, d))
                    self._sinks.append(_Ffv1Sink(tmp, sink_width, height, fps, grey))
            else:
                final = self.paths[0]
                subdirs = () if self._sbs else ("left", "right")
                if os.path.exists(final) and not (os.path.isdir(final) and _is_previous_output(final, subdirs)):
                    raise InputError(
                        f"{final}: already exists and is not a previous {fmt} output; "
                        "remove it or choose another output name"
                    )
                tmp = self._temp(final, lambda d, p: tempfile.mkdtemp(".tmp", p, d))
                self._sinks = [_PngSink(os.path.join(tmp, s)) for s in subdirs or ("",)]
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise InputError(f"{self.paths[0]}: cannot create output ({_reason(e)})") from e
        except BaseException:
            self.abort()
            raise

    def _temp(self, final: str, make) -> str:
        parent = os.path.dirname(os.path.abspath(final))
        if not os.path.isdir(parent):
            raise InputError(f"{final}: output folder {parent} does not exist")
        made = make(parent, f".{os.path.basename(final)}.")
        if isinstance(made, tuple):  # mkstemp gives (fd, path)
            os.close(made[0])
            made = made[1]
        # mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual umask modes
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(made, (0o777 if os.path.isdir(made) else 0o666) & ~umask)
        self._temps.append((made, final))
        return made

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
            for tmp, final in self._temps:
                _replace(tmp, final)
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
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.exists(tmp):
                os.remove(tmp)
        self._temps.clear()

    def __enter__(self) -> "StereoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _replace(tmp: str, final: str) -> None:
    if os.path.isdir(tmp) and os.path.isdir(final):
        # A non-empty folder cannot be renamed over: move the old one aside first.
        old = tempfile.mkdtemp(".old", f".{os.path.basename(final)}.", os.path.dirname(os.path.abspath(final)))
        aside = os.path.join(old, "previous")
        os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(aside, final)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
