"""Task 1 end to end on a small ImageCLEF-style folder (CLI and Python API), then evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from ctfp.cli import main
from ctfp.embed.settings import EmbedSettings
from ctfp.evaluate import read_table, validate_run
from ctfp.membership.settings import Task1Settings
from ctfp.runs.task1 import run_task1
from ctfp.settings import SettingsError

EMBED = ["--weights", "random", "--image-size", "64", "--quiet"]
SEED = ["--method", "centroid", *EMBED]  # the seed paper's method


def read_run(path: Path) -> dict[str, int]:
    return {line.split(",")[0]: int(line.split(",")[1]) for line in path.read_text().splitlines()}


def test_task1_end_to_end(task1_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t1"
    assert main(["run", "task1", str(task1_data), "--out", str(out), "--k", "4", *SEED]) == 0
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
    evaluate = ["evaluate", "task1", str(out / "run.csv"), "--truth", str(task1_data / "truth.csv")]
    assert main(evaluate) == 0
    printed = capsys.readouterr().out.strip().splitlines()  # the table, for people
    assert any(line.startswith("f1 ") for line in printed) and "{" not in printed[-1]
    assert main([*evaluate, "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()  # one JSON line, for scripts
    assert len(printed) == 1
    metrics = json.loads(printed[0])
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
    assert main(["run", "task1", str(task1_data), "--out", str(out), "--k", "2", *SEED]) == 0
    shards = sorted((out / "embeddings").glob("part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert (
        main(["run", "task1", str(task1_data), "--out", str(out), "--k", "1,2,4", *SEED, "--json"])
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
        main(["run", "task1", str(task1_data), "--out", str(tmp_path / "o"), "--k", "64", *SEED])
        == 2
    )
    assert "k=64 needs at least 64" in capsys.readouterr().err
    assert not (tmp_path / "o" / "embeddings").exists()  # refused before embedding anything


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
    evaluate = ["evaluate", "task1", str(out / "run.csv"), "--truth", str(task1_data / "truth.csv")]
    assert main([*evaluate, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["roc_auc"] > 0.8 and metrics["kappa"] > 0.3


def test_task1_python_api_with_settings_objects(task1_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "api"
    settings = Task1Settings.with_options(method="proximity", metric="l2", seed=3, device="cpu")
    embed = EmbedSettings(features="pixels", device="cpu")
    summary = run_task1(task1_data, out, settings, embed=embed, progress=False)
    assert summary["method"] == "proximity" and summary["metric"] == "l2"
    recorded = json.loads((out / "summary.json").read_text())["settings"]
    assert Task1Settings.from_dict(recorded["task1"]) == settings
    assert EmbedSettings.from_dict(recorded["embed"]) == embed
    assert recorded["engine"] == {"engine": "local", "actors": None, "ray_address": None}
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["kind"] == "proximity" and model["settings"]["task1"]["options"]["metric"] == "l2"
    # Keyword overrides: Task1Settings fields and the method's options.
    again = run_task1(
        task1_data, out, embed=embed, method="proximity", metric="l2", seed=3, device="cpu",
        progress=False,
    )  # fmt: skip
    assert again["runs"] == summary["runs"]
    with pytest.raises(SettingsError, match="not an option of method 'centroid'"):
        run_task1(task1_data, out, embed=embed, method="centroid", metric="l2", progress=False)


def test_task1_cli_refuses_options_of_another_method(task1_data: Path, tmp_path: Path, capsys):
    args = ["run", "task1", str(task1_data), "--out", str(tmp_path / "o"), *EMBED]
    assert main([*args, "--method", "centroid", "--metric", "l2"]) == 2
    assert "metric: not an option of method 'centroid'" in capsys.readouterr().err
    assert main([*args, "--metric", "l2"]) == 2
    assert "metric: not an option of method 'auto'" in capsys.readouterr().err
    assert main([*args, "--method", "proximity", "--k", "1,2"]) == 2
    assert "method 'proximity' has no k" in capsys.readouterr().err
    assert main([*args, "--method", "proximity", "--recall-target", "nan"]) == 2
    assert "recall_target must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_task1_defaults_choose_by_cross_validation(task1_data: Path, tmp_path: Path, capsys):
    # No --method, no --features: every feature type and candidate scorer is cross-validated
    # on the training reals, and the winner writes the run (one repeat of the folds: the
    # grid's 108 candidates x 15 fits are the test's cost, and the rule is the same).
    out = tmp_path / "auto"
    args = ["run", "task1", str(task1_data), "--out", str(out), *EMBED, "--json", "--report"]
    args += ["--repeats", "1", "--permutations", "19"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    selection = summary["selection"]
    tried = selection["features_tried"]
    assert tried == ["pixels:16", "pixels:32", "pixels", "residual", "spectrum", "resnet50"]
    table = selection["candidates"]
    assert {c["features"] for c in table} == set(tried)
    methods = {c["method"] for c in table}  # the scores that examine the generator's output
    assert {"proximity", "density", "counting", "reconstruction"} <= methods
    assert "centroid" not in methods and summary["evidence"] == "generator"
    chosen = [c for c in table if c["chosen"]]
    assert len(chosen) == 1 and chosen[0] == selection["chosen"]
    assert summary["method"] == chosen[0]["method"] and summary["features"] == chosen[0]["features"]
    singles = [c for c in table if c["method"] != "ensemble"]
    top = max(singles, key=lambda c: c["roc_auc"] or 0)
    if chosen[0]["method"] == "ensemble":  # the candidates tied with the best, on its features
        members = chosen[0]["params"]["members"]
        tied = [c for c in singles if c["within_one_se"] and c["features"] == top["features"]]
        assert len(members) == len(tied) > 1 and chosen[0]["features"] == top["features"]
        assert members[0]["method"] == top["method"] and members[0]["params"] == top["params"]
    else:
        assert (chosen[0]["features"], chosen[0]["method"]) == (top["features"], top["method"])
        assert chosen[0]["roc_auc"] >= top["roc_auc"] - chosen[0]["gap_se"]
    assert selection["reason"] and selection["settings"]["folds"] == 5
    assert selection["settings"]["repeats"] == 1
    test = selection["permutation"]  # the whole choice on shuffled labels decides
    assert test["permutations"] == 19 and test["p_value"] == 0.05  # the least 19 can show
    assert summary["verdict"].startswith("Evidence of memorisation: p = 0.05 (19 label shuffles")
    held = selection["heldout"]  # the whole choice repeated on halves: quoted, with its range
    assert held["halves"] == 20 and held["roc_auc_95"][0] <= held["roc_auc"]
    assert f"held-out ROC-AUC {held['roc_auc']:.2f}" in summary["verdict"]
    assert selection["chosen"]["heldout_roc_auc"] == held["roc_auc"]
    # The generated set holds noisy copies of the used slices: the chosen scorer sees it.
    truth = str(task1_data / "truth.csv")
    assert main(["evaluate", "task1", str(out / "run.csv"), "--truth", truth, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["roc_auc"] > 0.8 and metrics["kappa"] > 0.3
    # The saved model is the winner, on the winner's embeddings: `ctfp score` reproduces the run.
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["kind"] == summary["method"]
    assert model["settings"]["chosen"]["features"] == summary["features"]
    shards = out / ("embeddings-" + summary["features"].replace(":", ""))
    if summary["features"] == "resnet50":
        shards = out / "embeddings"
    assert main(["score", str(out), str(shards), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    import duckdb

    got = dict(duckdb.sql(f"SELECT id, label FROM '{tmp_path / 's'}/*.parquet'").fetchall())
    assert all(got[f"test/{i}"] == v for i, v in read_run(out / "run.csv").items())
    html = (out / "report.html").read_text()
    assert '<section id="selection">' in html and "within one standard error" in html
    # The chosen scorer's out-of-fold scores of the training reals, and what the report makes
    # of them: the three distributions, and each evidence score's percentile among the known
    # non-members.
    train = [r.split(",") for r in (out / "train_scores.csv").read_text().splitlines()[1:]]
    assert sum(r[2] == "1" for r in train) == summary["n_used"]
    assert sum(r[2] == "0" for r in train) == summary["n_not_used"]
    assert all(r[0].startswith("train/") for r in train)
    assert 'alt="score distributions of known members, known non-members and test slices"' in html
    non_members = np.array([float(r[1]) for r in train if r[2] == "0"])
    test_scores = [
        float(r.split(",")[1]) for r in (out / "scores.csv").read_text().splitlines()[1:]
    ]
    evidence = html.split('id="evidence"')[1]
    assert "above this share of known non-members" in evidence
    share = (non_members < max(test_scores)).mean()
    first_row = evidence.split("<tr><td>1</td>")[1].split("</tr>")[0]
    assert f"<td>{share:.0%}</td>" in first_row


def test_auto_leaves_out_resnet50_only_when_imagenet_weights_do_not_load(capfd) -> None:
    from ctfp.runs.task1 import auto_features

    assert auto_features(EmbedSettings(features="pixels")) == (["pixels"], {})
    tried, skipped = auto_features(EmbedSettings(features="auto", weights="random"))
    assert tried[-1] == "resnet50" and not skipped
    tried, skipped = auto_features(EmbedSettings(features="auto"))  # imagenet: offline here
    assert ("resnet50" in tried) != ("resnet50" in skipped)
    if skipped:
        assert "ImageNet" in skipped["resnet50"]
    # torch.hub announces downloads on stdout: nothing of the probe may reach it (--json).
    assert capfd.readouterr().out == ""


def test_auto_features_need_auto_method(task1_data: Path, tmp_path: Path, capsys) -> None:
    args = ["run", "task1", str(task1_data), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--method", "proximity", "--features", "auto"]) == 2
    assert "features 'auto' are chosen by --method auto" in capsys.readouterr().err
    assert main(["embed", str(task1_data / "test"), "--out", str(tmp_path / "e"),
                 "--features", "auto", "--quiet"]) == 2  # fmt: skip
    assert "embedding needs one" in capsys.readouterr().err


def test_non_finite_embeddings_in_the_run_folder_are_named(
    task1_data: Path, tmp_path: Path, capsys
):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "o"
    args = ["run", "task1", str(task1_data), "--out", str(out), "--method", "centroid"]
    args += ["--features", "pixels:16", "--quiet"]
    assert main(args) == 0
    shard = sorted((out / "embeddings-pixels16").glob("part-*.parquet"))[0]
    table = pq.read_table(shard)
    values = np.array(table.column("embedding").to_pylist(), dtype=np.float16)
    values[3, 5] = np.nan
    column = pa.array(list(values), type=table.schema.field("embedding").type)
    damaged = table.set_column(table.schema.get_field_index("embedding"), "embedding", column)
    pq.write_table(damaged.replace_schema_metadata(table.schema.metadata), shard)
    # As if the model itself had given the NaN: the commit record names the part as written.
    record = shard.parent / "_manifest.json"
    doc = json.loads(record.read_text())
    for part in doc["parts"]:
        part["bytes"] = (shard.parent / part["name"]).stat().st_size
    record.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "non-finite embeddings" in err and repr(table.column("id")[3].as_py()) in err
    assert len(err.strip().splitlines()) == 1


def test_known_non_members_only(task1_data: Path, tmp_path: Path, capsys) -> None:
    # An audit with no member labels: train/not_used/ and generated/ only.
    import shutil

    data = tmp_path / "data"
    for part in ("train/not_used", "generated", "test"):
        shutil.copytree(task1_data / part, data / part)
    out = tmp_path / "o"
    assert main(["run", "task1", str(data), "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "non-members only" and summary["n_used"] == 0
    assert summary["calibrate"] == "fpr:0.05"
    # auto measured every score that needs no members by how far the test slices stand above
    # the known non-members held out, and keeps the default unless one beats it by one SE.
    choice = summary["choice_without_members"]
    assert choice["n_not_used"] == summary["n_not_used"] and choice["n_test"] == summary["n_test"]
    rows = {r["label"]: r for r in choice["candidates"]}
    default = rows[choice["default"]]
    assert len(rows) > 10 and choice["default"] == "pixels / proximity (metric=l2, reference=True)"
    best = max(rows.values(), key=lambda r: r["test_vs_non_members_auc"])
    assert choice["chosen"] == (choice["default"] if default["within_one_se"] else best["label"])
    assert choice["chosen"].startswith(summary["features"] + " / " + summary["method"])
    assert any(f"and ran {choice['chosen']}" in w for w in summary["warnings"])
    assert summary["verdict"].startswith("Evidence not measured (no known members")
    n = summary["n_not_used"]
    assert (
        f"false-positive rate of at most 5% for new non-members (bounded on the {n} known"
        in (summary["verdict"])
    )
    # The promise checked on the known non-members held out (5 folds, each fitted without it).
    check = summary["calibration_check"]
    assert check["of"] == n and check["folds"] == 5 and 0 <= check["flagged"] <= n // 10, check
    assert (
        f"held out in 5 folds, the threshold flagged {check['flagged']} of {n}"
        in (summary["verdict"])
    )
    # The threshold flags at most 5 % of the known non-members; the signal is still seen.
    from ctfp.runs.models import load_model

    saved = load_model(out, device="cpu").model
    assert (saved.train_scores_ >= saved.threshold_).mean() <= 0.05
    truth = str(task1_data / "truth.csv")
    assert main(["evaluate", "task1", str(out / "run.csv"), "--truth", truth, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["roc_auc"] > 0.7
    # A method that needs known members says so.
    assert main(["run", "task1", str(data), "--out", str(tmp_path / "c"), "--method", "centroid",
                 "--quiet"]) == 2  # fmt: skip
    assert "needs known members (train/used/)" in capsys.readouterr().err
    # Too few known non-members to bound 5 %: refused, saying what rate they can bound.
    for extra in sorted((data / "train" / "not_used").iterdir())[10:]:
        extra.unlink()
    assert main(["run", "task1", str(data), "--out", str(tmp_path / "few"), "--quiet"]) == 2
    assert "needs at least 19 not-used (0) training slices" in capsys.readouterr().err
    assert not list((tmp_path / "few").glob("embeddings*"))  # refused before embedding


def test_the_verdict_says_chance_when_the_interval_reaches_it() -> None:
    from ctfp.runs.task1 import verdict

    chosen = {"roc_auc": 0.58, "roc_auc_95": [0.46, 0.7]}
    summary = {
        "n_test": 60,
        "calibrate": "balanced",
        "runs": {"4": {"predicted_used": 31}},
        "selection": {"chosen": chosen, "n_labelled": 40, "candidates": [chosen] * 9},
    }
    text = verdict(summary)
    assert text.startswith("No evidence of memorisation distinguishable from chance")
    assert "0.58 [0.46, 0.70] on 40 labelled" in text and "31 of 60" in text
    chosen["roc_auc_95"] = [0.61, 0.8]
    assert verdict(summary).startswith("Evidence of memorisation") and "best of 9" in verdict(
        summary
    )
    # Since 0.4 the quoted estimate is the whole choice held out, and it decides.
    summary["selection"]["heldout"] = {"roc_auc": 0.55, "roc_auc_95": [0.41, 0.69], "halves": 20}
    text = verdict(summary)
    assert text.startswith("No evidence of memorisation distinguishable from chance: held-out")
    assert "0.55 [0.41, 0.69]" in text and "own cross-validated 0.58 is optimistic" in text
    summary["selection"]["heldout"] = {"roc_auc": 0.7, "roc_auc_95": [0.56, 0.81], "halves": 20}
    assert verdict(summary).startswith("Evidence of memorisation: held-out ROC-AUC 0.70")
    # With the permutation test, its p-value decides (the range stays, as how much).
    summary["selection"]["permutation"] = {"p_value": 0.3, "permutations": 99}
    text = verdict(summary)
    assert text.startswith("No evidence of memorisation distinguishable from chance: p = 0.3")
    assert "held-out ROC-AUC 0.70 [0.56, 0.81]" in text
    summary["selection"]["heldout"]["roc_auc_95"] = [0.45, 0.81]
    summary["selection"]["permutation"] = {"p_value": 0.02, "permutations": 99}
    assert verdict(summary).startswith("Evidence of memorisation: p = 0.02 (99 label shuffles")
    summary["selection"]["permutation"] = {"p_value": 0.1, "permutations": 9}
    assert "9 label shuffles cannot show p below 0.05" in verdict(summary)
    del summary["selection"]["heldout"], summary["selection"]["permutation"]
    # The seed method compares real slices only: never a word about memorisation.
    for low, start in ((0.61, "Resemblance to"), (0.46, "No resemblance to")):
        chosen["roc_auc_95"] = [low, 0.8]
        text = verdict({**summary, "evidence": "known members"})
        assert text.startswith(start) and "memorisation" not in text
        assert "the generator's output was not examined" in text


def test_a_verdict_about_the_generator_needs_its_output(
    task1_data: Path, tmp_path: Path, capsys
) -> None:
    """Without generated slices there is no evidence about the generator: auto (and any
    method that needs them) is refused before anything is embedded, saying what to add; the
    seed method, named, answers about resemblance to the known members and says so."""
    from ctfp.report.audit import audit_record
    from ctfp.report.audit_md import audit_paragraph

    data = tmp_path / "data"
    data.mkdir()
    for part in ("train", "test"):
        (data / part).symlink_to(task1_data / part, target_is_directory=True)
    for generated, said in ((None, "is missing"), ([], "holds no image file")):
        if generated is not None:
            (data / "generated").mkdir()
            (data / "generated" / "notes.txt").write_text("not a slice")
        for method in ([], ["--method", "proximity"]):
            out = tmp_path / "o"
            assert main(["run", "task1", str(data), "--out", str(out), *method, *EMBED]) == 2
            err = capsys.readouterr().err
            assert f"generated/ {said}" in err and "--method centroid" in err
            assert not (out / "embeddings").exists()  # refused before embedding anything
    out = tmp_path / "seed"
    args = ["run", "task1", str(data), "--out", str(out), *SEED, "--features", "pixels:16"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evidence"] == "known members" and summary["n_generated"] == 0
    text = summary["verdict"]
    assert text.startswith("Resemblance to the known members") or text.startswith("No resemblance")
    assert "not evidence about the generator" in text and "memorisation" not in text
    record = audit_record(out)
    assert record["evidence"]["examines_generator"] is False
    assert "The generator's output was not examined" in audit_paragraph(record)


def test_a_wrong_layout_is_refused_before_any_weights_are_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctfp.embed import backbone
    from ctfp.exceptions import InputError

    def fetched() -> None:
        raise AssertionError("the ImageNet weights were probed before the layout was checked")

    monkeypatch.setattr(backbone, "imagenet_unavailable", fetched)
    (tmp_path / "data" / "train" / "used").mkdir(parents=True)
    with pytest.raises(InputError, match=r"lacks train/not_used/, test/"):
        run_task1(tmp_path / "data", tmp_path / "out", progress=False)  # features auto
    assert not (tmp_path / "out").exists()
