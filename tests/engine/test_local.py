"""The local engine: a job run in this process, its defaults, stage timings and loader workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ctfp.embed.features import PixelFeatures
from ctfp.embed.runner import embed
from ctfp.engine import local
from ctfp.io.sources import discover
from ctfp.store.reader import read_embeddings
from tests.conftest import copy_pngs


def test_a_job_runs_with_the_cpu_defaults(tmp_path: Path, lung_pngs, pixel_job) -> None:
    src = copy_pngs(lung_pngs[:5], tmp_path / "src")
    (src / "broken.png").write_bytes(b"")
    job = pixel_job(
        discover(src),
        tmp_path / "out",
        factory=lambda: PixelFeatures(16),
        rows_per_shard=2,
        settings={"marker": 1},
    )
    [result] = local.run(job)
    assert (result.rows, result.files, len(result.errors), len(result.shards)) == (5, 6, 1, 3)
    assert result.engine == "local" and result.actors == 0 and result.device == "cpu"
    assert (result.batch_size, result.workers) == (64, 0)  # the CPU defaults (pixels: 64)
    assert set(result.timings) == {"decode_wait", "infer", "write"}
    assert all(v >= 0 for v in result.timings.values()) and result.settings == {"marker": 1}
    data = read_embeddings(tmp_path / "out")
    assert data.matrix.shape == (5, 256) and data.metadata["model"] == "pixels"
    assert data.ids.tolist() == [f.id for f in job.files if f.id != "broken"]


def test_worker_count_does_not_change_the_result(
    tmp_path: Path, lung_pngs, random_backbone_64
) -> None:
    src = copy_pngs(lung_pngs[:20], tmp_path / "src")
    results = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        result = embed(
            src,
            out,
            backbone_factory=random_backbone_64,
            workers=workers,
            batch_size=6,
            precision="fp32",
            progress=False,
        )
        assert result.workers == workers and result.batch_size == 6
        results.append(read_embeddings(out))
    assert results[0].ids.tolist() == results[1].ids.tolist()
    np.testing.assert_array_equal(results[0].matrix, results[1].matrix)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_compiled_model_gives_the_same_rows(tmp_path: Path, lung_pngs) -> None:
    """compile: the real torch.compile of ResNet50 (about a minute on 2 cores), same rows."""
    src = copy_pngs(lung_pngs[:2], tmp_path / "src")
    kw = dict(weights="random", image_size=32, precision="fp32", dtype="float32", progress=False)
    plain = embed(src, tmp_path / "plain", **kw)
    compiled = embed(src, tmp_path / "compiled", compile=True, **kw)
    assert plain.rows == compiled.rows == 2
    a, b = read_embeddings(tmp_path / "plain"), read_embeddings(tmp_path / "compiled")
    assert a.metadata == b.metadata  # compiling does not change the model's identity
    np.testing.assert_allclose(b.matrix, a.matrix, rtol=1e-4, atol=1e-4)
