"""Ray workers writing to and reading from an object store (moto's S3 server on 127.0.0.1):
embed into s3:// and score s3:// into s3://, the local engine's rows and scores.

The S3 server (a session fixture) starts before the engine tests' Ray (tests/engine/conftest.py),
so Ray's workers inherit the AWS_* variables that point at it, as the workers of a real cluster
get them from their node's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctfp.embed.runner import embed
from ctfp.engine.settings import EngineSettings
from ctfp.runs.score import score_shards
from ctfp.store.reader import read_embeddings
from tests.conftest import assert_same_embeddings, copy_pngs
from tests.engine.test_ray_maps import assert_same_scores
from tests.runs.test_score import fit_centroid
from tests.store.test_object_store import keys

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ctfp[ray]')")
# Ray starts in seconds and its tests run tens of them: outside `make test-fast`.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning"),
    pytest.mark.slow,
]

OPTIONS = dict(features="pixels", dtype="float32", rows_per_shard=4, progress=False)


def test_ray_workers_write_parts_to_s3_and_score_from_it(
    tmp_path: Path, s3: str, s3_server: Any, ray_address: str, lung_pngs: list[Path]
) -> None:
    src = copy_pngs(lung_pngs[:10], tmp_path / "src")
    ref = embed(src, tmp_path / "local", **OPTIONS)
    got = embed(src, f"s3://{s3}/shards", engine="ray", **OPTIONS)
    assert got.rows == ref.rows == 10 and got.engine == "ray"
    assert 0 < got.driver_bytes < 300 * got.files  # the parts went from the actors to S3
    stored = keys(s3_server, s3, "shards/")
    assert "_manifest.json" in stored and "_lease.json" not in stored
    assert len([k for k in stored if k.startswith("part-")]) >= 2
    a, b = read_embeddings(tmp_path / "local"), read_embeddings(f"s3://{s3}/shards")
    assert a.ids.tolist() == b.ids.tolist()
    assert_same_embeddings(a, b)
    # Scoring on Ray: the actors read the parts from S3 and write their scores there.
    rng = np.random.default_rng(0)
    model = fit_centroid(
        2, a.matrix[:5] + rng.normal(0, 1e-3, (5, a.matrix.shape[1])), a.matrix[5:]
    )
    ray_engine = EngineSettings(engine="ray")
    remote = score_shards(
        model, f"s3://{s3}/shards", f"s3://{s3}/scores", engine=ray_engine, progress=False
    )
    assert remote["rows"] == 10 and remote["engine"] == "ray"
    score_shards(model, f"s3://{s3}/shards", tmp_path / "scores", progress=False)
    local_copy = tmp_path / "from-s3"
    local_copy.mkdir()
    for key in keys(s3_server, s3, "scores/"):
        body = s3_server.get_object(Bucket=s3, Key=f"scores/{key}")["Body"].read()
        (local_copy / key).write_bytes(body)
    assert_same_scores(tmp_path / "scores", local_copy)
