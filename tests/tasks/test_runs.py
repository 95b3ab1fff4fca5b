"""Both tasks end to end through the CLI on small ImageCLEF-style folders, then evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from ctfp.cli import main
from ctfp.evaluate import read_table, validate_run

EMBED = ["--weights", "random", "--image-size", "64", "--quiet"]


def read_run(path: Path) -> dict[str, int]:
    return {line.split(",")[0]: int(line.split(",")[1]) for line in path.read_text().splitlines()}


def test_task1_end_to_end(task1_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t1"
    assert main(["run", "task1", str(task1_data), "--out", str(out), "--k", "4", *EMBED]) == 0
    truth = read_table(task1_data / "truth.csv", "label")
    run = read_run(out / "run.csv")
    assert set(run) == set(truth) and set(run.values()) <= {0, 1}
    assert validate_run(out / "run.csv", "task1", sorted(truth)) == []
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0] == "id,score,label" and len(lines) == len(truth) + 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] == len(truth) and summary["model"]["weights"] == "random:seed=0"
    assert summary["n_used"] + summary["n_not_used"] + len(truth) == 188

    capsys.readouterr()
    assert (
        main(["evaluate", "task1", str(out / "run.csv"), "--truth", str(task1_data / "truth.csv")])
        == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads(printed[-1])
    assert any(line.startswith("f1 ") for line in printed[:-1])
    ids = sorted(truth)
    y = [int(truth[i]) for i in ids]
    p = [run[i] for i in ids]
    scores = read_table(out / "scores.csv", "score")
    assert metrics["f1"] == pytest.approx(f1_score(y, p))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert metrics["kappa"] == pytest.approx(cohen_kappa_score(y, p))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, [float(scores[i]) for i in ids]))
    assert metrics["baseline_all_used_f1"] == pytest.approx(2 / 3, abs=0.02)
    # Scores and labels agree: positive score <=> nearest centre is a "used" one.
    labels = read_table(out / "scores.csv", "label")
    assert all((float(scores[i]) > 0) == (labels[i] == "1") for i in ids if float(scores[i]) != 0)


def test_task1_k_sweep_reuses_the_embeddings(task1_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t1"
    assert main(["run", "task1", str(task1_data), "--out", str(out), "--k", "2", *EMBED]) == 0
    shards = sorted((out / "embeddings").glob("part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert (
        main(["run", "task1", str(task1_data), "--out", str(out), "--k", "1,2,4", *EMBED, "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["k"] == [1, 2, 4]
    assert [
        p.stat().st_mtime_ns for p in sorted((out / "embeddings").glob("part-*.parquet"))
    ] == mtimes
    for k in (1, 2, 4):
        assert validate_run(out / f"k{k}" / "run.csv", "task1") == []


def test_task1_bad_layout_and_too_large_k(task1_data: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        main(["run", "task1", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *EMBED]) == 2
    )
    assert "train/used/" in capsys.readouterr().err
    assert (
        main(["run", "task1", str(task1_data), "--out", str(tmp_path / "o"), "--k", "64", *EMBED])
        == 2
    )
    assert "k=64 needs at least 64" in capsys.readouterr().err


def test_task2_end_to_end(task2_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t2"
    args = [
        "run",
        "task2",
        str(task2_data),
        "--out",
        str(out),
        "--k",
        "3",
        "--init",
        "kmeans",
        "--covariance",
        "diag",
        *EMBED,
    ]
    assert main(args) == 0
    truth = read_table(task2_data / "truth.csv", "cluster")
    run = read_run(out / "clusters.csv")
    assert set(run) == set(truth) and set(run.values()) <= {0, 1, 2}
    assert validate_run(out / "clusters.csv", "task2", sorted(truth)) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 3 and "train_check" in summary and summary["train_check"]["n"] == 12
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "task2",
                str(out / "clusters.csv"),
                "--truth",
                str(task2_data / "truth.csv"),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = sorted(truth)
    assert metrics["ari"] == pytest.approx(
        adjusted_rand_score([truth[i] for i in ids], [run[i] for i in ids])
    )
    # Blur, noise and posterisation leave fingerprints even random ResNet features can see.
    assert metrics["ari"] > 0.4


@pytest.mark.parametrize("init", ["k-means++", "random", "random_from_data"])
def test_task2_other_inits(task2_data: Path, tmp_path: Path, init: str) -> None:
    out = tmp_path / init
    assert (
        main(
            [
                "run",
                "task2",
                str(task2_data),
                "--out",
                str(out),
                "--k",
                "3",
                "--init",
                init,
                "--covariance",
                "spherical",
                *EMBED,
            ]
        )
        == 0
    )
    assert validate_run(out / "clusters.csv", "task2") == []


def test_task2_k_auto_says_what_it_chose(task2_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "auto"
    assert (
        main(
            [
                "run",
                "task2",
                str(task2_data),
                "--out",
                str(out),
                "--k",
                "auto",
                "--k-range",
                "2-5",
                "--covariance",
                "spherical",
                "--weights",
                "random",
                "--image-size",
                "64",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["k"] in (2, 3, 4, 5) and set(summary["k_auto_bic"]) == {"2", "3", "4", "5"}
    assert f"k=auto chose {summary['k']} components" in captured.err
    bics = summary["k_auto_bic"]
    assert min(bics, key=bics.get) == str(summary["k"])
    assert len(set(read_run(out / "clusters.csv").values())) <= summary["k"]
    assert np.isfinite(list(bics.values())).all()


@pytest.mark.parametrize("method", ["proximity"])
def test_task1_beyond_the_seed(task1_data: Path, tmp_path: Path, method: str, capsys) -> None:
    out = tmp_path / method
    args = [
        "run",
        "task1",
        str(task1_data),
        "--out",
        str(out),
        "--method",
        method,
        "--features",
        "pixels",
        "--quiet",
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == method and summary["n_generated"] > 0
    assert all(r["threshold"] is not None for r in summary["runs"].values())
    assert (
        validate_run(
            out / "run.csv", "task1", sorted(read_table(task1_data / "truth.csv", "label"))
        )
        == []
    )
    assert (out / "embeddings-pixels").is_dir()
    # The generated set holds noisy copies of the used slices: proximity must see it.
    assert (
        main(["evaluate", "task1", str(out / "run.csv"), "--truth", str(task1_data / "truth.csv")])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["roc_auc"] > 0.8 and metrics["kappa"] > 0.3


def test_task2_semi_supervised_with_pca(task2_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "semi"
    assert (
        main(
            [
                "run",
                "task2",
                str(task2_data),
                "--out",
                str(out),
                "--semi-supervised",
                "--pca",
                "8",
                "--features",
                "residual",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["k"] == 3 and summary["init"] == "train-group means" and summary["pca"] == 8
    assert validate_run(out / "clusters.csv", "task2") == []
