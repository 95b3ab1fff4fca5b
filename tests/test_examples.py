"""The scripts in examples/ run as a user runs them and write what they say they wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import offline_env  # no way to download weights, as the README tour

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.mark.slow
def test_audit_a_generator(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = EXAMPLES / "audit_a_generator.py"
    run = subprocess.run(
        [sys.executable, str(script), "--out", "audit-out"],
        cwd=work,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    out = run.stdout
    written = [Path(p) for p in re.findall(r"^wrote (.+)$", out, re.M)]
    names = {(p.parent.name, p.name) for p in written}
    for task in ("task1", "task2"):
        assert {(task, "report.html"), (task, "audit.json"), (task, "audit.md")} <= names
    for path in written:
        assert (work / path).is_file(), path  # relative to the working folder, as given
        assert (work / path).resolve().is_relative_to((work / "audit-out").resolve())
    # It says that it ran offline with random weights, and what the runs concluded.
    assert "no ImageNet weights" in out and "random" in out
    summary1 = json.loads((work / "audit-out" / "task1" / "summary.json").read_text())
    assert f"verdict: {summary1['verdict']}" in out
    assert summary1["settings"]["task1"]["method"] == "auto"  # the defaults
    audit = json.loads((work / "audit-out" / "task1" / "audit.json").read_text())
    assert audit["schema"] == "ctfp-audit/1" and audit["test_metrics"] is not None
    assert (work / "audit-out" / "task1" / "audit.md").read_text().strip() in out
    assert re.search(r"^done in [\d.]+ s$", out, re.M)
