"""Fixtures of the embedding tests: small models and jobs, a log catcher, a child-process run."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Runs embed() in a child process (argv: sources, out, JSON options), so that a test can kill it.
EMBED_SCRIPT = """
import json, sys
from ctfp.embed.runner import embed
embed(sys.argv[1], sys.argv[2], progress=False, **json.loads(sys.argv[3]))
"""


@pytest.fixture
def embed_command() -> Callable[..., list[str]]:
    """``embed_command(src, out, **options)``: the command line of a child ``embed()`` run."""

    def command(src: Path, out: Path, **options: Any) -> list[str]:
        return [sys.executable, "-c", EMBED_SCRIPT, str(src), str(out), json.dumps(options)]

    return command


@pytest.fixture
def ctfp_log() -> Iterator[list[logging.LogRecord]]:
    """The records the ``ctfp`` logger emits during the test (INFO and up)."""
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("ctfp")
    handler, level = Catch(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
