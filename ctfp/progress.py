"""The one place where ctfp talks to the terminal: a logger and progress bars."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    """Log ctfp messages to stderr as plain lines (``quiet``: warnings and errors only), the
    Python warnings of the libraries ctfp drives as one line each (``quiet``: none)."""
    captured = logging.getLogger("py.warnings")
    for log, formatter in ((logger, logging.Formatter("%(message)s")), (captured, _OneLine())):
        if not log.handlers:
            handler = _StderrHandler()
            handler.setFormatter(formatter)
            log.addHandler(handler)
            log.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # Off, then on: a caller (a notebook, a test runner) may have put its showwarning back.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    captured.setLevel(logging.ERROR if quiet else logging.WARNING)


class _OneLine(logging.Formatter):
    """A captured warning (``file:line: Category: message`` plus its source line) as one
    ``warning: Category: message`` line."""

    def format(self, record: logging.LogRecord) -> str:
        first = record.getMessage().strip().splitlines()[0] if record.getMessage() else ""
        parts = first.split(": ", 1)
        return "warning: " + (parts[1] if len(parts) == 2 else first)


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar on stderr that shows rate and ETA; a no-op bar when ``enabled`` is false."""
    from tqdm.auto import tqdm

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
