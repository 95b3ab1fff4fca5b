"""`ctfp cluster`: a Gaussian mixture fitted over shards by streamed EM, saved as a model, and
every row assigned by `ctfp score`; the same clusters as an in-memory fit, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ctfp.attribution.shards import cluster_shards
from ctfp.cli import main
from ctfp.cluster.gmm import GaussianMixture
from ctfp.exceptions import InputError
from ctfp.store.reader import read_embeddings
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter

IDENTITY = {
    "model": "synthetic",
    "weights": "none",
    "weights_sha256": "0" * 64,
    "dim": 32,
    "preprocessing": {},
}


def write_blobs(out: Path, n: int = 3000, k: int = 3) -> dict[str, int]:
    """``n`` float16 rows from ``k`` separated blobs in 1,000-row shards; returns id -> blob."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (k, 32))
    truth = rng.integers(0, k, n)
    x = (centres[truth] + rng.normal(size=(n, 32)) * (1 + truth[:, None])).astype(np.float16)
    ids = [f"g{i:05d}" for i in range(n)]
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(out, metadata=meta, rows_per_shard=1000) as w:
        for i in range(n):
            w.add(ids[i], [ids[i]], "synthetic", [0], None, x[i : i + 1])
    return dict(zip(ids, truth.tolist(), strict=True))


def assigned(folder: Path) -> dict[str, int]:
    rows = duckdb.sql(f"SELECT id, label FROM '{folder}/*.parquet'").fetchall()
    return dict(rows)


def test_cluster_then_score_recovers_the_blobs(tmp_path: Path, capsys) -> None:
    truth = write_blobs(tmp_path / "emb")
    model = tmp_path / "model"
    args = ["cluster", str(tmp_path / "emb"), "--out", str(model), "--k", "3", "--sample", "500"]
    assert main([*args, "--covariance", "diag", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3000 and summary["sample_rows"] == 500
    assert 1 <= summary["passes"] <= 20
    assert main(["score", str(model), str(tmp_path / "emb"), "--out", str(tmp_path / "c"),
                 "--quiet"]) == 0  # fmt: skip
    got = assigned(tmp_path / "c")
    assert sorted(got) == sorted(truth)
    ids = sorted(truth)
    assert adjusted_rand_score([truth[i] for i in ids], [got[i] for i in ids]) > 0.99
    # The streamed fit reaches what an in-memory fit of all rows reaches.
    data = read_embeddings(tmp_path / "emb")
    full = GaussianMixture(3, covariance_type="diag", random_state=0, device="cpu")
    labels = dict(zip(data.ids, full.fit_predict(data.matrix), strict=True))
    assert adjusted_rand_score([labels[i] for i in ids], [got[i] for i in ids]) > 0.99


def test_streamed_fit_is_reproducible_and_takes_pca(tmp_path: Path) -> None:
    write_blobs(tmp_path / "emb")
    fits = [
        cluster_shards(tmp_path / "emb", k=3, pca=4, sample=400, batch_size=700, device="cpu")
        for _ in range(2)
    ]
    (a, sa), (b, sb) = fits
    assert sa["sample_rows"] == 400 and a.projection.components_.shape == (4, 32)
    np.testing.assert_array_equal(a.model.means_, b.model.means_)
    np.testing.assert_array_equal(a.model.covariances_, b.model.covariances_)
    assert sa["mean_log_likelihood"] == sb["mean_log_likelihood"]
    # Another batch size streams the same rows: the same mixture up to float summation order.
    c, _ = cluster_shards(tmp_path / "emb", k=3, pca=4, sample=400, batch_size=4096, device="cpu")
    np.testing.assert_allclose(c.model.means_, a.model.means_, rtol=1e-6, atol=1e-6)


def test_cluster_errors(tmp_path: Path) -> None:
    write_blobs(tmp_path / "emb", n=20)
    assert main(["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "m"), "--k", "30",
                 "--quiet"]) == 2  # fmt: skip
    assert not (tmp_path / "m" / "model.json").exists()
    assert main(["cluster", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"),
                 "--quiet"]) == 2  # fmt: skip
    with pytest.raises(ValueError, match="pca"):
        cluster_shards(tmp_path / "emb", k=2, pca=64, device="cpu")


def test_k_auto_picks_the_lowest_bic_on_the_sample(tmp_path: Path, capsys) -> None:
    write_blobs(tmp_path / "emb")
    args = ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "m"), "--k", "auto"]
    args += ["--k-range", "2-5", "--covariance", "diag", "--sample", "600", "--json", "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(int(k) for k in summary["bics"]) == [2, 3, 4, 5]
    assert summary["k"] == 3 == int(min(summary["bics"], key=summary["bics"].get))
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["params"]["k"] == 3 and saved["settings"]["cluster"]["k"] == "auto"
    bad = ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "x"), "--quiet"]
    assert main([*bad, "--k", "three"]) == 2


def test_non_finite_rows_are_named_not_passed_to_em(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 32)).astype(np.float16)
    x[17, 3] = np.nan
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(tmp_path / "emb", metadata=meta) as w:
        w.add("all", [f"g{i:03d}" for i in range(50)], "synthetic", range(50), None, x)
    with pytest.raises(InputError, match=r"non-finite embeddings .* id 'g017'"):
        cluster_shards(tmp_path / "emb", k=2, pca=4, device="cpu")
    args = ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "m"), "--k", "2", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "g017" in err[0]
