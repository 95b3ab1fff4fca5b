"""Outputs are files, and the system's errors of writing them are one line: ``put`` refuses a
folder, a FIFO or a socket where a file goes and replaces a link itself (never what it points
to); a path under a file, a disk that takes no more, a folder one may not write in are
one ``ctfp: error:`` line naming the path (exit 2), with nothing half-written left."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

from ctfp.cli import main
from ctfp.exceptions import StorageError
from ctfp.io.fs import resolve
from tests.conftest import copy_pngs

PIXELS = ["--features", "pixels", "--dtype", "float32", "--quiet"]


def _leftovers(folder: Path) -> list[str]:
    """Temp files of an atomic write left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def src(tmp_path: Path, lung_pngs: list[Path]) -> Path:
    return copy_pngs(lung_pngs[:3], tmp_path / "src")


def test_put_refuses_a_folder_a_fifo_or_a_socket_and_leaves_it_there(tmp_path: Path) -> None:
    folder, fifo, sock = tmp_path / "folder", tmp_path / "fifo", tmp_path / "sock"
    folder.mkdir()
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        for path, kind, says in (
            (folder, stat.S_ISDIR, "is a folder, not a file"),
            (fifo, stat.S_ISFIFO, "is not a regular file"),
            (sock, stat.S_ISSOCK, "is not a regular file"),
        ):
            with pytest.raises(StorageError, match=f"^{path}: {says}") as caught:
                resolve(path).put(b"report")
            assert "\n" not in str(caught.value)
            assert kind(os.lstat(path).st_mode)  # still what it was
    assert _leftovers(tmp_path) == []


def test_put_replaces_a_link_itself_never_what_it_points_to(tmp_path: Path) -> None:
    target, fifo = tmp_path / "target.html", tmp_path / "fifo"
    target.write_text("old")
    os.mkfifo(fifo)
    for name, points_to in (("link.html", target), ("to-fifo.html", fifo)):
        link = tmp_path / name
        link.symlink_to(points_to)
        assert resolve(link).put(b"new") == 3
        assert not link.is_symlink() and link.read_text() == "new"
    assert target.read_text() == "old" and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # A link to a folder is the folder: written into, as before.
    (tmp_path / "real").mkdir()
    (tmp_path / "dir-link").symlink_to(tmp_path / "real", target_is_directory=True)
    resolve(tmp_path / "dir-link" / "x.txt").put(b"x")
    assert (tmp_path / "real" / "x.txt").read_text() == "x"


def test_the_system_s_errors_are_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file")
    under_a_file = tmp_path / "file" / "out"
    with pytest.raises(StorageError, match=f"^{under_a_file}: a part of this path is a file"):
        resolve(under_a_file / "report.html").put(b"x")
    with pytest.raises(StorageError, match=f"^{tmp_path / 'file'}: exists and is not a folder"):
        resolve(tmp_path / "file").lock()
    # A disk that takes no more: /dev/full's real ENOSPC.
    with pytest.raises(OSError) as full, open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x")
    assert full.value.errno == errno.ENOSPC
    said = str(StorageError.of(full.value, "/out/part-00000.parquet"))
    assert said.startswith("/out/part-00000.parquet: no space left on the device; free some")
    assert "rerun the same command" in said
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out")
    assert str(StorageError.of(read_only)) == (
        "/mnt/ro/out: read-only file system; write to a writable folder"
    )


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys")
def test_a_folder_one_may_not_write_in(src: Path, capsys: pytest.CaptureFixture) -> None:
    """/sys takes no new folder, not even root's (EPERM; EACCES for other users)."""
    out = "/sys/kernel/ctfp-test-out"
    assert main(["embed", str(src), "--out", out, *PIXELS]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ctfp: error: {out}: ") and err.count("\n") == 1
    assert "not permitted" in err or "permission denied" in err


def test_embed_score_and_run_refuse_an_output_that_is_a_file(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture
) -> None:
    from ctfp.runs.score import score_shards
    from tests.runs.test_score import fit_centroid, write_shards

    taken = tmp_path / "taken"
    taken.write_text("someone's file")
    said = f"ctfp: error: {taken}: exists and is not a folder; remove it or choose another"
    assert main(["embed", str(src), "--out", str(taken), *PIXELS]) == 2
    assert capsys.readouterr().err.startswith(said)
    data = tmp_path / "data"
    for part in ("train/used", "train/not_used", "generated", "test"):
        copy_pngs(sorted(src.iterdir())[:2], data / part)
    run = ["run", "task1", str(data), "--out", str(taken), "--method", "centroid", "--k", "1"]
    assert main([*run, *PIXELS]) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1
    write_shards(tmp_path / "emb", n=20, per_shard=20)
    rng = np.random.default_rng(1)
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (20, 64)), rng.gamma(1.2, 1.0, (20, 64)))
    with pytest.raises(StorageError, match=f"^{taken}: exists and is not a folder"):
        score_shards(model, tmp_path / "emb", taken, progress=False)
    assert taken.read_text() == "someone's file"


def test_report_refuses_a_folder_or_a_fifo_before_making_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for name, says in (("folder", "is a folder, not a file"), ("fifo", "is not a regular file")):
        out = tmp_path / name
        assert main(["report", str(tmp_path / "no-run"), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ctfp: error: {out}: {says}") and err.count("\n") == 1
    assert (tmp_path / "folder").is_dir() and stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_a_write_the_disk_refuses_is_one_line_and_nothing_half_written_is_read(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture
) -> None:
    """The file-size limit (``ulimit -f``) makes the part's write fail half-way, as a full
    disk does: one line naming the part, no part or temp file left, and a rerun resumes."""
    from ctfp.store.reader import read_embeddings

    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        status = main(["embed", str(src), "--out", str(out), "--rows-per-shard", "1", *PIXELS])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"ctfp: error: {out / 'part-00000.parquet'}: file too large")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    with pytest.raises(Exception, match="no"):  # no shards: nothing read as complete
        read_embeddings(out)
    assert main(["embed", str(src), "--out", str(out), "--rows-per-shard", "1", *PIXELS]) == 0
    assert len(read_embeddings(out)) == 3
