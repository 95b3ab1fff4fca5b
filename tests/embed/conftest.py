"""Fixtures of the embedding tests: small models and jobs, a log catcher."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


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
