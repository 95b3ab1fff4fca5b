"""The command line: a thin layer with clear errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctfp.cli import main
from tests.conftest import LUNG


def test_embed_json_summary(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "embed",
            str(LUNG / "png" / "A0001_s2_001.png"),
            "--out",
            str(tmp_path / "o"),
            "--weights",
            "random",
            "--image-size",
            "64",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 1 and summary["errors"] == [] and summary["identity"]["dim"] == 2048


def test_errors_exit_2_with_a_message(tmp_path: Path, capsys) -> None:
    assert (
        main(["embed", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--weights", "random"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(
            ["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--weights", "random"]
        )
        == 2
    )
    assert "holds no files" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(LUNG / "png"),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                str(tmp_path / "nope.pt"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(LUNG / "png"),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                "random",
                "--window",
                "wide",
            ]
        )
        == 2
    )
    assert "LEVEL,WIDTH" in capsys.readouterr().err


def test_a_run_that_could_read_no_input_exits_2(tmp_path: Path, capsys) -> None:
    png = str(LUNG / "png" / "A0001_s2_030.png")
    out = str(tmp_path / "o")
    args = ["embed", png, "--out", out, "--features", "pixels", "--quiet"]
    assert main([*args, "--max-pixels", "64x64"]) == 2  # an error, as the README says
    err = capsys.readouterr().err
    assert "declares 256x256 pixels per slice, more than the limit of 4,096" in err
    assert "raise the limit with --max-pixels" in err
    assert "none of the 1 input(s) could be read" in err
    assert main([*args, "--max-pixels", "sixty"]) == 2
    assert "'sixty' is not a pixel count" in capsys.readouterr().err
    assert main(args) == 0  # the default limit: the failure is retried and embedded
    assert main(args) == 0  # nothing left to do is not a failure


def test_console_script_and_module_entry_point() -> None:
    exe = Path(sys.executable).with_name("ctfp")
    run = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "embed" in run.stdout and "demo" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "ctfp", "--version"], capture_output=True, text=True, check=True
    )
    assert run.stdout.startswith("ctfp ")


@pytest.mark.slow
def test_demo_runs_on_the_bundled_sample(demo_run: tuple[Path, dict]) -> None:
    # `ctfp demo --out demo-out --weights random --quiet --json` in a child process, run once
    # for this test and the README tour (tests/test_readme.py), which goes on from its folder.
    work, summary = demo_run
    out = work / "demo-out"
    assert summary["rows"] == 13 and summary["dim"] == 2048
    assert summary["png_vs_dicom_cosine"] > 0.99
    assert summary["dicom_nearest_neighbour"] == "png/A0001_s2_030"
    # Every stage ran: both tasks, evaluated against the truth, each with its report.
    assert set(summary["runs"]) == {"task1-seed", "task1-proximity", "task2"}
    for name, run in summary["runs"].items():  # paths as given: relative to the folder
        assert (work / run["run"]).is_file() and (work / run["report"]).stat().st_size > 10_000
        assert (out / name / "model" / "model.json").is_file()
    seed = summary["runs"]["task1-seed"]["metrics"]
    assert seed["n"] == 8 and 0 <= seed["f1"] <= 1 and seed["roc_auc"] is not None
    assert summary["runs"]["task2"]["metrics"]["n"] == 27
    # The noisy copies in generated/ are of the used slices: proximity must find them.
    assert summary["runs"]["task1-proximity"]["metrics"]["roc_auc"] >= 0.75


def test_engine_options_and_the_cache_command(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("A0001_s2_001.png", "A0001_s2_002.png"):
        (src / name).write_bytes((LUNG / "png" / name).read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = ["--out", str(tmp_path / "o")]
    assert main(["embed", str(src), *out, "--weights", "random", "--actors", "2"]) == 2
    assert "--actors and --ray-address" in capsys.readouterr().err
    assert main(["embed", str(src), *out, "--engine", "spark"]) == 2
    assert "invalid choice: 'spark'" in capsys.readouterr().err
    # The cache: decoded once, the corrupt file named on stderr and kept in the errors table.
    cache = tmp_path / "cache"
    assert main(["cache", str(src), "--out", str(cache), "--size", "64", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rows"] == 2 and [e["source"] for e in result["errors"]] == [
        str(src / "broken.png")
    ]
    assert "1 input(s) could not be read" in captured.err and "broken.png" in captured.err
    assert result["settings"]["size"] == 64
    # Embedding from the cache reads the decoded slices.
    code = main(["embed", str(cache), *out, "--weights", "random", "--image-size", "64", "--json",
                 "--quiet"])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["rows"] == 2


def test_usage_errors_are_one_line(capsys) -> None:
    assert main(["run", "task2", "DATA", "--out", "o", "--k", "many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctfp run task2: error: argument --k")
    assert "(see ctfp run task2 --help)" in err[0]
    assert main(["embed", "x", "--out", "o", "--image-size", "100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ctfp: error: EmbedSettings.image_size must be at most 4096, got 100000"]


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "run.csv").write_text("".join(f"x{i},7\n" for i in range(20_000)))
    exe = Path(sys.executable).with_name("ctfp")
    run = subprocess.run(
        f"'{exe}' validate task1 '{tmp_path / 'run.csv'}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.stdout.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr


def _invalid_run(tmp_path: Path) -> Path:
    # Far more than a pipe holds: the writer is still writing when the reader leaves.
    (tmp_path / "run.csv").write_text("".join(f"x{i},7\n" for i in range(20_000)))
    return tmp_path / "run.csv"


def test_a_closed_pipe_keeps_the_exit_status(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ctfp")
    run_file = _invalid_run(tmp_path)
    for reader, extra in (("head -1", ""), ("head -c 100", " --json")):
        command = f"'{exe}' validate task1 '{run_file}'{extra} | {reader}"
        script = f'{command}; status="${{PIPESTATUS[0]}}"; echo; echo "status=$status"'
        run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
        assert run.stdout.rstrip().splitlines()[-1] == "status=1", (reader, run.stdout[-200:])
        assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr


class _FailingStdout:
    """A stdout whose every write fails as ``error`` does."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    def write(self, text: str) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error


def test_a_closed_stdout_returns_the_commands_status(tmp_path: Path, monkeypatch, capsys) -> None:
    run_file = _invalid_run(tmp_path)
    (tmp_path / "good.csv").write_text("a,1\n")
    monkeypatch.setattr(sys, "stdout", _FailingStdout(BrokenPipeError(32, "Broken pipe")))
    assert main(["validate", "task1", str(run_file)]) == 1
    assert main(["validate", "task1", str(run_file), "--json"]) == 1
    assert main(["validate", "task1", str(tmp_path / "good.csv")]) == 0
    assert "Broken pipe" not in capsys.readouterr().err  # the reader left: nothing is wrong


def test_a_stdout_that_cannot_be_written_is_one_line_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import errno

    (tmp_path / "good.csv").write_text("a,1\n")
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sys, "stdout", _FailingStdout(full))
    assert main(["validate", "task1", str(tmp_path / "good.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ctfp: error: cannot write to standard output: No space left on device"]
    monkeypatch.undo()
    if not Path("/dev/full").exists():
        return
    exe = Path(sys.executable).with_name("ctfp")
    for extra in ([], ["--json"]):
        with open("/dev/full", "w") as stdout:
            run = subprocess.run(
                [str(exe), "validate", "task1", str(_invalid_run(tmp_path)), *extra],
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
        assert run.stderr.splitlines()[-1] == (
            "ctfp: error: cannot write to standard output (/dev/full): No space left on device"
        )


def test_negative_numbers_are_option_values(tmp_path: Path, capsys) -> None:
    png = str(LUNG / "png" / "A0001_s2_001.png")
    for n, window in enumerate(("-600,1500", "-1.5e3,400")):
        args = ["embed", png, "--out", str(tmp_path / f"o{n}"), "--features", "pixels"]
        assert main([*args, "--quiet", "--window", window, "--json"]) == 0, capsys.readouterr()
        assert json.loads(capsys.readouterr().out)["rows"] == 1
    # What is not a number is still an option, and a missing value still an error.
    assert main(["embed", png, "--out", str(tmp_path / "o"), "--window", "-x"]) == 2
    assert "argument --window: expected one argument" in capsys.readouterr().err


def test_a_tables_errors_file_is_named_without_its_prefix(tmp_path: Path, capsys) -> None:
    pytest.importorskip("deltalake")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes((LUNG / "png" / "A0001_s2_001.png").read_bytes())
    (tmp_path / "in" / "b.png").write_bytes(b"not a png")
    out = tmp_path / "t"
    assert (
        main(["embed", str(tmp_path / "in"), "--out", f"delta:{out}", "--features", "pixels:16"])
        == 0
    )
    err = capsys.readouterr().err
    assert f"reasons in {out}/_errors/errors.parquet, e.g." in err  # no delta: before it
    (tmp_path / "in" / "a.png").unlink()
    out = tmp_path / "t2"
    assert (
        main(["embed", str(tmp_path / "in"), "--out", f"delta:{out}", "--features", "pixels:16"])
        == 2
    )
    assert f"the reasons are in {out}/_errors/errors.parquet" in capsys.readouterr().err


def test_paths_ctfp_keeps_local_refuse_a_store_uri(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a URI taken for a path would make ./s3:/...
    for args, said in (
        (["demo", "--out", "s3://b/demo"], "--out 's3://b/demo': the demo's output folder"),
        (["embed", "in", "--out", "o", "--weights", "s3://b/w.pt"], "--weights 's3://b/w.pt'"),
        (["run", "task1", "d", "--out", "o", "--weights", "gs://b/w.pt"], "--weights 'gs://b/"),
    ):
        assert main([*args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert said in err and "a local or mounted path, not an object store" in err
    assert not list(tmp_path.iterdir())
