"""Stereo input: two videos, one side-by-side video, or two folders of images.

Every frame handed to the codec is an (H, W, 3) uint8 RGB array, full range.

Colour convention (verified against PyAV 18 / FFmpeg 8):

* YUV video is converted with ``frame.to_ndarray(format="rgb24")``, which takes
  both the matrix (BT.601, BT.709, BT.2020, ...) and the range (limited/full)
  from the frame's metadata. When the stream leaves them unspecified, FFmpeg
  uses **BT.601, limited range**; so do we. ``yuvj*`` formats are full range.
* RGB video (``bgr0``, ``gbrp``, ``rgb24``, ...) is copied, no matrix applied.
* Grey video (``gray``, ``gray10le``, ``ya8``, ...) is taken as full range
  luma (FFmpeg's default for grey), scaled to 8 bits and repeated into three
  identical channels; ``StereoSource.grey`` is then True.
* Images are decoded by Pillow: JPEG via its JFIF (full range BT.601) rule,
  16-bit images keep their top 8 bits, alpha is dropped.
* Frames are turned upright as a player shows them (``orientation.py``): a video's display
  matrix, an image's EXIF orientation; ``autorotate=False`` keeps them as stored.

All problems with the input raise ``InputError`` with one line that names the
file; exceptions from PyAV and Pillow never escape unwrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
from PIL import Image

from svcodec.errors import InputError
from svcodec.io.orientation import EXIF_ORIENTATION_TAG, Orientation, from_display_matrix, from_exif

IMAGE_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg")
DEFAULT_IMAGE_FPS = Fraction(30)
# 30000/1001 and 29.97 differ by 1e-6 relative; 30 vs 29.97 (1e-3) is a real mismatch.
_RATE_TOLERANCE = 1e-4
_GREY_PIX_PREFIXES = ("gray", "ya", "mono")
_GREY_IMAGE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
# FFmpeg renders text and text-mode art as video (640x400 for a .txt file): not footage.
_TEXT_DEMUXERS = {"tty", "bin", "xbin", "idf", "adf"}
_TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}


def _reason(exc: BaseException) -> str:
    """The library's message without errno noise or line breaks."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _fps_text(fps: Fraction) -> str:
    return str(fps.numerator) if fps.denominator == 1 else f"{float(fps):.3f}"


def _is_grey_pix_fmt(name: str) -> bool:
    return name.startswith(_GREY_PIX_PREFIXES)


def _video_frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    if _is_grey_pix_fmt(frame.format.name):
        grey = frame.to_ndarray(format="gray")
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def _display_matrix(frame: av.VideoFrame):
    try:
        side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        matrix = None if side is None else np.frombuffer(bytes(side), dtype="=i4")
    except (AttributeError, KeyError, TypeError, ValueError):  # a PyAV without it, a short blob
        return None
    return matrix if matrix is not None and matrix.size == 9 else None


def _image_orientation(im: Image.Image) -> Orientation:
    if im.format == "PNG" and "exif" not in im.info:
        # Pillow would decode the whole image to look for an eXIf chunk after the pixel data
        # (allowed before PNG 3): that would make checking a folder a full decode. Such a late
        # chunk is ignored here, and so in decoding too: the two always agree.
        return Orientation()
    try:
        return from_exif(im.getexif().get(EXIF_ORIENTATION_TAG))
    except Exception:  # a damaged EXIF block: the pixels are still fine, keep them as stored
        return Orientation()


def _image_to_rgb(path: str, autorotate: bool = True) -> np.ndarray:
    try:
        with Image.open(path) as im:
            orientation = _image_orientation(im) if autorotate else Orientation()
            if im.mode.startswith("I"):
                # convert("L") clips 16-bit samples instead of scaling them.
                grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            elif im.mode in _GREY_IMAGE_MODES:
                grey = np.asarray(im.convert("L"))
            else:
                return orientation.apply(np.asarray(im.convert("RGB")).copy())
    except Exception as e:  # Pillow raises many unrelated types for bad files
        raise InputError(f"{path}: cannot read image ({_reason(e)})") from e
    return orientation.apply(np.repeat(grey[:, :, None], 3, axis=2))


@dataclass
class _View:
    """One input (a video file or an image folder) that can be streamed repeatedly."""

    path: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    grey: bool
    description: str
    images: list[str] | None = None  # set for image folders
    notices: list[str] = field(default_factory=list)  # accepted, but the user should know
    orientation: Orientation = Orientation()  # videos: the first frame's, for the whole stream
    autorotate: bool = True  # images: each turned upright by its own EXIF orientation
    sample_aspect: tuple[int, int] | None = None  # non-square pixels (width : height), as coded

    def frames(self) -> Iterator[np.ndarray]:
        if self.images is not None:
            for image in self.images:
                yield _image_to_rgb(image, self.autorotate)
            return
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield self.orientation.apply(_video_frame_to_rgb(frame))
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"{self.path}: decoding failed ({_reason(e)})") from e
        finally:
            container.close()


def _open_container(path: str):
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{path}: cannot be read as a video ({_reason(e)})") from e
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: contains no video stream")
    return container


def _bits_per_sample(fmt) -> int:
    try:
        return max(c.bits for c in fmt.components)
    except (AttributeError, ValueError):
        return 8


MAX_ASPECT_TERM = 0xFFFF  # the container stores each term of a sample aspect ratio as u16


def sample_aspect_of(sar, orientation: Orientation) -> tuple[int, int] | None:
    """A stream's sample aspect ratio as (num, den) of the frames as coded (a quarter turn swaps
    a pixel's width and height); None for square, unknown or unusable values (0:1, 0:0)."""
    try:
        sar = Fraction(sar) if sar is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if sar is None or sar <= 0 or sar == 1:
        return None
    sar = sar.limit_denominator(MAX_ASPECT_TERM)
    if orientation.transpose:
        sar = 1 / sar
    if sar.numerator > MAX_ASPECT_TERM or sar == 1:  # too extreme, or square once limited
        return None
    return sar.numerator, sar.denominator


VFR_PROBE_PACKETS = 300  # timestamps looked at for a variable frame rate: ~10 s at 30 fps, demuxed only
VFR_TOLERANCE = 0.1  # an interval this far (and over one tick) from the typical one is not constant-rate


def variable_rate_intervals(path: str) -> tuple[float, float] | None:
    """(shortest, longest) frame interval in seconds among the first packets' timestamps when
    they are not evenly spaced (variable frame rate: phones, screen captures); None when they
    are, or cannot be told."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            tb, pts = stream.time_base, []
            for packet in container.demux(stream):
                if packet.pts is not None:
                    pts.append(packet.pts)
                if len(pts) >= VFR_PROBE_PACKETS:
                    break
    except (av.FFmpegError, OSError, IndexError):
        return None  # probing already read the file; a stream this odd is judged by decoding
    pts.sort()  # presentation order (packets come in decoding order)
    steps = [b - a for a, b in zip(pts, pts[1:]) if b > a]
    if len(steps) < 2 or tb is None:
        return None
    typical = float(np.median(steps))
    if all(abs(d - typical) <= max(1, VFR_TOLERANCE * typical) for d in steps):
        return None
    return float(min(steps) * tb), float(max(steps) * tb)


def _probe_video(path: str, autorotate: bool = True) -> _View:
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        if container.format.name in _TEXT_DEMUXERS or stream.codec_context.name in _TEXT_CODECS:
            raise InputError(f"{path}: not a video (FFmpeg reads it as text, {container.format.name})")
        has_audio = bool(container.streams.audio)
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        # Decode one frame: headers can claim a size/format the data does not have,
        # and a stream can exist yet hold no frames.
        first = next(container.decode(stream), None)
        codec = stream.codec_context.name
        frame_count = stream.frames if stream.frames > 0 else None
        # the container's value (e.g. MP4 pasp, Matroska display size) wins over the codec's, as in ffmpeg
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{path}: decoding failed ({_reason(e)})") from e
    finally:
        container.close()
    if first is None:
        raise InputError(f"{path}: video stream has no frames")
    if not fps or fps <= 0:
        raise InputError(f"{path}: video stream has no frame rate")
    notices = []
    bits = _bits_per_sample(first.format)
    if bits > 8:
        notices.append(f"{path}: {bits} bits per sample ({first.format.name}), coded as 8-bit RGB")
    if has_audio:
        notices.append(f"{path}: has audio; svc codes the video only")
    vfr = variable_rate_intervals(path)
    if vfr is not None:
        notices.append(f"{path}: variable frame rate (frames {1000 * vfr[0]:.1f} to {1000 * vfr[1]:.1f} ms apart); "
                       f"coded at its average {_fps_text(Fraction(fps))} fps, every frame as long: "
                       f"the timestamps are not kept")
    orientation, matrix = Orientation(), _display_matrix(first)
    if matrix is not None and autorotate:
        turned = from_display_matrix(matrix)
        if turned is None:
            notices.append(f"{path}: its display matrix is not a quarter turn or a mirror; "
                           f"coded as stored")
        elif not turned.identity:
            orientation = turned
            w, h = turned.size(first.width, first.height)
            notices.append(f"{path}: {turned.describe()} as its display matrix asks (as players "
                           f"and ffmpeg show it), coded as {w}x{h}; --no-autorotate keeps it as stored")
    width, height = orientation.size(first.width, first.height)
    sample_aspect = sample_aspect_of(sar, orientation)
    if sample_aspect is not None:
        notices.append(f"{path}: pixels are not square (sample aspect ratio {sample_aspect[0]}:{sample_aspect[1]}); "
                       f"coded as stored, {width}x{height}, and the stream keeps the ratio for players")
    return _View(
        path=path,
        width=width,
        height=height,
        orientation=orientation,
        sample_aspect=sample_aspect,
        fps=Fraction(fps),
        frame_count=frame_count,
        grey=_is_grey_pix_fmt(first.format.name),
        description=f"{os.path.basename(path)} ({codec}, {first.format.name})",
        notices=notices,
    )


def _probe_folder(path: str, fps: Fraction, autorotate: bool = True) -> _View:
    try:
        names = sorted(
            n for n in os.listdir(path)
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
        )
    except OSError as e:
        raise InputError(f"{path}: cannot list folder ({_reason(e)})") from e
    if not names:
        raise InputError(f"{path}: folder contains no PNG, WebP or JPEG images")
    images = [os.path.join(path, n) for n in names]
    size, grey, turned = None, True, []
    # Headers only (Pillow opens lazily), so checking every file up front is cheap
    # and reports a bad folder before any encoding starts.
    for image in images:
        try:
            with Image.open(image) as im:
                orientation = _image_orientation(im) if autorotate else Orientation()
                this_size, mode = orientation.size(*im.size), im.mode
        except Exception as e:
            raise InputError(f"{image}: cannot read image ({_reason(e)})") from e
        if not orientation.identity:
            turned.append((image, orientation))
        if size is None:
            size = this_size
        elif this_size != size:
            raise InputError(
                f"{image}: image is {this_size[0]}x{this_size[1]} (upright) but {names[0]} "
                f"in the same folder is {size[0]}x{size[1]}"
            )
        grey = grey and mode in _GREY_IMAGE_MODES
    notices = []
    if turned:
        image, orientation = turned[0]
        notices.append(f"{path}: {len(turned)} of {len(images)} images turned upright as their EXIF "
                       f"orientation asks (e.g. {os.path.basename(image)}: {orientation.describe()}); "
                       f"--no-autorotate keeps them as stored")
    return _View(
        path=path,
        width=size[0],
        height=size[1],
        fps=fps,
        frame_count=len(images),
        grey=grey,
        description=f"{os.path.basename(os.path.normpath(path))}/ ({len(images)} images)",
        images=images,
        notices=notices,
        autorotate=autorotate,
    )


def _open_view(path: str, fps: Fraction, autorotate: bool) -> _View:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        return _probe_folder(path, fps, autorotate)
    return _probe_video(path, autorotate)


@dataclass
class StereoSource:
    """A streaming stereo input. ``frames()`` may be called more than once (each call
    reopens the inputs); ``close()`` ends any iteration still open."""

    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    grey: bool
    description: str
    _left: _View = field(repr=False)
    _right: _View | None = field(repr=False)  # None: _left is side-by-side
    _open: list = field(default_factory=list, repr=False)
    notices: list[str] = field(default_factory=list)  # one line each: input accepted with a caveat
    sample_aspect: tuple[int, int] | None = None  # non-square pixels: (width : height) of one pixel

    def frames(self, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        left = self._left.frames()
        right = self._right.frames() if self._right is not None else None
        streams = [g for g in (left, right) if g is not None]
        self._open.extend(streams)
        w, h = self.width, self.height
        try:
            n = 0
            while max_frames is None or n < max_frames:
                a = next(left, None)
                if right is None:
                    if a is None:
                        return
                    self._check_size(self._left, a, n, 2 * w, h)
                    a, b = np.ascontiguousarray(a[:, :w]), np.ascontiguousarray(a[:, w:])
                else:
                    b = next(right, None)
                    if a is None and b is None:
                        return
                    if a is None or b is None:
                        short, other = (self._left, self._right) if a is None else (self._right, self._left)
                        raise InputError(
                            f"{short.path}: ended after {n} frames but {other.path} has more"
                        )
                    self._check_size(self._left, a, n, w, h)
                    self._check_size(self._right, b, n, w, h)
                yield a, b
                n += 1
        finally:
            for g in streams:
                g.close()
                if g in self._open:
                    self._open.remove(g)

    @staticmethod
    def _check_size(view: _View, frame: np.ndarray, index: int, w: int, h: int) -> None:
        if frame.shape[:2] != (h, w):
            raise InputError(
                f"{view.path}: frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                f"expected {w}x{h} like the first frame"
            )

    def close(self) -> None:
        while self._open:
            self._open.pop().close()

    def __enter__(self) -> "StereoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse_fps(fps) -> Fraction:
    try:
        # str() first so 29.97 becomes 2997/100, not the nearest binary fraction.
        value = Fraction(str(fps))
    except (ValueError, ZeroDivisionError) as e:
        raise InputError(f"frame rate {fps!r} is not a number") from e
    if value <= 0:
        raise InputError(f"frame rate {fps!r} must be positive")
    return value


def open_stereo(
    left: str,
    right: str | None = None,
    *,
    side_by_side: bool = False,
    fps: Fraction | float | str | None = None,
    max_frames: int | None = None,
    autorotate: bool = True,
) -> StereoSource:
    """Open a stereo input and check that both views agree.

    ``left``/``right`` are each a video file or a folder of images (sorted by
    file name). With ``side_by_side=True`` only ``left`` is given and each frame
    is split into a left half and a right half. ``fps`` sets the frame rate of
    image folders (default 30); video files carry their own. ``max_frames``: only the first
    frames will be used, so views that differ in length only after them are accepted (as they
    are when the container does not know its frame count and the views are streamed).
    ``autorotate``: turn frames upright as a player shows them (a video's display matrix, an
    image's EXIF orientation), like ffmpeg; False codes them as stored.
    """
    if side_by_side and right is not None:
        raise InputError(f"{right}: a side-by-side input takes a single file, not a right view")
    if not side_by_side and right is None:
        raise InputError(f"{left}: no right view given (pass a right input or use side-by-side)")
    image_fps = DEFAULT_IMAGE_FPS if fps is None else _parse_fps(fps)
    lv = _open_view(os.fspath(left), image_fps, autorotate)

    if side_by_side:
        if lv.width % 2:
            raise InputError(f"{lv.path}: side-by-side width {lv.width} is odd, cannot split in halves")
        width, rv, desc = lv.width // 2, None, f"{lv.description} side-by-side"
    else:
        rv = _open_view(os.fspath(right), image_fps, autorotate)
        if (lv.width, lv.height) != (rv.width, rv.height):
            raise InputError(
                f"{rv.path}: right view is {rv.width}x{rv.height} but left view "
                f"{lv.path} is {lv.width}x{lv.height}"
            )
        if abs(lv.fps - rv.fps) > _RATE_TOLERANCE * lv.fps:
            raise InputError(
                f"{rv.path}: right view runs at {_fps_text(rv.fps)} fps but left view "
                f"{lv.path} runs at {_fps_text(lv.fps)} fps"
            )
        counts = [c if max_frames is None or c is None else min(c, max_frames) for c in (lv.frame_count, rv.frame_count)]
        if None not in counts and counts[0] != counts[1]:
            raise InputError(
                f"{rv.path}: right view has {rv.frame_count} frames but left view "
                f"{lv.path} has {lv.frame_count}"
            )
        width, desc = lv.width, f"{lv.description} + {rv.description}"

    # Report a count only when every view knows it; otherwise the codec counts as it streams.
    frame_count = lv.frame_count if rv is None or rv.frame_count is not None else None
    notices = [n for v in (lv, rv) if v is not None for n in v.notices]
    videos = [v.path for v in (lv, rv) if v is not None and v.images is None]
    if fps is not None and videos:
        notices.append(f"--fps {fps} applies to image folders only; {videos[0]} keeps its own "
                       f"{_fps_text(lv.fps)} fps")
    count_text = f"{frame_count} frames" if frame_count is not None else "frame count unknown"
    sample_aspect = lv.sample_aspect
    if rv is not None and rv.sample_aspect != lv.sample_aspect:
        shape = lambda v: "square" if v.sample_aspect is None else "%d:%d" % v.sample_aspect  # noqa: E731
        notices.append(f"{rv.path}: its pixels ({shape(rv)}) differ from the left view's ({shape(lv)}); "
                       f"the stream keeps the left view's")
    return StereoSource(
        width=width,
        height=lv.height,
        fps=lv.fps,
        frame_count=frame_count,
        grey=lv.grey and (rv is None or rv.grey),
        description=f"{desc}: {width}x{lv.height}, {_fps_text(lv.fps)} fps, {count_text}",
        _left=lv,
        _right=rv,
        notices=notices,
        sample_aspect=sample_aspect,
    )
