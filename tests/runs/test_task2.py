"""Task 2 end to end on a small ImageCLEF-style folder (CLI and Python API), then evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    adjusted_rand_score,
)

from ctfp.attribution.settings import Task2Settings
from ctfp.cli import main
from ctfp.embed.settings import EmbedSettings
from ctfp.evaluate import read_table, validate_run
from ctfp.runs.task2 import run_task2
from tests.conftest import GENERATORS

EMBED = ["--weights", "random", "--image-size", "64", "--quiet"]


def read_run(path: Path) -> dict[str, int]:
    return {line.split(",")[0]: int(line.split(",")[1]) for line in path.read_text().splitlines()}


def test_task2_end_to_end(task2_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t2"
    args = [
        "run",
        "task2",
        str(task2_data),
        "--out",
        str(out),
        "--method",
        "gmm",
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
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
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
                "--method",
                "gmm",
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
                "--method",
                "gmm",
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


def test_task2_defaults_use_the_labels(task2_data: Path, tmp_path: Path, capsys) -> None:
    """No flags: train/<group>/ is there, so the way to attribute and the features are chosen
    by cross-validation on it, and the table says what was tried."""
    out = tmp_path / "labels"
    assert main(["run", "task2", str(task2_data), "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = summary["selection"]["candidates"]
    assert {c["method"] for c in table} == {"classify", "semi"}
    assert {"residual", "spectrum", "pixels:16"} <= {c["features"] for c in table}
    chosen = [c for c in table if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["features"] == summary["features"]
    assert summary["mode"] == "auto" and summary["groups"] == sorted(GENERATORS)
    assert summary["cluster_groups"] == {str(j): g for j, g in enumerate(sorted(GENERATORS))}
    truth = read_table(task2_data / "truth.csv", "cluster")
    assert chosen[0]["ari"] > 0.9
    assert summary["verdict"].startswith(f"{len(truth)} test slices attributed to 3 labelled")
    # 12 labelled slices: no p-value is small enough for the 5 % open set, and it says so.
    assert any("no test slice can be called unknown" in w for w in summary["warnings"])
    assert "too few labelled slices for the open set" in summary["verdict"]
    run = read_run(out / "clusters.csv")
    ids = sorted(truth)
    assert adjusted_rand_score([truth[i] for i in ids], [run[i] for i in ids]) > 0.9
    assert validate_run(out / "clusters.csv", "task2", ids) == []
    assert read_run(out / "open_set.csv") == run  # nothing unknown
    # The saved classifier scores an archive like any model.
    from ctfp.runs.models import load_model

    saved = load_model(out)
    assert saved.task == "task2" and saved.kind in ("classify", "gmm")
    from ctfp.runs.folder import embeddings_dir

    shards = embeddings_dir(out, summary["features"])
    assert main(["score", str(out), str(shards), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    import pyarrow.parquet as pq

    scored = pq.read_table(tmp_path / "s").to_pylist()
    by_id = {r["id"][len("test/") :]: r["label"] for r in scored if r["id"].startswith("test/")}
    assert by_id == run  # the archive scored as the run attributed its test slices


@pytest.fixture(scope="module")
def open_set_data(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Every lung PNG through one of the three "generators"; 20 labelled slices of blur and of
    noise in train/, none of poster (the generator nobody labelled); the rest are test/."""
    from PIL import Image

    from tests.conftest import LUNG

    root = tmp_path_factory.mktemp("open_set")
    rng = np.random.default_rng(1)
    truth, labelled = {}, dict.fromkeys(GENERATORS, 0)
    for n, path in enumerate(sorted((LUNG / "png").glob("*.png"))):
        g = list(GENERATORS)[n % 3]
        img = GENERATORS[g](Image.open(path), rng)
        if g != "poster" and labelled[g] < 20:
            labelled[g] += 1
            folder = root / "train" / g
        else:
            folder = root / "test"
            truth[path.stem] = n % 3
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{path.stem}.png")
    return root, truth


def test_task2_a_generator_nobody_labelled_is_unknown(
    open_set_data: tuple[Path, dict[str, int]], tmp_path: Path, capsys
) -> None:
    """The open set, tested by leaving one generator out of train/: its test slices get -1
    in open_set.csv, more than chance explains, so with --k auto they form a cluster."""
    data, truth = open_set_data
    out = tmp_path / "open"
    args = ["run", "task2", str(data), "--out", str(out), "--quiet", "--json"]
    assert main([*args, "--features", "residual", "--method", "classify"]) == 0
    summary = json.loads(capsys.readouterr().out)
    open_set = read_run(out / "open_set.csv")
    new = [i for i in truth if truth[i] == 2]  # poster
    known = [i for i in truth if truth[i] != 2]
    assert np.mean([open_set[i] == -1 for i in new]) > 0.8
    assert np.mean([open_set[i] == -1 for i in known]) < 0.15
    assert summary["open_set"]["unknown"] == sum(v == -1 for v in open_set.values())
    assert summary["open_set"]["extra_group"] and summary["k"] == 3
    clusters = read_run(out / "clusters.csv")
    assert {clusters[i] for i in open_set if open_set[i] == -1} == {2}
    assert summary["cluster_groups"] == {"0": "blur", "1": "noise", "2": "unknown"}
    assert "likely a generator not in train/" in summary["verdict"]
    assert validate_run(out / "clusters.csv", "task2", sorted(truth)) == []


def test_task2_python_api_records_its_settings(task2_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "api"
    settings = Task2Settings(method="gmm", k=3, pca=4, covariance_type="diag", device="cpu")
    embed = EmbedSettings(features="residual", device="cpu")
    summary = run_task2(task2_data, out, settings, embed=embed, progress=False)
    assert summary["k"] == 3 and summary["pca"] == 4
    recorded = json.loads((out / "summary.json").read_text())["settings"]
    assert Task2Settings.from_dict(recorded["task2"]) == settings
    assert EmbedSettings.from_dict(recorded["embed"]) == embed
    assert run_task2(task2_data, out, embed=embed, progress=False, **settings.to_dict())["k"] == 3


def test_doubtful_fits_are_said_in_words() -> None:
    from ctfp.attribution.clustering import cluster_slices
    from ctfp.runs.task2 import fit_warnings
    from tests.conftest import blobs

    x, _ = blobs(200, 4, k=4, spread=6.0)
    settings = Task2Settings(k="auto", k_range=(4, 6), covariance_type="diag", device="cpu")
    result = cluster_slices(x, settings)
    sizes = np.bincount(result.labels, minlength=result.k).tolist()
    said = fit_warnings(result, [*sizes[:-1], 0], settings, x.shape)
    assert any("hold no test slice" in w for w in said)
    if result.k == 4:
        assert any("the edge of the range searched (4-6)" in w for w in said)
    full = Task2Settings(k=2, covariance_type="full", device="cpu")
    assert any("singular" in w for w in fit_warnings(result, sizes, full, (50, 2048)))
    fixed_settings = Task2Settings(k=4, covariance_type="diag", device="cpu")
    fixed = cluster_slices(x, fixed_settings)
    fixed_sizes = np.bincount(fixed.labels, minlength=4).tolist()
    assert fit_warnings(fixed, fixed_sizes, fixed_settings, x.shape) == []
