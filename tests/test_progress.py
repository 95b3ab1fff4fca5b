"""The one place ctfp talks to the terminal: its log, and the libraries' warnings routed into it."""

from __future__ import annotations

import warnings

from ctfp.progress import configure_logging, logger


def test_library_warnings_are_one_log_line_and_quiet_silences_them(capsys) -> None:
    configure_logging(quiet=False)
    warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=1)
    logger.info("a line of ours")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: UserWarning: Corrupt EXIF data", "a line of ours"]
    configure_logging(quiet=True)
    warnings.warn("Corrupt EXIF data, again", UserWarning, stacklevel=1)
    logger.info("not shown")
    logger.warning("warning: shown when quiet")
    assert capsys.readouterr().err.strip().splitlines() == ["warning: shown when quiet"]
    configure_logging(quiet=False)
