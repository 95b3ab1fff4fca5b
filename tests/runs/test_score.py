"""Streaming scoring over shards: same answers as in memory, one output per shard, resumable."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.exceptions import CtfpError, InputError
from ctfp.io.locks import FolderLock
from ctfp.membership.centroid import CentroidMembership
from ctfp.runs.score import ScoreSettings, score_shards
from ctfp.store.reader import read_embeddings
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter

IDENTITY = {
    "model": "synthetic",
    "weights": "none",
    "weights_sha256": "0" * 64,
    "dim": 64,
    "preprocessing": {},
}


def write_shards(
    out: Path, n: int = 3000, per_shard: int = 1000, seed: int = 0, prefix: str = "r"
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.gamma(1.0, 1.0, (n, 64)).astype(np.float16)
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(out, metadata=meta, rows_per_shard=per_shard) as w:
        for i in range(n):
            w.add(f"{prefix}{i:05d}", [f"{prefix}{i:05d}"], "synthetic", [0], None, x[i : i + 1])


def fit_centroid(k: int, used: np.ndarray, not_used: np.ndarray) -> CentroidMembership:
    labels = np.r_[np.ones(len(used), int), np.zeros(len(not_used), int)]
    return CentroidMembership(k, device="cpu").fit(np.vstack([used, not_used]), labels)


def test_streamed_scores_equal_in_memory_scores_and_resume(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb")
    rng = np.random.default_rng(1)
    model = fit_centroid(4, rng.gamma(1.0, 1.0, (200, 64)), rng.gamma(1.2, 1.0, (200, 64)))
    summary = score_shards(
        model, tmp_path / "emb", tmp_path / "scores", batch_size=256, progress=False
    )
    settings = ScoreSettings(batch_size=256)
    assert (
        score_shards(model, tmp_path / "emb", tmp_path / "s2", settings, progress=False)["rows"]
        == 3000
    )
    assert summary["rows"] == 3000 and summary["shards_written"] == 3
    data = read_embeddings(tmp_path / "emb")
    expected = model.score_samples(data.matrix)
    got = duckdb.sql(
        f"SELECT id, score, label FROM '{tmp_path}/scores/*.parquet' ORDER BY id"
    ).fetchall()
    assert [g[0] for g in got] == sorted(data.ids)
    order = np.argsort(data.ids)
    np.testing.assert_allclose([g[1] for g in got], expected[order].astype(np.float32), rtol=1e-5)
    np.testing.assert_array_equal([g[2] for g in got], model.predict(data.matrix)[order])
    # Each output holds exactly its input shard's ids (one stream runs across the shards).
    for shard in sorted((tmp_path / "emb").glob("part-*.parquet")):
        scored = pq.read_table(tmp_path / "scores" / shard.name).column("id").to_pylist()
        assert scored == pq.read_table(shard).column("id").to_pylist()
    # Lose one output (a run killed before it was written): the rerun redoes only that one.
    (tmp_path / "scores" / "part-00001.parquet").unlink()
    again = score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)
    assert again["shards_written"] == 1 and again["shards_skipped"] == 2
    count = duckdb.sql(f"SELECT count(*), count(DISTINCT id) FROM '{tmp_path}/scores/*.parquet'")
    assert count.fetchall()[0] == (3000, 3000)


def test_task2_streamed_clusters(tmp_path: Path) -> None:
    from ctfp.cluster import GaussianMixture

    write_shards(tmp_path / "emb")
    data = read_embeddings(tmp_path / "emb")
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0, device="cpu").fit(data.matrix)
    score_shards(gmm, tmp_path / "emb", tmp_path / "clusters", batch_size=500, progress=False)
    got = duckdb.sql(f"SELECT id, label, score FROM '{tmp_path}/clusters/*.parquet' ORDER BY id")
    rows = got.fetchall()
    order = np.argsort(data.ids)
    np.testing.assert_array_equal([r[1] for r in rows], gmm.predict(data.matrix)[order])
    assert all(1 / 3 <= r[2] <= 1.0 + 1e-6 for r in rows)


def test_non_finite_embeddings_are_refused_with_the_shard_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (50, 64)).astype(np.float16)
    x[17, 3] = np.inf
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(tmp_path / "emb", metadata=meta, rows_per_shard=1000) as w:
        w.add("all", [f"r{i:03d}" for i in range(50)], "synthetic", range(50), None, x)
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (20, 64)), rng.gamma(1.2, 1.0, (20, 64)))
    with pytest.raises(InputError, match=r"part-00000.parquet holds non-finite .* row 17"):
        score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)
    assert not list((tmp_path / "scores").glob("*.parquet"))


def test_an_empty_shard_gets_an_empty_output(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb", n=1500)
    first = pq.read_table(tmp_path / "emb" / "part-00000.parquet")
    pq.write_table(first.slice(0, 0), tmp_path / "emb" / "part-00002.parquet")
    shards = sorted((tmp_path / "emb").glob("part-*.parquet"))  # the record names two
    rng = np.random.default_rng(1)
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (50, 64)), rng.gamma(1.2, 1.0, (50, 64)))
    summary = score_shards(model, shards, tmp_path / "scores", progress=False)
    assert summary["rows"] == 1500 and summary["shards_written"] == 3
    assert pq.read_table(tmp_path / "scores" / "part-00002.parquet").num_rows == 0


def test_scores_need_a_folder_of_their_own(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb", n=200, per_shard=100)
    rng = np.random.default_rng(1)
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (50, 64)), rng.gamma(1.2, 1.0, (50, 64)))
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "emb").glob("*.parquet"))
    with pytest.raises(InputError, match="holds the embedding shards"):
        score_shards(model, tmp_path / "emb", tmp_path / "emb", progress=False)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "emb").glob("*.parquet")) == before
    # One scoring run per output folder: a second one is refused while the first holds it.
    with FolderLock(tmp_path / "emb"), pytest.raises(CtfpError, match="writing into"):
        ShardWriter(tmp_path / "emb", metadata=make_metadata(IDENTITY, "float16", {}))
    (tmp_path / "scores").mkdir()
    with FolderLock(tmp_path / "scores"), pytest.raises(CtfpError, match="writing into"):
        score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)
    assert score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)["rows"] == 200


def test_what_cannot_be_scored_is_refused(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb", n=100, per_shard=100)
    with pytest.raises(TypeError, match="cannot score with a dict"):
        score_shards({}, tmp_path / "emb", tmp_path / "scores", progress=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        score_shards(None, tmp_path / "emb", tmp_path / "scores", batch_size=0, progress=False)


def test_resume_only_what_this_model_scored_from_these_shards(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb", n=300, per_shard=100)
    rng = np.random.default_rng(1)
    first = fit_centroid(2, rng.gamma(1.0, 1.0, (50, 64)), rng.gamma(1.2, 1.0, (50, 64)))
    other = fit_centroid(3, rng.gamma(1.0, 1.0, (50, 64)), rng.gamma(1.2, 1.0, (50, 64)))
    score_shards(first, tmp_path / "emb", tmp_path / "scores", progress=False)
    again = score_shards(first, tmp_path / "emb", tmp_path / "scores", progress=False)
    assert again["shards_skipped"] == 3 and again["rows"] == 0
    with pytest.raises(InputError, match="another model scored it"):
        score_shards(other, tmp_path / "emb", tmp_path / "scores", progress=False)
    # Another archive whose shards have the same names: refused, not kept as if scored.
    write_shards(tmp_path / "emb2", n=300, per_shard=100, seed=7, prefix="s")
    with pytest.raises(InputError, match="it scored another input shard"):
        score_shards(first, tmp_path / "emb2", tmp_path / "scores", progress=False)
    # An output without the record (another program's, or an older ctfp's) is refused too.
    table = pq.read_table(tmp_path / "scores" / "part-00000.parquet")
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "scores" / "part-00000.parquet")
    with pytest.raises(InputError, match="records no model or input"):
        score_shards(first, tmp_path / "emb", tmp_path / "scores", progress=False)


def test_scores_of_shards_the_archive_no_longer_has_are_refused(tmp_path: Path) -> None:
    import shutil

    write_shards(tmp_path / "emb", n=300, per_shard=100)
    rng = np.random.default_rng(1)
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (50, 64)), rng.gamma(1.2, 1.0, (50, 64)))
    score_shards(model, tmp_path / "emb", tmp_path / "scores", progress=False)
    # The archive shrank to its first shard: the other two shards' scores would stay behind.
    (tmp_path / "small").mkdir()
    shutil.copy(tmp_path / "emb" / "part-00000.parquet", tmp_path / "small")
    with pytest.raises(InputError, match=r"holds scores of 2 shard\(s\) .* part-00001.parquet"):
        score_shards(model, tmp_path / "small", tmp_path / "scores", progress=False)
    assert score_shards(model, tmp_path / "small", tmp_path / "new", progress=False)["rows"] == 100
