"""Where the bits of an .svc file go: I-frames, P-frame motion, P-frame context, container.

Read from the file itself (every byte counted once), not from the encoder's estimates, so the
four parts always add up to the file size that the benchmark's bpp uses.
"""

from __future__ import annotations

from ..container import MOTION_KINDS, FrameType, SvcReader

PARTS = ("i_frames", "motion", "context", "overhead")


def bit_allocation(path) -> dict:
    """{"bytes": {part: n}, "share": {part: fraction of the file}, "frames": {"I": n, "P": n}}.

    i_frames: every substream of I access units (texture of both views); motion: the motion
    substreams of P access units; context: the texture (contextual latent and hyperprior)
    substreams of P access units; overhead: everything else in the file (headers, substream
    tables, CRCs, index, trailer)."""
    reader = SvcReader(path)
    counts = dict.fromkeys(PARTS, 0)
    frames = {"I": 0, "P": 0}
    for _, access_units in reader:
        for au in access_units:
            if au.frame_type == FrameType.I:
                frames["I"] += 1
                counts["i_frames"] += au.payload_bytes()
                continue
            frames["P"] += 1
            for s in au.substreams:
                counts["motion" if s.kind in MOTION_KINDS else "context"] += len(s.data)
    counts["overhead"] = reader.file_size - sum(counts.values())
    return {
        "bytes": counts,
        "share": {k: v / reader.file_size for k, v in counts.items()},
        "frames": frames,
    }
