"""The .svc stereo video container (specification: docs/FORMAT.md).

    with SvcWriter(path, seq_header) as w:
        w.write_gop(access_units)
    r = SvcReader(path)
    for gop, access_units in r: ...
"""

from .format import (END_MAGIC, MAGIC, MOTION_KINDS, VERSION_MAJOR, VERSION_MINOR, AccessUnit, Colour,
                     FrameType, GopHeader, SequenceHeader, Substream, SubstreamKind, View,
                     frame_crc32, model_id_of_file)
from .stream import SvcReader, SvcWriter

__all__ = [
    "AccessUnit", "Colour", "END_MAGIC", "FrameType", "GopHeader", "MAGIC", "MOTION_KINDS", "SequenceHeader",
    "Substream", "SubstreamKind", "SvcReader", "SvcWriter", "VERSION_MAJOR", "VERSION_MINOR",
    "View", "frame_crc32", "model_id_of_file",
]
