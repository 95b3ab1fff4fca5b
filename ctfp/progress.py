"""The one place where ctfp talks to the terminal: a logger and progress bars."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger("ctfp")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (notebooks and test
    runners replace it), not to the stream that was current when logging was set up."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(quiet: bool = False) -> None:
    """Log ctfp messages to stderr as plain lines (``quiet``: warnings and errors only)."""
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar on stderr that shows rate and ETA; a no-op bar when ``enabled`` is false."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
        file=sys.stderr,
        **kw,
    )
