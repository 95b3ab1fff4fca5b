"""How stored CT values become 8-bit gray (the window) and the size limits of a slice: pure
Python, so that the settings and the command line read them without NumPy or the decoders."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ctfp.exceptions import DecodeError

# Smallest side accepted as a CT slice; anything smaller is almost surely not an image of one.
MIN_SIDE = 8
# Largest slice decoded, checked against the declared dimensions before any pixel is decoded
# (a few compressed bytes can declare gigabytes); a file may hold 4x that in all.
MAX_PIXELS = 8192 * 8192
WINDOW_PRESETS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


@dataclass(frozen=True)
class Window:
    """How stored values become 8-bit gray.

    ``mode="hu"`` clips Hounsfield units to ``[level - width/2, level + width/2]`` and scales to
    0..255 (floor), exactly as the ImageCLEF PNGs were rendered. ``mode="minmax"`` scales each slice
    from its own minimum to maximum. ``mode="auto"`` (the default) uses the HU window for CT (DICOM
    Modality CT; NIfTI volumes whose values look like HU, i.e. reach below -500) and min-max for
    everything else, where a HU window is meaningless.
    """

    mode: str = "auto"
    level: float = -600.0
    width: float = 1500.0

    def describe(self) -> str:
        if self.mode == "minmax":
            return "minmax"
        return f"{self.mode}:{self.level:g},{self.width:g}"

    @classmethod
    def from_description(cls, text: str) -> Window:
        """The window :meth:`describe` wrote; the default window for anything else."""
        if text == "minmax":
            return cls(mode="minmax")
        mode, _, rest = text.partition(":")
        try:
            level, width = (float(v) for v in rest.split(","))
        except ValueError:
            return cls()
        return cls(mode=mode, level=level, width=width)


def parse_window(text: str | None) -> Window:
    """Parse ``--window``: ``LEVEL,WIDTH``, a preset (lung, mediastinum, ...) or ``minmax``."""
    if text is None or text == "auto":
        return Window()
    text = text.strip().lower()
    if text == "minmax":
        return Window(mode="minmax")
    if text in WINDOW_PRESETS:
        level, width = WINDOW_PRESETS[text]
        return Window(mode="hu", level=level, width=width)
    try:
        level_text, width_text = text.split(",")
        level, width = float(level_text), float(width_text)
    except ValueError:
        raise DecodeError(
            f"cannot read window {text!r}; give LEVEL,WIDTH (e.g. -600,1500), minmax, auto or one "
            f"of {', '.join(WINDOW_PRESETS)}"
        ) from None
    if not (math.isfinite(level) and math.isfinite(width)):
        raise DecodeError(f"window {text!r}: LEVEL and WIDTH must be finite numbers")
    if width <= 0:
        raise DecodeError(f"window width must be positive, got {width:g}")
    lo, hi = level - width / 2.0, level + width / 2.0
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DecodeError(
            f"window {text!r}: its edges LEVEL-WIDTH/2 and LEVEL+WIDTH/2 ({lo:g}, {hi:g}) must "
            "be finite numbers"
        )
    if not math.isclose((lo + width) - lo, width, rel_tol=1e-3):
        # Rendered as [lo, lo + width]: a width below lo's precision would clip to one edge.
        raise DecodeError(f"window {text!r}: WIDTH {width:g} is too narrow for LEVEL {level:g}")
    return Window(mode="hu", level=level, width=width)


__all__ = ["MAX_PIXELS", "MIN_SIDE", "WINDOW_PRESETS", "Window", "parse_window"]
