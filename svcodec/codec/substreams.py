"""Which substream each run of symbols of an access unit goes to (docs/CODING.md).

An access unit's symbols come in runs: per coder (texture; motion for P-frames) and view, the
hyper-latent (slot 0) and then the latent slices 1..S, interleaved across the views in the
paper's order (L1, R1, L2, R2, ...). Range coding is first-in first-out, so all runs of one view
and coder can share one range-coder stream as long as both sides visit them in the same order:

- format 2.x (written): one substream per (view, coder), kinds TEXTURE and MOTION. One flush
  and one table entry per view and coder instead of one per slice: 80-90 bytes less per stereo
  P-frame, 7 % of a 480x272 P-frame at rate 0.
- format 1.x (read only): one substream per hyper-latent and per slice, kinds *_HYPER and
  *_LATENT.

Encoder and decoder address runs the same way, `streams(view, coder, slot)`, so the codec's
slice loops do not know which layout they are writing or reading.
"""

from __future__ import annotations

from ..container import FrameType, Substream, SubstreamKind
from ..container.format import LAYOUT_OF_MAJOR_2
from ..entropy import SubstreamDecoder, SubstreamEncoder
from ..errors import BitstreamError, ModelError

TEXTURE, MOTION = SubstreamKind.TEXTURE, SubstreamKind.MOTION
VIEWS = (0, 1)
_SPLIT_KINDS = {TEXTURE: (SubstreamKind.TEXTURE_HYPER, SubstreamKind.TEXTURE_LATENT),
                MOTION: (SubstreamKind.MOTION_HYPER, SubstreamKind.MOTION_LATENT)}


# P-frame latent positions whose scale index is at most this are not coded: the decoder sees the
# same index and takes the mean. Format 2.x: index <= 4 (sigma <= 0.165, P(0) >= 0.997), which
# measured -3.3 % bits at -0.01 dB (rate 0) and -1.9 % at +0.00 dB (rate 2) on 32 frames of
# camcorder 480x272, GOP 16; index 6 already cost 0.06 dB. Format 1.x: index 0 only.
SKIP_MAX_INDEX = {"whole": 4, "split": 0}


def _split_key(view: int, coder: SubstreamKind, slot: int) -> tuple[int, int, int]:
    return view, int(_SPLIT_KINDS[coder][slot > 0]), slot


def _key(split: bool, view: int, coder: SubstreamKind, slot: int) -> tuple[int, int, int]:
    """(view, kind, slot) of the substream that holds this run, in either layout."""
    return _split_key(view, coder, slot) if split else (view, int(coder), 0)


def layouts(frame_type: FrameType, slices: int) -> tuple[list, list]:
    """(format 2.x, format 1.x) lists of (view, kind, slot), in stored order, for an access
    unit of this type with ``slices`` latent slices per coder. The 2.x table is the container's
    (FORMAT.md fixes it per frame type); the 1.x one splits each of its substreams per slice."""
    whole = [(int(v), int(k), int(s)) for v, k, s in LAYOUT_OF_MAJOR_2[frame_type]]
    split = []
    for c in dict.fromkeys(SubstreamKind(k) for _, k, _ in whole):  # the coders, in coding order
        split += [_split_key(v, c, 0) for v in VIEWS]
        split += [_split_key(v, c, n) for n in range(1, slices + 1) for v in VIEWS]
    return whole, split


class SymbolWriter:
    """The range encoders of one access unit. ``split=True`` writes the 1.x layout (only for
    tests of the 1.x reader: a 2.x stream must not contain it)."""

    def __init__(self, split: bool = False):
        self.split = split
        self.skip_max_index = SKIP_MAX_INDEX["split" if split else "whole"]
        self._enc: dict[tuple, SubstreamEncoder] = {}  # insertion order = stored order

    def __call__(self, view: int, coder: SubstreamKind, slot: int) -> SubstreamEncoder:
        return self._enc.setdefault(_key(self.split, view, coder, slot), SubstreamEncoder())

    def substreams(self, frame_type: FrameType, slices: int) -> list[Substream]:
        """The finished substreams; they must form the documented layout of this frame type."""
        whole, split = layouts(frame_type, slices)
        if list(self._enc) != (split if self.split else whole):
            raise ModelError("internal error: substreams out of the documented order")
        return [Substream(view=v, kind=SubstreamKind(k), slot=s, data=e.finish())
                for (v, k, s), e in self._enc.items()]


class SymbolReader:
    """The range decoders of one access unit, in either layout."""

    def __init__(self, substreams: list[Substream], frame_type: FrameType, slices: int):
        got = [(int(s.view), int(s.kind), s.slot) for s in substreams]
        whole, split = layouts(frame_type, slices)
        if got not in (whole, split):
            raise BitstreamError(f"{frame_type.name}-frame substreams {got[:6]}... do not match the model's layout")
        self.split = got == split
        self.skip_max_index = SKIP_MAX_INDEX["split" if self.split else "whole"]
        self._dec = {key: SubstreamDecoder(s.data) for key, s in zip(got, substreams)}

    def __call__(self, view: int, coder: SubstreamKind, slot: int) -> SubstreamDecoder:
        return self._dec[_key(self.split, view, coder, slot)]
