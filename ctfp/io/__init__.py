"""Inputs: finding CT files (sources) and turning them into 8-bit slices (decode)."""

from ctfp.io.decode import Window, decode_file, parse_window
from ctfp.io.sources import InputFile, discover

__all__ = ["InputFile", "Window", "decode_file", "discover", "parse_window"]
