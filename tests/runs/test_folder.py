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

FAST = EmbedSettings(features="pixels", device="cpu")


def test_a_run_is_committed_by_its_summary(task1_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_task1(task1_data, out, embed=FAST, method="centroid", k=(1, 2), progress=False)
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


def test_an_interrupted_rerun_is_refused_not_mixed(task1_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_task1(task1_data, out, embed=FAST, progress=False)
    begin_commit(out)  # what a rerun does before it writes its files; then it is killed
    (out / "run.csv").write_text("x,1\n")
    for read in (read_summary, lambda o: load_model(o, device="cpu"), write_report):
        with pytest.raises(InputError, match="was interrupted before it finished"):
            read(out)
    run_task1(task1_data, out, embed=FAST, progress=False)  # the rerun finishes: usable again
    assert read_summary(out)["n_test"] > 0 and load_model(out, device="cpu").task == "task1"
