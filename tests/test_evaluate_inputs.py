"""The run, score and truth files `ctfp evaluate` and `ctfp validate` read: each bad input is
one line naming the file, the id and the line; what only ranks (an AUC) takes +/-inf scores;
task 2 takes open_set.csv, its -1 slices one cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from ctfp.cli import main

RUN = "a,1\nb,0\nc,1\nd,0\n"
TRUTH = "id,label\na,1\nb,0\nc,0\nd,1\n"
SCORES = "id,score\na,0.9\nb,0.8\nc,0.1\nd,0.2\n"


def files(tmp_path: Path, run: str = RUN, truth: str = TRUTH, scores: str = SCORES) -> list[str]:
    """``evaluate task1`` arguments over run.csv, truth.csv and s.csv written in ``tmp_path``."""
    for name, text in (("run.csv", run), ("truth.csv", truth), ("s.csv", scores)):
        (tmp_path / name).write_bytes(text.encode())
    run_csv, truth_csv, scores_csv = (str(tmp_path / n) for n in ("run.csv", "truth.csv", "s.csv"))
    return ["evaluate", "task1", run_csv, "--truth", truth_csv, "--scores", scores_csv]


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command that exits 2."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ctfp: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def metrics(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("which", "text", "expected"),
    [
        ("truth", TRUTH + "a,0\n", "truth.csv' line 6: id 'a'"),
        ("scores", SCORES + "b,0.95\n", "s.csv' line 6: id 'b'"),
        ("run", RUN + "c,0\n", "run.csv line 5: id 'c'"),
    ],
)
def test_a_repeated_id_is_refused_naming_file_id_and_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, text: str, expected: str
) -> None:
    # Before: the last row won, exit 0 (n_used 2 of 4, an AUC of 0.667 instead of 0.5625).
    err = refused(files(tmp_path, **{which: text}), capsys)
    first = {"truth": 2, "scores": 3, "run": 3}[which]
    assert f"{expected} is given more than once (first on line {first})" in err


def test_validate_names_a_repeated_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run.csv").write_text(RUN + "a,0\n")
    assert main(["validate", "task1", str(tmp_path / "run.csv")]) == 1
    assert "run.csv line 5: id 'a' is given more than once (first on line 1)" in (
        capsys.readouterr().out
    )


def test_validate_refuses_an_id_list_with_a_repeated_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the repeat merged silently and the missing-id lines pointed at the second one.
    (tmp_path / "run.csv").write_text(RUN)
    (tmp_path / "ids.txt").write_text("a\nb\n\nc\nd\nb\n")
    args = ["validate", "task1", str(tmp_path / "run.csv"), "--ids", str(tmp_path / "ids.txt")]
    err = refused(args, capsys)
    assert "ids.txt' line 6: id 'b' is given more than once (first on line 2)" in err


def test_a_nan_score_is_named_by_file_line_and_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = files(tmp_path, scores="id,score\na,0.9\nb,0.8\nc,nan\nd,0.2\n")
    err = refused(args, capsys)
    assert "s.csv' line 4: the score 'nan' of id 'c' is not a number" in err


def test_infinite_scores_rank_first_and_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AUC needs only the order: +inf above every score, -inf below, as the same order of
    finite scores gives (sklearn refused them: "Input contains infinity")."""
    finite = metrics(files(tmp_path), capsys)
    assert finite["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [0.9, 0.8, 0.1, 0.2]))
    infinite = metrics(files(tmp_path, scores="id,score\na,inf\nb,0.8\nc,-inf\nd,0.2\n"), capsys)
    assert infinite["roc_auc"] == finite["roc_auc"] == 0.75
    assert infinite["roc_auc_ci95"] == finite["roc_auc_ci95"]


def test_open_set_csv_scores_its_minus_one_slices_as_one_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """open_set.csv (`ctfp run task2` with labels) marks slices in no known group -1: evaluate
    scores them as one cluster and says so; validate still refuses it as a challenge run."""
    run = tmp_path / "open_set.csv"
    run.write_text("a,0\nb,0\nc,-1\nd,1\ne,-1\nf,1\n")
    (tmp_path / "t.csv").write_text("id,cluster\na,g1\nb,g1\nc,g3\nd,g2\ne,g3\nf,g1\n")
    args = ["evaluate", "task2", str(run), "--truth", str(tmp_path / "t.csv")]
    got = metrics(args, capsys)
    truth, pred = ["g1", "g1", "g3", "g2", "g3", "g1"], [0, 0, -1, 1, -1, 1]
    assert got["ari"] == pytest.approx(adjusted_rand_score(truth, pred))
    assert got["n_unknown"] == 2 and got["n_clusters"] == 3
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "n_unknown" in out
    assert "the 2 id(s) marked -1 in" in err and "scored as one cluster of their own" in err
    assert main(["validate", "task2", str(run)]) == 1
    assert "line 3: cluster '-1' is not a non-negative integer (-1, in no known group, is " in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("truth", "expected"),
    [
        ("", "truth.csv' is empty"),
        ("\r\n\r\n", "truth.csv' is empty"),
        ("id,label\n", "truth.csv' has a header (id, label) but no rows"),
        ("id,label\na,1\nb,0\nc,0\nd,1\ne,1\n", "1 missing from the run (e.g. 'e')"),
        ("id,label\na,1\nb,0\nc,0\n", "1 not in the truth (e.g. 'd')"),
        ("name,label\na,1\n", "starts with a header (name, label) without an 'id' column"),
        ("id,cluster\na,1\n", "has no 'label' column (columns: id, cluster)"),
        ("id,label\na,1\nb,2\nc,0\nd,1\n", "truth.csv' line 3: id 'b' has the label '2'"),
    ],
)
def test_truth_files_that_cannot_score_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], truth: str, expected: str
) -> None:
    assert expected in refused(files(tmp_path, truth=truth), capsys)


@pytest.mark.parametrize(
    "truth",
    [
        "\ufeffid,label\r\na,1\r\nb,0\r\nc,0\r\nd,1\r\n",  # BOM, CRLF
        "ID , Label\na,1\nb,0\nc,0\nd,1\n",  # any case, spaces
        "label,id,note\n1,a,x\n0,b,y\n0,c,z\n1,d,w\n",  # other order, more columns
        "a,1\nb,0\nc,0\nd,1",  # no header, no final line break
    ],
)
def test_truth_header_variants_score_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], truth: str
) -> None:
    expected = metrics(files(tmp_path), capsys)
    assert metrics(files(tmp_path, truth=truth), capsys) == expected
