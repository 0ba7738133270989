"""Display orientation of input frames: the rotation/mirroring a player applies before showing them.

Phones and many cameras store frames as the sensor read them and say how to turn them upright:
videos with a display matrix (MP4/MOV ``tkhd``, carried by FFmpeg as frame side data), images
with the EXIF Orientation tag. Players, ffmpeg (``-autorotate``, on by default) and image viewers
apply it. svcodec does the same, so that what it codes and decodes is the picture the user sees;
the decoded output then needs no orientation metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXIF_ORIENTATION_TAG = 0x0112
_ONE = 1 << 16  # the display matrix's a, b, c, d are 16.16 fixed point


@dataclass(frozen=True)
class Orientation:
    """Stored (H, W, C) pixels -> displayed ones: an optional transpose, then flips of the result."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Displayed (width, height) of a stored width x height frame."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        if self.identity:
            return frame
        out = frame.transpose(1, 0, 2) if self.transpose else frame
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def describe(self) -> str:
        """'rotated 90 degrees clockwise', 'mirrored left-right', ..."""
        return _DESCRIPTIONS[self]


def from_display_matrix(matrix) -> Orientation | None:
    """The orientation of an FFmpeg display matrix (9 int32: a b u / c d v / x y w, which maps
    a stored pixel (x, y) to x' = a x + c y, y' = b x + d y), or None when it is not a multiple
    of 90 degrees with optional mirroring (kept as stored: nothing sensible to do with it)."""
    a, b, _, c, d = (int(v) for v in matrix[:5])
    entries = [a, b, c, d]
    if any(v not in (-_ONE, 0, _ONE) for v in entries):
        return None
    if a == 0 and d == 0 and b != 0 and c != 0:  # x' depends on y: a transpose
        # displayed (row, col) = (b x, c y), negative meaning from the far end
        return Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    if b == 0 and c == 0 and a != 0 and d != 0:
        return Orientation(flip_rows=d < 0, flip_cols=a < 0)
    return None


# EXIF Orientation 1..8 (TIFF 6.0): where the stored first row and column belong when displayed
_EXIF = {
    1: Orientation(),
    2: Orientation(flip_cols=True),
    3: Orientation(flip_rows=True, flip_cols=True),
    4: Orientation(flip_rows=True),
    5: Orientation(transpose=True),
    6: Orientation(transpose=True, flip_cols=True),
    7: Orientation(transpose=True, flip_rows=True, flip_cols=True),
    8: Orientation(transpose=True, flip_rows=True),
}


# each of the eight, in words (a mirror named first is applied first)
_DESCRIPTIONS = {
    Orientation(): "",
    Orientation(flip_cols=True): "mirrored left-right",
    Orientation(flip_rows=True, flip_cols=True): "rotated 180 degrees",
    Orientation(flip_rows=True): "mirrored top-bottom",
    Orientation(transpose=True): "mirrored left-right and rotated 90 degrees counter-clockwise",
    Orientation(transpose=True, flip_cols=True): "rotated 90 degrees clockwise",
    Orientation(transpose=True, flip_rows=True, flip_cols=True): "mirrored left-right and rotated 90 degrees clockwise",
    Orientation(transpose=True, flip_rows=True): "rotated 90 degrees counter-clockwise",
}


def from_exif(tag) -> Orientation:
    """The orientation of an EXIF Orientation value; a missing or invalid one is upright."""
    return _EXIF.get(tag if isinstance(tag, int) else 1, Orientation())
