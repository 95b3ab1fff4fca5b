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


AWKWARD_IDS = ["a,b", 'q"x', "cr\rx", "nl\nx", " lead", "trail ", "crlf\r\nx", "plain"]


def test_awkward_ids_ctfp_writes_validate_and_evaluate_exactly(tmp_path: Path, capsys) -> None:
    import csv

    from ctfp.evaluate import evaluate_run, quote_field, read_ids

    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    run = tmp_path / "run.csv"
    write_run(run, AWKWARD_IDS, labels)
    assert validate_run(run, "task1", AWKWARD_IDS) == []
    assert read_run(run, "task1") == dict(zip(AWKWARD_IDS, labels, strict=True))
    # A truth file written by Python's csv module (which quotes only what must be; ids with
    # spaces at their ends quoted, as a reader strips the spaces around unquoted fields).
    truth = tmp_path / "truth.csv"
    for quoting in (csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC):
        with open(truth, "w", newline="") as f:
            writer = csv.writer(f, quoting=quoting)
            writer.writerow(["id", "label"])
            writer.writerows([i, str(v)] for i, v in zip(AWKWARD_IDS, labels, strict=True))
        assert read_table(truth, "label") == {
            i: str(v) for i, v in zip(AWKWARD_IDS, labels, strict=True)
        }
        metrics = evaluate_run("task1", run, truth)
        assert metrics["n"] == 8 and metrics["accuracy"] == 1.0
    # The csv module's minimal quoting (and "\r\n" lines): exact for every id it quotes.
    quoted = [i for i in AWKWARD_IDS if i == i.strip()]
    with open(truth, "w", newline="") as f:
        csv.writer(f).writerows([[i, "1"] for i in quoted])
    assert read_table(truth, "label") == dict.fromkeys(quoted, "1")
    # An id list quoted like the run file: read back exactly, through the command too.
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{quote_field(i)}\n" for i in AWKWARD_IDS), newline="")
    assert read_ids(ids_file) == AWKWARD_IDS
    assert main(["validate", "task1", str(run), "--ids", str(ids_file)]) == 0
    assert "valid task1 run" in capsys.readouterr().out
    # A plain id list keeps its leniency: blank lines and the spaces around ids are not ids.
    (tmp_path / "plain.txt").write_text(" a \n\nb,c\r\n")
    assert read_ids(tmp_path / "plain.txt") == ["a", "b,c"]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path, capsys) -> None:
    from ctfp.evaluate import read_ids

    bad = tmp_path / "latin1.csv"
    bad.write_bytes("a,1\nb\xe9,0\n".encode("latin-1"))
    expected = rf"'{bad}' line 2 is not UTF-8 text \(byte 0xe9"
    with pytest.raises(InputError, match="run file " + expected):
        validate_run(bad, "task1")
    with pytest.raises(InputError, match=expected):
        read_table(bad, "label")
    with pytest.raises(InputError, match="id list " + expected):
        read_ids(bad)
    (tmp_path / "run.csv").write_text("a,1\nb,0\n")
    for args in (
        ["validate", "task1", str(bad)],
        ["validate", "task1", str(tmp_path / "run.csv"), "--ids", str(bad)],
        ["evaluate", "task1", str(tmp_path / "run.csv"), "--truth", str(bad)],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and "not UTF-8" in err[0], err
    # A UTF-8 byte order mark (spreadsheets write one) is not part of the first id or header.
    (tmp_path / "bom.csv").write_bytes("\ufeffid,label\na,1\nb,0\n".encode())
    assert read_table(tmp_path / "bom.csv", "label") == {"a": "1", "b": "0"}


def test_bad_truth_labels_and_missing_scores_are_named(tmp_path: Path) -> None:
    from ctfp.evaluate import evaluate_run

    write_run(tmp_path / "run.csv", ["a", "b"], [1, 0])
    (tmp_path / "truth.csv").write_text("id,label\na,1\nb,2\n")
    with pytest.raises(InputError, match=r"truth.csv' line 3: id 'b' has the label '2'"):
        evaluate_run("task1", tmp_path / "run.csv", tmp_path / "truth.csv")
    (tmp_path / "truth.csv").write_text("id,label\na,1\nb,0\n")
    (tmp_path / "scores.csv").write_text("id,score,label\na,0.9,1\n")
    with pytest.raises(InputError, match=r"scores.csv' has no score for 1 id\(s\)"):
        evaluate_run("task1", tmp_path / "run.csv", tmp_path / "truth.csv")
    (tmp_path / "scores.csv").write_text("id,score,label\na,0.9,1\nb,high,0\n")
    with pytest.raises(InputError, match=r"the score 'high' of id 'b' is not a number"):
        evaluate_run("task1", tmp_path / "run.csv", tmp_path / "truth.csv")


def test_bootstrap_intervals_are_the_brute_force_percentiles() -> None:
    import numpy as np
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    from ctfp.evaluate import bootstrap_indices, membership_intervals

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 90)
    scores = y + rng.normal(0, 1.0, 90)
    pred = (scores > 0.5).astype(int)
    got = membership_intervals(y, pred, scores, resamples=200, seed=3)
    idx = bootstrap_indices(y, 200, 3)
    for name, metric, arg in (
        ("f1", f1_score, pred),
        ("accuracy", accuracy_score, pred),
        ("kappa", cohen_kappa_score, pred),
        ("roc_auc", roc_auc_score, scores),
    ):
        values = [metric(y[i], arg[i]) for i in idx]
        want = np.percentile(values, [2.5, 97.5])
        np.testing.assert_allclose(got[f"{name}_ci95"], want, atol=1e-4, err_msg=name)
    point = roc_auc_score(y, scores)
    low, high = got["roc_auc_ci95"]
    assert low < point < high and 0.05 < high - low < 0.4
    assert membership_intervals(y, pred, scores, resamples=200, seed=3) == got  # seeded
    assert membership_intervals(y, pred, None)["roc_auc_ci95"] is None
