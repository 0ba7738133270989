"""Stable entry points for tools (benchmark, tests) that drive the codec programmatically."""

from .session import EncodeReport, decode_file, encode_frames, encode_pairs, iter_decode

__all__ = ["EncodeReport", "decode_file", "encode_frames", "encode_pairs", "iter_decode"]
