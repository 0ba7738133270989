"""svcodec: a neural stereo video codec (ELIC I-frames, HDC P-frames, rANS entropy coding)."""

__version__ = "0.1.0"
