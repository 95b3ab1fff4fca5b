"""Run-file validation (every rejection reason, with line numbers) and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctfp.cli import main
from ctfp.evaluate import membership_metrics, read_run, read_table, validate_run, write_run
from ctfp.exceptions import InputError

IDS = ["a", "b", "c"]


def problems(tmp_path: Path, text: str, task: str = "task1") -> list[str]:
    path = tmp_path / "run.csv"
    path.write_text(text)
    return [str(p) for p in validate_run(path, task, IDS, ids_file="ids.txt")]


def test_a_valid_run_has_no_problems(tmp_path: Path) -> None:
    write_run(tmp_path / "run.csv", IDS, [1, 0, 1])
    assert (tmp_path / "run.csv").read_text() == "a,1\nb,0\nc,1\n"
    assert validate_run(tmp_path / "run.csv", "task1", IDS) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,1\n\nb,0\nc,1\n", "line 2: empty line"),
        ("a,1\nb,0,7\nc,1\n", "line 2: expected 2 comma-separated fields"),
        ("a,1\nb\nc,1\n", "line 2: expected 2 comma-separated fields"),
        ("a,1\nb,0\nc,1\nzzz,0\n", "line 4: id 'zzz' is not in the id list"),
        ("a,1\nb,0\nc,1\na,0\n", "line 4: id 'a' is given more than once (first on line 1)"),
        ("a,1\nb,2\nc,1\n", "line 2: label '2' is not the integer 0 or 1"),
        ("a,1\nb,yes\nc,1\n", "line 2: label 'yes' is not the integer 0 or 1"),
        ("a,1\nb,0.5\nc,1\n", "line 2: label '0.5' is not the integer 0 or 1"),
        ("a,1\nc,1\n", "ids.txt line 2: id 'b' is missing from the run"),
        ("", "line 1: the run file is empty"),
    ],
)
def test_each_rejection_reason(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_task2_values_must_be_non_negative_integers(tmp_path: Path) -> None:
    assert problems(tmp_path, "a,0\nb,3\nc,12\n", "task2") == []
    found = problems(tmp_path, "a,0\nb,-1\nc,x\n", "task2")
    assert any("line 2: cluster '-1'" in p for p in found)
    assert any("line 3: cluster 'x'" in p for p in found)


def test_validate_command(tmp_path: Path, capsys) -> None:
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    (tmp_path / "run.csv").write_text("a,1\nb,0\nc,1\n")
    assert (
        main(["validate", "task1", str(tmp_path / "run.csv"), "--ids", str(tmp_path / "ids.txt")])
        == 0
    )
    assert "valid task1 run" in capsys.readouterr().out
    (tmp_path / "run.csv").write_text("a,1\na,1\n")
    assert (
        main(["validate", "task1", str(tmp_path / "run.csv"), "--ids", str(tmp_path / "ids.txt")])
        == 1
    )
    out = capsys.readouterr().out
    assert "line 2: id 'a' is given more than once" in out and "missing from the run" in out
    args = ["validate", "task1", str(tmp_path / "run.csv"), "--ids", str(tmp_path / "ids.txt")]
    assert main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and len(report["problems"]) >= 2


def test_evaluate_refuses_mismatched_ids(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.csv").write_text("a,1\nb,0\n")
    (tmp_path / "truth.csv").write_text("id,label\na,1\nc,0\n")
    assert (
        main(
            ["evaluate", "task1", str(tmp_path / "run.csv"), "--truth", str(tmp_path / "truth.csv")]
        )
        == 2
    )
    assert "different ids" in capsys.readouterr().err


def test_membership_metrics_and_the_all_used_baseline() -> None:
    m = membership_metrics([1, 1, 0, 0], [1, 1, 1, 1], [0.9, 0.8, 0.7, 0.1])
    assert m["f1"] == pytest.approx(2 / 3) and m["baseline_all_used_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 0.5 and m["kappa"] == 0.0 and m["roc_auc"] == 1.0
    with pytest.raises(InputError):
        validate_run("/nonexistent/run.csv", "task1")


def test_ids_with_commas_quotes_and_line_breaks_round_trip(tmp_path: Path) -> None:
    ids = ["plain", "a,b", 'say "hi"', "two\nlines", " padded ", "last"]
    write_run(tmp_path / "run.csv", ids, [1, 0, 1, 0, 1, 0])
    assert validate_run(tmp_path / "run.csv", "task1", ids) == []
    assert read_run(tmp_path / "run.csv", "task1") == dict(
        zip(ids, [1, 0, 1, 0, 1, 0], strict=True)
    )
    # Ordinary ids are written as before: no quotes.
    assert (tmp_path / "run.csv").read_text().startswith("plain,1\n")
    # Hand-written files keep their leniency: spaces around unquoted fields are not the id's.
    (tmp_path / "hand.csv").write_text(" a , 1\r\nb,0\n")
    assert read_run(tmp_path / "hand.csv", "task1") == {"a": 1, "b": 0}
    (tmp_path / "open.csv").write_text('"a,1\nb,0\n')
    problems = validate_run(tmp_path / "open.csv", "task1")
    assert len(problems) == 1 and "never closed" in str(problems[0])


def test_a_truth_header_without_an_id_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "truth.csv").write_text("image,label\na,1\nb,0\n")
    with pytest.raises(InputError, match=r"header .* without an 'id' column"):
        read_table(tmp_path / "truth.csv", "label")
    (tmp_path / "bare.csv").write_text("a,1\nb,0\n")
    assert read_table(tmp_path / "bare.csv", "label") == {"a": "1", "b": "0"}


def test_a_run_folder_given_as_a_run_file_points_at_its_run_files(tmp_path: Path) -> None:
    for k in (1, 4):
        write_run(tmp_path / f"k{k}" / "run.csv", ["a"], [1])
    with pytest.raises(
        InputError, match=r"is a folder, not a run file; the run files in it: .*k1/run.csv"
    ):
        validate_run(tmp_path, "task1")
