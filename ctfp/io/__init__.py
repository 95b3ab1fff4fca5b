"""Inputs: finding CT files (sources), the window that turns stored values into 8-bit gray,
and decoding (imported on first use: it loads NumPy and the image decoders)."""

from __future__ import annotations

from ctfp._lazy import lazy

_LAZY = {
    "InputFile": "ctfp.io.sources",
    "discover": "ctfp.io.sources",
    "Window": "ctfp.io.window",
    "parse_window": "ctfp.io.window",
    "decode_file": "ctfp.io.decode",
}


__getattr__ = lazy(__name__, _LAZY)


__all__ = ["InputFile", "Window", "decode_file", "discover", "parse_window"]
