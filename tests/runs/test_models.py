"""Saved models: `ctfp run` saves OUT/model, `ctfp score` streams an archive through it and gives
the same scores and labels as the run itself; mismatched embeddings and non-models are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ctfp.cli import main
from ctfp.cluster.gmm import GaussianMixture
from ctfp.evaluate import read_table
from ctfp.exceptions import InputError
from ctfp.index.ann import ApproximateIndex
from ctfp.index.flat import FlatIndex
from ctfp.membership.proximity import ProximityMembership
from ctfp.runs.models import load_model, save_model

FAST = ["--features", "pixels", "--quiet"]


def scored(folder: Path) -> dict[str, tuple[float, int]]:
    rows = duckdb.sql(f"SELECT id, score, label FROM '{folder}/*.parquet'").fetchall()
    return {i: (s, lab) for i, s, lab in rows}


@pytest.mark.parametrize("method", ["centroid", "proximity"])
def test_score_reproduces_the_task1_run(
    task1_small: Path, tmp_path: Path, method: str, capsys
) -> None:
    out = tmp_path / "run"
    args = ["run", "task1", str(task1_small), "--out", str(out), "--method", method, *FAST]
    assert main(args) == 0
    assert (out / "model" / "model.json").is_file()
    capsys.readouterr()
    shards = out / "embeddings-pixels"
    code = main(["score", str(out), str(shards), "--out", str(tmp_path / "s"), "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "task1" and summary["kind"] == method
    got = scored(tmp_path / "s")
    n_rows = duckdb.sql(f"SELECT count(*) FROM '{shards}/*.parquet'").fetchall()[0][0]
    assert summary["rows"] == len(got) == n_rows == 63 + summary_generated(out)  # 188 / 3
    expected_scores = read_table(out / "scores.csv", "score")
    expected_labels = read_table(out / "run.csv", "label")
    for i, score in expected_scores.items():
        s, label = got[f"test/{i}"]
        assert s == pytest.approx(float(score), rel=1e-4, abs=1e-5)
        assert label == int(expected_labels[i])


def summary_generated(out: Path) -> int:
    return json.loads((out / "summary.json").read_text())["n_generated"]


@pytest.mark.slow
def test_score_reproduces_the_task2_clusters(task2_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["run", "task2", str(task2_data), "--out", str(out), "--pca", "8", "--k", "3", *FAST]
    assert main(args) == 0
    assert main(["score", str(out / "model"), str(out / "embeddings-pixels"), "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0  # fmt: skip
    got = scored(tmp_path / "s")
    clusters = read_table(out / "clusters.csv", "cluster")
    assert clusters and all(got[f"test/{i}"][1] == int(c) for i, c in clusters.items())
    assert all(1 / 3 - 1e-6 <= s <= 1 + 1e-6 for s, _ in got.values())


@pytest.mark.slow
def test_score_refuses_other_embeddings_and_non_models(
    task1_small: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert (
        main(["run", "task1", str(task1_small), "--out", str(out), "--method", "proximity", *FAST])
        == 0
    )
    # Same slices, other features: the model must not score them.
    other = tmp_path / "spectrum"
    assert main(["embed", str(task1_small / "test"), "--out", str(other), "--features",
                 "spectrum", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", str(out), str(other), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fitted on other embeddings" in err and "model" in err
    assert not list((tmp_path / "s").glob("*.parquet"))
    assert main(["score", str(tmp_path), str(other), "--out", str(tmp_path / "s2")]) == 2
    assert "not a saved model" in capsys.readouterr().err


def test_gmm_from_params_predicts_like_the_fitted_one() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(m, 1.0, (100, 5)) for m in (0.0, 4.0, 8.0)]) + 1000.0
    for cov in ("full", "diag", "tied", "spherical"):
        fitted = GaussianMixture(3, covariance_type=cov, random_state=0, device="cpu").fit(x)
        rebuilt = GaussianMixture.from_params(
            fitted.weights_, fitted.means_, fitted.covariances_, covariance_type=cov, device="cpu"
        )
        np.testing.assert_allclose(rebuilt.predict_proba(x), fitted.predict_proba(x), atol=1e-8)
        np.testing.assert_allclose(rebuilt.score_samples(x), fitted.score_samples(x), rtol=1e-9)
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixture.from_params([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 3)), device="cpu")


def test_indexes_round_trip_through_bytes() -> None:
    rng = np.random.default_rng(0)
    base, queries = rng.normal(size=(2000, 16)), rng.normal(size=(50, 16))
    for metric in ("l1", "l2"):
        flat = FlatIndex(16, metric=metric, device="cpu").add(base)
        again = FlatIndex.from_bytes(flat.to_bytes(), device="cpu")
        assert again.metric == metric and again.ntotal == 2000
        for a, b in zip(flat.search(queries, 3), again.search(queries, 3), strict=True):
            np.testing.assert_array_equal(a, b)
    for kind in ("ivf", "hnsw"):
        approx = ApproximateIndex(16, kind=kind, metric="l2").add(base)
        again = ApproximateIndex.from_bytes(approx.to_bytes())
        assert again.kind == kind
        for a, b in zip(approx.search(queries, 3), again.search(queries, 3), strict=True):
            np.testing.assert_array_equal(a, b)


def test_saved_proximity_model_with_an_ivf_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    generated, train = rng.normal(size=(3000, 16)), rng.normal(size=(60, 16))
    model = ProximityMembership(metric="l2", index="ivf", device="cpu").fit(
        train, np.arange(60) % 2, generated
    )
    save_model(model, tmp_path / "m", identity={"model": "x", "dim": 16})
    saved = load_model(tmp_path / "m", device="cpu")
    queries = rng.normal(size=(40, 16))
    np.testing.assert_allclose(saved.model.score_samples(queries), model.score_samples(queries))
    assert saved.model.threshold_ == model.threshold_ and saved.identity["dim"] == 16


def test_tampered_models_are_refused_with_one_line(tmp_path: Path, memorised_model) -> None:
    model, _ = memorised_model
    save_model(model, tmp_path / "m", identity={"model": "x", "dim": 16})
    description = json.loads((tmp_path / "m" / "model.json").read_text())
    broken = dict(description)
    del broken["params"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match=r"is not a complete proximity model .*KeyError"):
        load_model(tmp_path / "m", device="cpu")
    (tmp_path / "m" / "model.json").write_text(json.dumps({**description, "kind": ["x"]}))
    with pytest.raises(InputError, match="unknown model kind"):
        load_model(tmp_path / "m", device="cpu")
    # Corrupt FAISS bytes: FAISS's RuntimeError becomes the same one-line refusal.
    (tmp_path / "m" / "model.json").write_text(json.dumps(description))
    with np.load(tmp_path / "m" / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["generated_index"] = arrays["generated_index"][:100]
    np.savez(tmp_path / "m" / "arrays.npz", **arrays)
    with pytest.raises(InputError, match=r"is not a complete proximity model .*RuntimeError"):
        load_model(tmp_path / "m", device="cpu")


@pytest.fixture
def memorised_model():
    rng = np.random.default_rng(0)
    generated, train = rng.normal(size=(300, 16)), rng.normal(size=(60, 16))
    model = ProximityMembership(metric="l2", index="hnsw", device="cpu")
    return model.fit(train, np.arange(60) % 2, generated), train


def test_the_decoding_window_is_part_of_the_identity(tmp_path: Path, capsys) -> None:
    # A lung-window model must not score bone-window shards, and the two never share a folder.
    from tests.conftest import LUNG

    dicoms = sorted((LUNG / "dicom" / "A0001" / "s2").glob("*.dcm"))[:16]
    data = tmp_path / "data"
    for n, path in enumerate(dicoms):
        role = ["train/used", "train/not_used", "generated", "test"][n % 4]
        (data / role).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / role / path.name)
    out = tmp_path / "run"
    run = ["run", "task1", str(data), "--out", str(out), "--method", "centroid", "--k", "1"]
    assert main([*run, "--window", "lung", *FAST]) == 0
    test = str(data / "test")
    for window in ("lung", "bone"):
        assert main(["embed", test, "--out", str(tmp_path / window), "--window", window,
                     *FAST]) == 0  # fmt: skip
    capsys.readouterr()
    score = ["score", str(out), "--quiet", "--out"]
    assert main([*score, str(tmp_path / "s-lung"), str(tmp_path / "lung")]) == 0
    assert main([*score, str(tmp_path / "s-bone"), str(tmp_path / "bone")]) == 2
    err = capsys.readouterr().err
    assert "fitted on other embeddings" in err and "decode" in err and "hu:400,1800" in err
    assert not list((tmp_path / "s-bone").glob("*.parquet"))
    # Lung and bone shards side by side (copied into one folder by hand, no commit record):
    # refused, not mixed.
    (tmp_path / "mixed").mkdir()
    shutil.copy(tmp_path / "lung" / "part-00000.parquet", tmp_path / "mixed" / "part-00000.parquet")
    shutil.copy(tmp_path / "bone" / "part-00000.parquet", tmp_path / "mixed" / "part-00001.parquet")
    assert main(["cluster", str(tmp_path / "mixed"), "--out", str(tmp_path / "c"), "--k", "2",
                 "--quiet"]) == 2  # fmt: skip
    assert "cannot be mixed (decode" in capsys.readouterr().err
    # A model saved before the window was recorded cannot vouch for any shards.
    description = json.loads((out / "model" / "model.json").read_text())
    del description["identity"]["decode"]
    saved = tmp_path / "old-model"
    shutil.copytree(out / "model", saved)
    (saved / "model.json").write_text(json.dumps(description))
    old = ["score", str(saved), str(tmp_path / "lung"), "--out", str(tmp_path / "s-old")]
    assert main([*old, "--quiet"]) == 2
    assert "did not record how the images were decoded" in capsys.readouterr().err


@pytest.fixture(scope="module")
def centroid_run(task1_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One centroid run for the tests below, each of which damages its own copy of the model."""
    out = tmp_path_factory.mktemp("centroid") / "run"
    args = ["run", "task1", str(task1_small), "--out", str(out), "--method", "centroid", *FAST]
    assert main(args) == 0
    return out


def copied_model(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A task 1 model folder copied out of its run folder (no run to vouch for it), and shards."""
    model = tmp_path / "elsewhere" / "centroid-model"
    shutil.copytree(run / "model", model)
    return model, run / "embeddings-pixels"


def test_a_truncated_arrays_file_is_refused_with_one_line(
    centroid_run: Path, tmp_path: Path, capsys
) -> None:
    model, shards = copied_model(centroid_run, tmp_path)
    whole = (model / "arrays.npz").read_bytes()
    capsys.readouterr()
    for size in (0, 10, len(whole) // 2, len(whole) - 1):
        (model / "arrays.npz").write_bytes(whole[:size])
        code = main(["score", str(model), str(shards), "--out", str(tmp_path / "s"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (size, err)
        assert str(model / "arrays.npz") in err[0] and "cannot be read" in err[0]
    assert not list((tmp_path / "s").glob("*.parquet"))


@pytest.mark.parametrize("params", ["oops", [1, 2], 3])
def test_params_of_the_wrong_type_are_refused_with_one_line(
    centroid_run: Path, tmp_path: Path, capsys, params: object
) -> None:
    model, shards = copied_model(centroid_run, tmp_path)
    description = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**description, "params": params}))
    capsys.readouterr()
    code = main(["score", str(model), str(shards), "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{model} is not a complete centroid model" in err[0]
    with pytest.raises(InputError, match="is not a complete centroid model"):
        load_model(model, device="cpu")


OLD_MODELS = Path(__file__).parent / "data" / "models-0.3"


@pytest.mark.parametrize("name", sorted(p.name for p in OLD_MODELS.iterdir()))
def test_a_model_saved_by_ctfp_0_3_loads_and_answers_as_it_did(name: str) -> None:
    saved = load_model(OLD_MODELS / name, device="cpu")
    with np.load(OLD_MODELS / name / "expected.npz", allow_pickle=False) as npz:
        expected = {k: npz[k] for k in npz.files}
    model, q = saved.model, expected["query"]
    if "scores" in expected:  # a membership method
        np.testing.assert_allclose(model.score_samples(q), expected["scores"], rtol=1e-6)
        np.testing.assert_array_equal(model.predict(q), expected["predict"])
    elif "density" in expected:  # a group classifier
        np.testing.assert_allclose(model.predict_proba(q), expected["proba"], rtol=1e-6)
        np.testing.assert_allclose(model.log_density(q), expected["density"], rtol=1e-6)
    else:  # a mixture
        np.testing.assert_array_equal(model.predict(q), expected["predict"])
    # Saved again by this version, it answers the same.
    params, arrays = model.to_state()
    again = type(model).from_state(json.loads(json.dumps(params)), arrays, device="cpu")
    answer = again.score_samples(q) if "scores" in expected else again.predict(q)
    reference = model.score_samples(q) if "scores" in expected else model.predict(q)
    np.testing.assert_allclose(answer, reference, rtol=1e-6)
