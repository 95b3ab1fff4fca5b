"""Run folders and saved models on an object store, against a real S3 endpoint on 127.0.0.1
(moto's server, configured through AWS_* only): embed -> run -> score -> report on s3://, the
same files as local runs, the previous run kept whole until a new one publishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.cli import main
from ctfp.exceptions import InputError
from ctfp.runs.models import load_model
from ctfp.runs.task1 import run_task1
from tests.store.test_object_store import committed_parts, external_s3, keys, upload

# Runs on a real S3 server, one killed mid-write: outside `make test-fast`.
pytestmark = pytest.mark.slow

PIXELS = ["--features", "pixels:16", "--dtype", "float32", "--quiet"]
TASK1 = ["--method", "centroid", "--k", "2", *PIXELS]


def _get(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_embed_run_score_report_on_s3(
    tmp_path: Path, s3: str, s3_server: Any, task1_small: Path, capsys
) -> None:
    run, shards, scores = f"s3://{s3}/run", f"s3://{s3}/archive-shards", f"s3://{s3}/scores"
    # The archive to score: the test slices, on the store.
    tests = sorted((task1_small / "test").glob("*.png"))
    upload(s3_server, s3, {f"archive/{p.name}": p for p in tests})
    assert main(["embed", f"s3://{s3}/archive", "--out", shards, *PIXELS]) == 0

    # The run: local labelled data, run folder on the store; and the same run locally.
    assert main(["run", "task1", str(task1_small), "--out", run, *TASK1, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert main(["run", "task1", str(task1_small), "--out", str(tmp_path / "local"), *TASK1]) == 0
    stored = keys(s3_server, s3, "run/")
    assert {"summary.json", "run.csv", "scores.csv", "model/model.json", "model/arrays.npz"} <= set(
        stored
    )
    assert "embeddings-pixels16/_manifest.json" in stored and "_lease.json" not in stored
    assert not [k for k in stored if "tmp" in k or k.startswith("ctfp-")]
    for name in ("run.csv", "scores.csv", "model/arrays.npz", "model/model.json"):
        assert _get(s3_server, s3, f"run/{name}") == (tmp_path / "local" / name).read_bytes()
    # The summary names the store, not the staging folder it was written in.
    record = json.loads(_get(s3_server, s3, "run/summary.json"))
    assert record["runs"]["2"]["run"] == f"{run}/run.csv"
    assert summary["runs"]["2"]["run"] == f"{run}/run.csv"
    local_record = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert record["files"] == local_record["files"]
    # Another reader opens the run's embeddings through the endpoint.
    parts = [k for k in stored if k.startswith("embeddings-pixels16/part-")]
    table = pq.read_table(f"{s3}/run/{parts[0]}", filesystem=external_s3())
    assert table.num_rows > 0 and "embedding" in table.column_names

    # Score the archive on the store with the model on the store.
    assert main(["score", run, shards, "--out", scores, "--quiet"]) == 0
    assert main(["score", str(tmp_path / "local"), shards, "--out", str(tmp_path / "sc")]) == 0
    got = pq.read_table(f"{s3}/scores/part-00000.parquet", filesystem=external_s3())
    ref = pq.read_table(tmp_path / "sc" / "part-00000.parquet")
    assert got.column("id").equals(ref.column("id")) and got.num_rows == len(tests)
    np.testing.assert_array_equal(got.column("score").to_numpy(), ref.column("score").to_numpy())
    # The archive's scores agree with the run's own test scores (same model, same slices).
    run_scores = dict(
        duckdb.sql(f"SELECT id, score FROM read_csv('{tmp_path}/local/scores.csv')").fetchall()
    )
    by_id = dict(zip(got.column("id").to_pylist(), got.column("score").to_pylist(), strict=True))
    assert sorted(by_id) == sorted(run_scores)
    assert all(abs(by_id[i] - run_scores[i]) < 1e-5 for i in by_id)

    # The run file is evaluated from the store as from the local folder.
    capsys.readouterr()
    truth = str(task1_small / "truth.csv")
    assert main(["evaluate", "task1", f"{run}/run.csv", "--truth", truth, "--json"]) == 0
    remote_metrics = json.loads(capsys.readouterr().out)
    local_run_file = str(tmp_path / "local" / "run.csv")
    assert main(["evaluate", "task1", local_run_file, "--truth", truth, "--json"]) == 0
    local_metrics = json.loads(capsys.readouterr().out)
    assert remote_metrics["roc_auc"] == local_metrics["roc_auc"] is not None
    assert remote_metrics["f1"] == local_metrics["f1"]

    # The report and the audit go beside the run on the store.
    capsys.readouterr()
    assert main(["report", run, "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == f"{run}/report.html"
    html = _get(s3_server, s3, "run/report.html").decode()
    assert html.startswith("<!DOCTYPE html>") and "ctfp task1 report: run" in html
    audit = json.loads(_get(s3_server, s3, "run/audit.json"))
    assert audit["run_dir"] == run
    assert audit["model"]["embeddings"] == f"{run}/embeddings-pixels16"


def test_a_failed_rerun_keeps_the_previous_run_and_a_new_one_replaces_it(
    tmp_path: Path, s3: str, s3_server: Any, task1_small: Path
) -> None:
    run = f"s3://{s3}/run"
    assert main(["run", "task1", str(task1_small), "--out", run, *TASK1, "--report"]) == 0
    assert "report.html" in keys(s3_server, s3, "run/")
    before = _get(s3_server, s3, "run/summary.json")
    # A rerun that fails after embedding publishes nothing: the previous run stays whole.
    bad = ["run", "task1", str(task1_small), "--out", run, *PIXELS, "--method", "centroid"]
    assert main([*bad, "--k", "500"]) != 0
    assert _get(s3_server, s3, "run/summary.json") == before
    assert load_model(run, device="cpu").kind == "centroid"
    # A sweep replaces it: k<k>/ folders, and the single-k files and the old report are gone;
    # what is not a run's (a note beside it) stays.
    upload(s3_server, s3, {"run/notes.txt": b"kept"})
    assert main([*bad, "--k", "2,3"]) == 0
    stored = keys(s3_server, s3, "run/")
    assert "notes.txt" in stored
    assert "k2/run.csv" in stored and "k3/model/model.json" in stored
    assert not {"run.csv", "scores.csv", "report.html", "model/model.json"} & set(stored)
    assert [k for k in stored if k.startswith("embeddings-pixels16/part-")]  # reused, kept
    assert load_model(f"{run}/k3", device="cpu").kind == "centroid"


def test_damaged_or_missing_runs_on_a_store_are_named(
    s3: str, s3_server: Any, task1_small: Path
) -> None:
    run = f"s3://{s3}/run"
    with pytest.raises(InputError, match=r"does not exist"):
        load_model(run)
    assert main(["run", "task1", str(task1_small), "--out", run, *TASK1]) == 0
    s3_server.put_object(Bucket=s3, Key="run/model/arrays.npz", Body=b"changed")
    with pytest.raises(InputError, match=rf"{run}/model/arrays.npz is not the file the run"):
        load_model(run)
    s3_server.delete_object(Bucket=s3, Key="run/model/arrays.npz")
    with pytest.raises(InputError, match=rf"{run}/model/arrays.npz is missing"):
        load_model(run)
    s3_server.delete_object(Bucket=s3, Key="run/summary.json")  # as a run killed publishing
    with pytest.raises(InputError, match=r"not a finished ctfp run or saved model"):
        load_model(run)
    with pytest.raises(InputError, match=rf"data folder 's3://{s3}/data' does not exist"):
        run_task1(f"s3://{s3}/data", f"{run}2", method="centroid", k=2, progress=False)


def _copy_some(data: Path, dest: Path, every: dict[str, int]) -> dict[str, Path]:
    """Every ``every[top]``-th PNG (default: each) of each top folder of ``data``, copied to
    ``dest``: ``{relative path: copy}``, to upload the same folder to the store."""
    copied: dict[str, Path] = {}
    for top in sorted(p for p in data.iterdir() if p.is_dir()):
        for p in sorted(top.rglob("*.png"))[:: every.get(top.name, 1)]:
            rel = p.relative_to(data).as_posix()
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            copied[rel] = Path(shutil.copy(p, dest / rel))
    return copied


def test_runs_read_their_data_folder_from_the_store(
    tmp_path: Path, s3: str, s3_server: Any, task1_data: Path, task2_data: Path, capsys
) -> None:
    # Task 1: data and run folder on the store; task 2: data on the store, run folder local.
    one = _copy_some(task1_data, tmp_path / "d1", {"train": 6, "test": 6, "generated": 6})
    two = _copy_some(task2_data, tmp_path / "d2", {"test": 4})
    upload(s3_server, s3, {f"d1/{k}": p for k, p in one.items()})
    upload(s3_server, s3, {f"d2/{k}": p for k, p in two.items()})
    flags = ["--method", "proximity", *PIXELS]
    assert main(["run", "task1", f"s3://{s3}/d1/", "--out", f"s3://{s3}/r1", *flags]) == 0
    assert main(["run", "task1", str(tmp_path / "d1"), "--out", str(tmp_path / "r1"), *flags]) == 0
    for name in ("run.csv", "scores.csv", "train_scores.csv"):
        assert _get(s3_server, s3, f"r1/{name}") == (tmp_path / "r1" / name).read_bytes()
    origin = json.loads(_get(s3_server, s3, "r1/origin.json"))
    assert origin == {"data": f"s3://{s3}/d1", "task": "task1"}
    # The run file, its id list and the truth read from the store.
    ids = [line.split(",")[0] for line in (tmp_path / "r1" / "run.csv").read_text().splitlines()]
    truth = dict(line.split(",") for line in (task1_data / "truth.csv").read_text().splitlines())
    rows = "".join(f"{i},{truth[i]}\n" for i in ids)
    upload(s3_server, s3, {"ids.txt": "\n".join(ids).encode(), "truth.csv": rows.encode()})
    assert main(["validate", "task1", f"s3://{s3}/r1/run.csv", "--ids", f"s3://{s3}/ids.txt"]) == 0
    assert f"s3://{s3}/r1/run.csv: valid task1 run" in capsys.readouterr().out
    truth_uri = f"s3://{s3}/truth.csv"
    assert main(["evaluate", "task1", f"s3://{s3}/r1/run.csv", "--truth", truth_uri]) == 0
    assert "roc_auc" in capsys.readouterr().out  # its scores.csv, in the run folder
    from ctfp.evaluate import evaluate_run  # the API as well: the scores beside the run file

    (tmp_path / "truth.csv").write_text(rows)
    local = evaluate_run("task1", tmp_path / "r1" / "run.csv", tmp_path / "truth.csv")
    stored = evaluate_run("task1", f"s3://{s3}/r1/run.csv", truth_uri)
    assert stored.pop("scores") == f"s3://{s3}/r1/scores.csv" and local.pop("scores")
    assert stored == local
    upload(s3_server, s3, {"loose/run.csv": tmp_path / "r1" / "run.csv"})  # in no run folder
    assert main(["evaluate", "task1", f"s3://{s3}/loose/run.csv", "--truth", truth_uri]) == 0
    assert "f1" in capsys.readouterr().out
    assert main(["validate", "task1", f"s3://{s3}/r1"]) == 2
    assert f"the run files in it: s3://{s3}/r1/run.csv" in capsys.readouterr().err
    assert main(["validate", "task1", f"s3://{s3}/r1/none.csv"]) == 2
    assert f"cannot read run file 's3://{s3}/r1/none.csv': no such file" in capsys.readouterr().err
    # Its groups are the train/<group>/ folders on the store.
    flags = ["--method", "classify", "--folds", "2", "--repeats", "1", *PIXELS]
    assert main(["run", "task2", f"s3://{s3}/d2", "--out", str(tmp_path / "s2"), *flags]) == 0
    assert main(["run", "task2", str(tmp_path / "d2"), "--out", str(tmp_path / "r2"), *flags]) == 0
    for name in ("clusters.csv", "open_set.csv"):
        assert (tmp_path / "s2" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()


def test_a_data_folder_on_the_store_is_checked_before_embedding(
    s3: str, s3_server: Any, task1_data: Path, capsys
) -> None:
    png = sorted((task1_data / "test").glob("*.png"))[0]
    folders = {  # no train/used/; no generated/; one slice each; test/ only
        "d": ["train/not_used", "test"],
        "k": ["train/used", "train/not_used", "generated", "test"],
        "t": ["test"],
    }
    upload(s3_server, s3, {f"{d}/{sub}/a.png": png for d, subs in folders.items() for sub in subs})
    d, k, t = (f"s3://{s3}/{name}" for name in folders)
    refused = [  # as for a local folder: one line naming the URI, before anything is written
        (["task1", d, "--method", "centroid"], "'centroid' needs known members (train/used/)"),
        (["task1", d, "--method", "proximity"], f"{d}/generated/ is missing"),
        (["task1", k, "--method", "centroid", "--k", "5"], f"{k}/train/used/ holds 1 images"),
        (["task1", f"{d}/none"], f"data folder '{d}/none' does not exist"),
        (["task2", f"{d}/train"], f"'{d}/train' lacks test/"),
        (["task2", t, "--method", "classify"], f"labelled examples in {t}/train/<group>/"),
    ]
    for args, said in refused:
        assert main(["run", *args, "--out", f"s3://{s3}/r", *PIXELS]) == 2
        assert said in capsys.readouterr().err
    assert keys(s3_server, s3, "r/") == []


def test_cluster_model_and_task2_run_on_s3(
    tmp_path: Path, s3: str, s3_server: Any, task2_data: Path, capsys
) -> None:
    run = f"s3://{s3}/t2"
    flags = ["--method", "gmm", "--k", "3", "--features", "pixels:16", "--quiet"]
    assert main(["run", "task2", str(task2_data), "--out", run, *flags]) == 0
    assert main(["run", "task2", str(task2_data), "--out", str(tmp_path / "t2"), *flags]) == 0
    assert _get(s3_server, s3, "t2/clusters.csv") == (tmp_path / "t2" / "clusters.csv").read_bytes()
    shards = f"{run}/embeddings-pixels16"
    # A model fitted over shards on the store, saved on the store, used from the store.
    fit = ["cluster", shards, "--k", "3", "--sample", "100", "--device", "cpu", "--quiet"]
    assert main([*fit, "--out", f"s3://{s3}/gmm"]) == 0
    assert keys(s3_server, s3, "gmm/") == ["arrays.npz", "model.json"]
    assert main(["score", f"s3://{s3}/gmm", shards, "--out", f"s3://{s3}/clusters", "--quiet"]) == 0
    assert main([*fit, "--out", str(tmp_path / "gmm")]) == 0
    assert _get(s3_server, s3, "gmm/arrays.npz") == (tmp_path / "gmm" / "arrays.npz").read_bytes()
    rows = pq.read_table(f"{s3}/clusters/part-00000.parquet", filesystem=external_s3())
    assert rows.num_rows > 0 and set(rows.column("label").to_pylist()) <= {0, 1, 2}


def test_kill_9_during_a_run_on_s3_then_rerun_gives_the_uninterrupted_run(
    tmp_path: Path, s3: str, s3_server: Any, task1_small: Path
) -> None:
    import sys

    from tests.conftest import kill_9_while_running

    flags = [*TASK1, "--rows-per-shard", "4"]  # 24 parts: both kills land while embedding
    command = [sys.executable, "-m", "ctfp", "run", "task1", str(task1_small)]

    committed = committed_parts(s3_server, s3, "run/embeddings-pixels16")

    kills = kill_9_while_running([*command, "--out", f"s3://{s3}/run", *flags], committed, (2, 12))
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    assert "summary.json" not in keys(s3_server, s3, "run/")  # nothing published yet
    assert main(["run", "task1", str(task1_small), "--out", f"s3://{s3}/run", *flags]) == 0
    assert main(["run", "task1", str(task1_small), "--out", str(tmp_path / "ref"), *flags]) == 0
    for name in ("run.csv", "scores.csv", "model/arrays.npz"):
        assert _get(s3_server, s3, f"run/{name}") == (tmp_path / "ref" / name).read_bytes()
    stored = keys(s3_server, s3, "run/")
    assert not [k for k in stored if k.endswith("_lease.json")]  # taken over, then released


def test_file_uris_are_local_paths_everywhere(
    tmp_path: Path, task1_small: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a file:// URI read as a path would make ./file:/...
    uri = f"file://{tmp_path}"
    tests = f"file://{task1_small}/test"
    assert main(["embed", tests, "--out", f"{uri}/shards", *PIXELS]) == 0
    assert main(["run", "task1", f"file://{task1_small}", "--out", f"{uri}/run", *TASK1]) == 0
    assert main(["score", f"{uri}/run", f"{uri}/shards", "--out", f"{uri}/scores", "--quiet"]) == 0
    assert main(["report", f"{uri}/run", "--quiet"]) == 0
    fit = ["cluster", f"{uri}/shards", "--k", "2", "--sample", "50", "--device", "cpu"]
    assert main([*fit, "--out", f"{uri}/gmm", "--quiet"]) == 0
    assert main(["cache", tests, "--out", f"{uri}/cache", "--quiet"]) == 0
    for made in ("shards/_manifest.json", "run/summary.json", "run/report.html",
                 "scores/_manifest.json", "gmm/model.json", "cache/_manifest.json"):  # fmt: skip
        assert (tmp_path / made).is_file(), made
    assert not (tmp_path / "file:").exists()
