"""Inputs: finding CT files (sources), the window that turns stored values into 8-bit gray,
and decoding (imported on first use: it loads NumPy and the image decoders)."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "InputFile": "ctfp.io.sources",
    "discover": "ctfp.io.sources",
    "Window": "ctfp.io.window",
    "parse_window": "ctfp.io.window",
    "decode_file": "ctfp.io.decode",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctfp.io' has no attribute {name!r}")


__all__ = ["InputFile", "Window", "decode_file", "discover", "parse_window"]
