"""Stereo video input and output (PyAV, Pillow); frames are (H, W, 3) uint8 RGB arrays."""

from svcodec.io.readers import StereoSource, open_stereo
from svcodec.io.writers import FORMATS, StereoWriter, check_outputs, default_output_name, output_paths

__all__ = ["FORMATS", "StereoSource", "StereoWriter", "check_outputs", "default_output_name", "open_stereo", "output_paths"]
