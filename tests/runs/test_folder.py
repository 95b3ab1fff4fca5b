"""The run-folder format: the summary is the run's commit record; interrupted or altered runs
are refused by every reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctfp.embed.settings import EmbedSettings
from ctfp.exceptions import InputError
from ctfp.report import write_report
from ctfp.runs.folder import begin_commit, read_summary
from ctfp.runs.models import load_model
from ctfp.runs.task1 import run_task1

FAST = EmbedSettings(features="pixels:16", device="cpu")


def test_a_run_is_committed_by_its_summary(task1_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_task1(task1_small, out, embed=FAST, method="centroid", k=(1, 2), progress=False)
    files = json.loads((out / "summary.json").read_text())["files"]
    assert {"k1/run.csv", "k2/scores.csv", "k2/model/model.json", "k1/model/arrays.npz"} <= set(
        files
    )
    assert read_summary(out)["task"] == "task1"
    load_model(out / "k1" / "model", device="cpu")
    # A later run changed a file the summary lists (or was killed while writing it): refused.
    (out / "k1" / "run.csv").write_text("x,1\n")
    with pytest.raises(InputError, match=r"k1/run.csv is not the file the run recorded"):
        read_summary(out)
    with pytest.raises(InputError, match="is not the file the run recorded"):
        load_model(out / "k2" / "model", device="cpu")
    with pytest.raises(InputError, match="is not the file the run recorded"):
        write_report(out)


def test_an_interrupted_rerun_is_refused_not_mixed(task1_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_task1(task1_small, out, embed=FAST, method="proximity", progress=False)
    begin_commit(out)  # what a rerun does before it writes its files; then it is killed
    (out / "run.csv").write_text("x,1\n")
    for read in (read_summary, lambda o: load_model(o, device="cpu"), write_report):
        with pytest.raises(InputError, match="was interrupted before it finished"):
            read(out)
    run_task1(task1_small, out, embed=FAST, method="proximity", progress=False)  # usable again
    assert read_summary(out)["n_test"] > 0 and load_model(out, device="cpu").task == "task1"


def test_a_rerun_with_other_settings_leaves_nothing_of_the_old_run(
    task1_small: Path, tmp_path: Path
) -> None:
    from ctfp.runs.models import load_model

    out = tmp_path / "run"
    run_task1(task1_small, out, embed=FAST, method="centroid", k=(4,), progress=False)
    assert (out / "run.csv").is_file() and (out / "model").is_dir()
    run_task1(task1_small, out, embed=FAST, method="centroid", k=(1, 2), progress=False)
    # The single-k files are gone: nothing but the sweep's k1/, k2/ can be scored or evaluated.
    assert not (out / "run.csv").exists() and not (out / "model").exists()
    assert (out / "k1" / "run.csv").is_file() and load_model(out / "k2", device="cpu")
    with pytest.raises(InputError, match="one k of the sweep"):
        read_summary(out / "k1")
    run_task1(task1_small, out, embed=FAST, method="centroid", k=(4,), progress=False)
    assert not (out / "k1").exists() and not (out / "k2").exists()
    assert read_summary(out)["k"] == [4] and (out / "embeddings-pixels16").is_dir()


def test_evaluate_refuses_the_run_file_of_an_interrupted_run(
    task1_small: Path, tmp_path: Path, capsys
) -> None:
    from ctfp.cli import main

    out = tmp_path / "run"
    run_task1(task1_small, out, embed=FAST, method="centroid", progress=False)
    truth = str(task1_small / "truth.csv")
    evaluate = ["evaluate", "task1", str(out / "run.csv"), "--truth", truth]
    assert main(evaluate) == 0
    (out / "summary.json").unlink()  # a rerun was killed after withdrawing the commit record
    capsys.readouterr()
    assert main(evaluate) == 2
    assert "was interrupted before it finished" in capsys.readouterr().err


def test_a_rerun_withdraws_the_old_report_audit_and_training_scores(
    task1_small: Path, tmp_path: Path
) -> None:
    """An audit of the previous run must not survive a rerun without --report: a privacy
    officer would file numbers of a run that no longer exists."""
    from ctfp.runs.folder import AUDIT_FILES, REPORT_FILE, TRAIN_SCORES_FILE

    out = tmp_path / "run"
    run_task1(task1_small, out, embed=FAST, method="proximity", progress=False)  # measured
    write_report(out)
    old = [REPORT_FILE, TRAIN_SCORES_FILE, *AUDIT_FILES]
    assert all((out / name).is_file() for name in old)
    # A sweep writes its files under k<k>/: nothing of the old run may be left at the top.
    run_task1(task1_small, out, embed=FAST, method="centroid", k=(1, 2), progress=False)
    assert not any((out / name).exists() for name in old)
    assert (out / "k2" / TRAIN_SCORES_FILE).is_file()  # each k's out-of-fold scores
