"""Delta tables end to end: embed -> table -> score -> table, locally and on an S3 server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ctfp.cli import main
from ctfp.exceptions import CtfpError
from ctfp.runs.score import score_shards
from ctfp.store.reader import read_embeddings, read_errors
from tests.runs.test_score import fit_centroid, write_shards

deltalake = pytest.importorskip("deltalake")


def model() -> Any:
    rng = np.random.default_rng(1)
    return fit_centroid(4, rng.gamma(1.0, 1.0, (200, 64)), rng.gamma(1.2, 1.0, (200, 64)))


def scores_of(table: str, **options: Any) -> pl.DataFrame:
    return pl.read_delta(table, **options).select("id", "score", "label").sort("id")


def test_scores_of_a_table_into_a_table_name_the_version_scored(tmp_path: Path) -> None:
    write_shards(tmp_path / "emb", n=600, per_shard=200)
    write_shards(f"delta:{tmp_path / 'table'}", n=600, per_shard=200)
    ref = score_shards(model(), tmp_path / "emb", tmp_path / "ref", progress=False)
    got = score_shards(
        model(), f"delta:{tmp_path / 'table'}", f"delta:{tmp_path / 'scores'}", progress=False
    )
    assert got["rows"] == ref["rows"] == 600 and got["shards_written"] == 3
    assert got["shards"] == f"delta:{tmp_path / 'table'}@v3" and got["version"] == 3
    want = pl.read_parquet(tmp_path / "ref" / "*.parquet").sort("id")
    assert scores_of(str(tmp_path / "scores")).equals(want.select("id", "score", "label"))
    # Resume: nothing new; rows added to the embeddings: only their part, at the new version.
    again = score_shards(model(), tmp_path / "table", f"delta:{tmp_path / 'scores'}")
    assert (again["shards_written"], again["shards_skipped"]) == (0, 3)
    write_shards(tmp_path / "table", n=50, per_shard=200, prefix="z")
    more = score_shards(model(), tmp_path / "table", tmp_path / "scores", progress=False)
    assert (more["shards_written"], more["shards"]) == (1, f"delta:{tmp_path / 'table'}@v4")
    assert scores_of(str(tmp_path / "scores"))["id"].n_unique() == 650
    history = [c["ctfp"] for c in deltalake.DeltaTable(str(tmp_path / "scores")).history()[:1]]
    assert history[0]["shards"] == f"delta:{tmp_path / 'table'}@v4"
    # The version pinned then still reads as it was.
    assert len(read_embeddings(f"delta:{tmp_path / 'table'}@v3")) == 600
    with pytest.raises(CtfpError, match="another model"):
        other = fit_centroid(2, np.ones((4, 64)), np.zeros((4, 64)))
        score_shards(other, tmp_path / "table", tmp_path / "scores", progress=False)


def test_embed_and_score_tables_on_an_s3_server(
    tmp_path: Path, s3: str, lung_pngs: list[Path]
) -> None:
    import boto3

    from tests.store.test_object_store import upload

    files: dict[str, Path | bytes] = {f"ct/{p.name}": p for p in lung_pngs[:6]}
    files["ct/broken.png"] = b"not a png"
    upload(boto3.client("s3"), s3, files)
    flags = ["--features", "pixels", "--rows-per-shard", "2", "--quiet", "--json"]
    table = f"s3://{s3}/emb"
    assert main(["embed", f"s3://{s3}/ct", "--out", f"delta:{table}", *flags]) == 0
    local = tmp_path / "ct"
    local.mkdir()
    for p in lung_pngs[:6]:
        (local / p.name).write_bytes(p.read_bytes())
    main(["embed", str(local), "--out", str(tmp_path / "ref"), *flags])
    a, b = read_embeddings(tmp_path / "ref"), read_embeddings(table)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert [e["id"] for e in read_errors(f"delta:{table}").to_pylist()] == ["broken"]
    options = {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
    }
    assert sorted(pl.read_delta(table, storage_options=options)["id"]) == sorted(a.ids)
    # The rerun resumes from the table's committed ids and fingerprints: nothing to embed.
    assert main(["embed", f"s3://{s3}/ct", "--out", table, *flags]) == 0
    assert deltalake.DeltaTable(table, storage_options=options).version() == 3
    # Scored into a table on the store: the rows of a local scoring.
    rng = np.random.default_rng(0)
    dim = a.matrix.shape[1]
    centroid = fit_centroid(2, rng.random((20, dim)), rng.random((20, dim)) + 0.1)
    ref = score_shards(centroid, tmp_path / "ref", tmp_path / "scores", progress=False)
    got = score_shards(centroid, table, f"delta:s3://{s3}/scores", progress=False)
    assert got["rows"] == ref["rows"] == 6 and got["shards"] == f"delta:{table}@v3"
    want = pl.read_parquet(tmp_path / "scores" / "*.parquet").sort("id")
    got_rows = scores_of(f"s3://{s3}/scores", storage_options=options)
    assert got_rows.equals(want.select("id", "score", "label"))
    assert (
        json.loads(
            deltalake.DeltaTable(table, storage_options=options)
            .metadata()
            .configuration["ctfp.metadata"]
        )["dtype"]
        == "float32"
    )


def test_the_unsafe_rename_is_refused(monkeypatch: pytest.MonkeyPatch, s3: str) -> None:
    from ctfp.store.writer import ShardWriter
    from tests.store.test_shards import meta

    monkeypatch.setenv("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
    with pytest.raises(CtfpError, match="AWS_S3_ALLOW_UNSAFE_RENAME"):
        ShardWriter(f"delta:s3://{s3}/emb", metadata=meta())


@pytest.mark.slow
def test_kill_9_while_embedding_into_a_table_and_resume_gives_the_uninterrupted_rows(
    tmp_path: Path, lung_pngs: list[Path], embed_command: Any
) -> None:
    import subprocess

    from ctfp.embed.runner import embed
    from tests.conftest import assert_same_embeddings, copy_pngs, kill_9_while_running

    src = copy_pngs(lung_pngs[:48], tmp_path / "src")
    fast = dict(features="pixels:16", rows_per_shard=1, batch_size=1, workers=0)
    table = tmp_path / "table"

    def committed() -> int:  # versions after the table's creation: one per part
        log = table / "_delta_log"
        return len(list(log.glob("*.json"))) - 1 if log.is_dir() else 0

    kills = kill_9_while_running(embed_command(src, f"delta:{table}", **fast), committed, (3,))
    assert kills == 1, "the run finished before it could be killed; make it slower"
    assert 3 <= len(pl.read_delta(str(table))) < 48  # the killed run's committed parts only
    subprocess.run(embed_command(src, table, **fast), check=True)
    got = read_embeddings(table)  # refuses an id twice
    assert len(got) == 48 and sorted(pl.read_delta(str(table))["id"]) == sorted(got.ids)
    embed(src, tmp_path / "ref", **fast, progress=False)
    assert_same_embeddings(read_embeddings(tmp_path / "ref"), got)


def test_cluster_a_table_and_score_its_clusters_into_a_table(tmp_path: Path, capsys) -> None:
    from tests.attribution.test_shards import write_blobs

    truth = write_blobs(f"delta:{tmp_path / 'emb'}")
    model, emb = tmp_path / "model", tmp_path / "emb"
    args = ["cluster", str(emb), "--out", str(model), "--k", "3", "--sample", "500"]
    assert main([*args, "--covariance", "diag", "--json", "--quiet", "--device", "cpu"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["rows"] == 3000 and fitted["shards"] == f"delta:{emb}@v3"
    score = ["score", str(model), str(emb), "--out", f"delta:{tmp_path / 'c'}", "--json"]
    assert main([*score, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["shards"] == f"delta:{emb}@v3"
    got = pl.read_delta(str(tmp_path / "c"))
    assert sorted(got["id"]) == sorted(truth) and got["label"].n_unique() == 3
