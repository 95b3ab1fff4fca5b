"""A run folder belongs to one data folder and one task, has one writer at a time, and a run
uses exactly the files of its data folder as it is now (removed, moved and unreadable files
included)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ctfp.cli import main

FAST = ["--features", "pixels:16", "--device", "cpu", "--quiet"]
TASK1 = ["--method", "centroid", "--k", "1", *FAST]
TASK2 = ["--method", "gmm", "--k", "2", "--allow-collapse", *FAST]
SPLIT = {"train/used": 4, "train/not_used": 4, "test": 7}


@pytest.fixture
def data(tmp_path: Path, lung_pngs: list[Path]) -> Path:
    """A small ImageCLEF folder: four used, four not used (too few to cross-validate: fast),
    seven test slices."""
    root, pngs = tmp_path / "data", iter(lung_pngs[::5])
    for folder, n in SPLIT.items():
        (root / folder).mkdir(parents=True)
        for _ in range(n):
            p = next(pngs)
            shutil.copy(p, root / folder / p.name)
    return root


def run(
    task: str, data: Path, out: Path | str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``ctfp run <task> data --out out``: exit status and stderr."""
    code = main(["run", task, str(data), "--out", str(out), *(TASK1 if task == "task1" else TASK2)])
    captured = capsys.readouterr()
    return code, captured.err


def rows(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [r[0] for r in csv.reader(f) if r and r[0] != "id"]


def snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_file_removed_from_test_is_gone_from_the_run(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run("task1", data, out, capsys)[0] == 0
    gone = sorted((data / "test").iterdir())[0]
    gone.unlink()
    assert run("task1", data, out, capsys)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] == 6
    for name in ("run.csv", "scores.csv"):
        assert len(rows(out / name)) == 6 and gone.stem not in rows(out / name)
    # Task 2's clusters.csv likewise (a test-only folder: the blind mixture).
    (data / "train").rename(tmp_path / "train")
    out2 = tmp_path / "run2"
    assert run("task2", data, out2, capsys)[0] == 0
    gone = sorted((data / "test").iterdir())[0]
    gone.unlink()
    assert run("task2", data, out2, capsys)[0] == 0
    clusters = rows(out2 / "clusters.csv")
    assert len(clusters) == 5 and gone.stem not in clusters
    assert json.loads((out2 / "summary.json").read_text())["n_test"] == 5


def test_a_file_moved_to_the_other_class_is_in_that_class_only(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run("task1", data, out, capsys)[0] == 0
    moved = sorted((data / "train" / "not_used").iterdir())[0]
    moved.rename(data / "train" / "used" / moved.name)
    assert run("task1", data, out, capsys)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_used"], summary["n_not_used"]) == (5, 3)


def test_another_data_folder_or_task_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run("task1", data, out, capsys)[0] == 0
    assert json.loads((out / "origin.json").read_text()) == {
        "data": str(data.resolve()),
        "task": "task1",
    }
    other = tmp_path / "other"
    shutil.copytree(data, other)
    before = snapshot(out)
    code, err = run("task1", other, out, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(data.resolve()) in err and str(other.resolve()) in err
    assert "use another --out" in err
    code, err = run("task2", data, out, capsys)
    assert code == 2 and "holds the task1 run" in err and "not the task2 run" in err
    assert snapshot(out) == before

    # An older run folder (no record): reruns work and record it; its summary's task counts.
    (out / "origin.json").unlink()
    code, err = run("task2", data, out, capsys)
    assert code == 2 and "holds the task1 run" in err
    assert run("task1", data, out, capsys)[0] == 0
    assert json.loads((out / "origin.json").read_text())["task"] == "task1"


def test_a_second_writer_of_a_run_folder_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # Another process holds the run folder (as a run does from its first write to its summary).
    hold = "import sys; from ctfp.io.locks import FolderLock; held = FolderLock(sys.argv[1]); "
    hold += "print('held', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", hold, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        code, err = run("task1", data, out, capsys)
        holder.communicate("")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another ctfp process is writing into" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_a_second_writer_of_a_run_folder_on_a_store_is_refused(
    data: Path, s3: str, s3_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.store.test_object_store import keys, upload

    # Another host's run holds the run folder's lease (renewed, so not expired).
    lease = {"owner": "x", "host": "elsewhere", "pid": 1, "expires": time.time() + 600}
    upload(s3_server, s3, {"run/_lease.json": json.dumps(lease).encode()})
    code, err = run("task1", data, f"s3://{s3}/run", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another ctfp process (elsewhere, pid 1) is writing into" in err
    assert keys(s3_server, s3, "run/") == ["_lease.json"]  # nothing written


def test_unreadable_inputs_are_named_in_the_summary(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "test" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    args = ["run", "task1", str(data), "--out", str(out), *TASK1, "--json"]
    assert main(args) == 0
    for summary in (
        json.loads(capsys.readouterr().out),
        json.loads((out / "summary.json").read_text()),
    ):
        assert summary["n_test"] == 7 and summary["n_unreadable"] == 1
        assert any("test/broken" in w and "could not be read" in w for w in summary["warnings"])
        assert "1 input(s) could not be read" in summary["verdict"]
    assert len(rows(out / "run.csv")) == 7
