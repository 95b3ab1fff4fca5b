"""`ctfp report --truth` reads the truth as `ctfp evaluate` does: a repeated id is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctfp.cli import main


def test_report_refuses_a_truth_with_a_repeated_id(
    task2_auto: Path, task2_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the last row won and the report showed metrics of a truth with one id less.
    lines = (task2_data / "truth.csv").read_text().splitlines()
    first = lines[1].split(",")[0]
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join([*lines, f"{first},9"]) + "\n")
    out = tmp_path / "r.html"
    assert main(["report", str(task2_auto), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"line {len(lines) + 1}: id {first!r} is given more than once (first on line 2)"
    assert err.startswith("ctfp: error: ") and expected in err and "\n" not in err, err
    assert not out.exists()
