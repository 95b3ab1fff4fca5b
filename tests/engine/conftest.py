"""Fixtures of the engine tests: one local Ray for them all, row comparison, a child-process run."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

# Runs embed() in a child process (argv: sources, out, JSON options; an "engine" option is
# EngineSettings fields), so that a test can kill it.
EMBED_SCRIPT = """
import json, sys
from ctfp.embed.runner import embed
from ctfp.engine.settings import EngineSettings
options = json.loads(sys.argv[3])
engine = EngineSettings(**options.pop("engine", {}))
embed(sys.argv[1], sys.argv[2], engine=engine, progress=False, **options)
"""


@pytest.fixture
def embed_command() -> Callable[..., list[str]]:
    """``embed_command(src, out, **options)``: the command line of a child ``embed()`` run."""

    def command(src: Path, out: Path, **options: Any) -> list[str]:
        return [sys.executable, "-c", EMBED_SCRIPT, str(src), str(out), json.dumps(options)]

    return command


@pytest.fixture(scope="package")
def ray_address(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local Ray with 2 CPUs for the engine tests (startup takes seconds: once, not once per
    module; shut down after the package's last test); its address, for child processes to join
    so that a killed driver leaves no Ray processes behind."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ctfp[ray]')")
    if importlib.util.find_spec("moto") is not None:
        # Ray's workers inherit the environment at its start: the session's S3 server first,
        # so that its AWS_* variables reach the workers of test_ray_s3.py.
        request.getfixturevalue("s3_server")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def cosines() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``cosines(a, b)``: (n,) cosine of each row pair of two (n, d) matrices."""
    return _cosines


@pytest.fixture
def assert_same_rows() -> Callable[..., None]:
    """``assert_same_rows(a, b, same_parts=True)``: same ids in the same order, same columns,
    metadata and (unless ``same_parts`` is false) shard names, embeddings with cosine >= 0.999.
    """
    from ctfp.store.reader import read_embeddings

    def check(local: Path, remote: Path, same_parts: bool = True) -> None:
        a, b = read_embeddings(local), read_embeddings(remote)
        assert a.ids.tolist() == b.ids.tolist()
        assert a.table.equals(b.table)  # id, source, frame, label
        assert a.metadata == b.metadata
        assert _cosines(a.matrix, b.matrix).min() >= 0.999
        np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-4, atol=1e-4)
        shards = [sorted(p.name for p in d.glob("part-*.parquet")) for d in (local, remote)]
        assert shards[0] == shards[1] or not same_parts
        assert pq.read_schema(local / shards[0][0]) == pq.read_schema(remote / shards[1][0])

    return check
