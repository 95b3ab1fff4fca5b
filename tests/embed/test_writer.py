"""The writer side: only pending inputs are run, rows get their ids, the result and its log."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ctfp.embed.writer import EmbedResult, finish_run, log_result, write_file, write_pending
from ctfp.exceptions import CtfpError
from ctfp.io.locks import FolderLock
from ctfp.io.sources import InputFile
from ctfp.store.reader import read_embeddings, read_errors
from ctfp.store.writer import ShardWriter

FILES = [InputFile("a", "/in/a.png"), InputFile("vol", "/in/vol.nii.gz", "x"), InputFile("c", "/c")]


def rows(n: int, value: float = 1.0) -> np.ndarray:
    return np.full((n, 64), value, dtype=np.float32)


def fake_run(todo: list[InputFile], writers: list[ShardWriter], _: list[set[str]]) -> int:
    """Two frames for ``vol``, one for the others; ``c`` fails (one output)."""
    [writer] = writers
    n = 0
    for f in todo:
        if f.id == "c":
            writer.add_error(f.id, f.path, "broken")
            continue
        count = 2 if f.id == "vol" else 1
        write_file(writer, f, rows(count))
        n += count
    return n


def test_pending_inputs_are_run_and_the_rest_resumed(pixel_job, tmp_path: Path, ctfp_log) -> None:
    job = pixel_job(FILES, tmp_path / "out", settings={"rows_per_shard": 4})
    meta = job.metadata(job.outputs[0].factory().identity.to_dict())
    timings = {"write": 0.0}
    start = time.perf_counter()
    [writer], [pending], n = write_pending(job, [meta], timings, fake_run)
    assert pending == FILES and n == 3 and timings["write"] > 0
    result = finish_run(writer, job, pending, n, start, device="cpu", precision="fp32")
    assert (result.rows, result.files, result.skipped_files) == (3, 3, 0)
    assert result.errors == [{"id": "c", "source": "/c", "reason": "broken"}]
    assert result.settings == {"rows_per_shard": 4} and len(result.shards) == 1
    data = read_embeddings(tmp_path / "out")
    assert data.ids.tolist() == ["a", "vol#0", "vol#1"]
    assert data.table.column("frame").to_pylist() == [0, 0, 1]
    assert data.table.column("label").to_pylist() == [None, "x", "x"]
    assert any("warning: 1 input(s) could not be read" in r.getMessage() for r in ctfp_log)

    # A rerun calls the run with the failed input only; its reason stands until it is retried.
    seen = []
    _, [pending], _ = write_pending(job, [meta], timings, lambda todo, w, ids: seen.extend(todo))
    assert [f.id for f in seen] == ["c"] and len(read_errors(tmp_path / "out")) == 1
    # Nothing left: the run is not called at all.
    called = []
    done = pixel_job(FILES[:2], tmp_path / "out")
    _, [pending], value = write_pending(done, [meta], timings, lambda *a: called.append(a))
    assert pending == [] and value is None and not called
    assert any("nothing to do" in r.getMessage() for r in ctfp_log)


def test_a_cache_row_keeps_its_frame(pixel_job, tmp_path: Path) -> None:
    row = InputFile("vol#3", "/in/vol.nii.gz", None, 3, ("shard", 0, 3))
    job = pixel_job([row], tmp_path / "out")
    meta = job.metadata(job.outputs[0].factory().identity.to_dict())
    write_pending(
        job, [meta], {"write": 0.0}, lambda todo, w, _: write_file(w[0], todo[0], rows(1))
    )
    data = read_embeddings(tmp_path / "out")
    assert data.ids.tolist() == ["vol#3"] and data.table.column("frame").to_pylist() == [3]


def test_one_writer_per_folder(pixel_job, tmp_path: Path) -> None:
    job = pixel_job(FILES, tmp_path / "out")
    meta = job.metadata(job.outputs[0].factory().identity.to_dict())
    (tmp_path / "out").mkdir()
    with FolderLock(tmp_path / "out"), pytest.raises(CtfpError, match="another ctfp writer"):
        write_pending(job, [meta], {"write": 0.0}, fake_run)


def test_each_output_gets_what_its_folder_lacks(pixel_job, tmp_path: Path) -> None:
    """Two outputs: the first already holds ``a``, the second nothing; the run is called with
    every input some output needs, and each output's own ids; each writer is its folder's."""
    one = pixel_job(FILES[:1], tmp_path / "one")
    meta = one.metadata(one.outputs[0].factory().identity.to_dict())
    write_pending(
        one, [meta], {"write": 0.0}, lambda todo, w, _: write_file(w[0], todo[0], rows(1))
    )
    job = pixel_job(FILES, tmp_path / "one", tmp_path / "two")
    seen = {}

    def run(todo, writers, ids):
        seen.update(todo=[f.id for f in todo], ids=ids, outs=[w.out_dir for w in writers])
        return 0

    writers, pending, _ = write_pending(job, [meta, meta], {"write": 0.0}, run)
    assert seen["todo"] == ["a", "vol", "c"] and seen["ids"] == [{"vol", "c"}, {"a", "vol", "c"}]
    assert seen["outs"] == [tmp_path / "one", tmp_path / "two"]
    assert [[f.id for f in p] for p in pending] == [["vol", "c"], ["a", "vol", "c"]]
    # The result of each output: its folder, its settings, its skipped files.
    kw = dict(device="cpu", precision="fp32")
    second = finish_run(writers[1], job, pending[1], 0, time.perf_counter(), output=1, **kw)
    assert second.out == str(tmp_path / "two") and second.skipped_files == 0
    first = finish_run(writers[0], job, pending[0], 0, time.perf_counter(), output=0, **kw)
    assert first.out == str(tmp_path / "one") and first.skipped_files == 1


def test_result_summary_and_dict(ctfp_log) -> None:
    result = EmbedResult("out", 10, 4, 1, [], 2.0, 5.0, "cpu", "fp32", settings={"a": 1})
    assert result.to_dict()["settings"] == {"a": 1} and result.to_dict()["engine"] == "local"
    assert result.summary().startswith("embedded 10 rows from 3 files (0 errors, 1 files")
    log_result(result)
    assert [r.getMessage() for r in ctfp_log] == [result.summary()]


def test_errors_of_inputs_deleted_since_leave_the_errors_table(tmp_path: Path, lung_pngs) -> None:
    import shutil

    from ctfp.embed.runner import embed
    from ctfp.store.reader import read_errors

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(lung_pngs[0], src / "good.png")
    (src / "broken.png").write_bytes(b"not a png")
    (src / "gone.png").write_bytes(b"not a png either")
    embed(src, tmp_path / "out", features="pixels", device="cpu", progress=False)
    assert sorted(e["id"] for e in read_errors(tmp_path / "out").to_pylist()) == ["broken", "gone"]
    (src / "gone.png").unlink()  # deleted since: its old error must not stay on the record
    embed(src, tmp_path / "out", features="pixels", device="cpu", progress=False)
    assert [e["id"] for e in read_errors(tmp_path / "out").to_pylist()] == ["broken"]


def test_a_second_source_with_the_same_ids_is_not_skipped_silently(tmp_path, lung_pngs) -> None:
    import shutil

    from ctfp.embed.runner import embed
    from ctfp.exceptions import InputError
    from ctfp.store.reader import read_embeddings, read_errors
    from tests.conftest import EDGE

    for folder, png in (("d1", lung_pngs[0]), ("d2", lung_pngs[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(png, tmp_path / folder / "x.png")
    opts = dict(features="pixels", progress=False)
    embed(tmp_path / "d1", tmp_path / "o", **opts)
    with pytest.raises(InputError, match=r"already holds id 'x', embedded from .*d1/x.png"):
        embed(tmp_path / "d2", tmp_path / "o", **opts)
    assert embed(tmp_path / "d1", tmp_path / "o", **opts).skipped_files == 1  # a true resume
    # A file "scan#3.png" embedded first, then a 16-frame scan.dcm: its frame 3 would give a
    # second row "scan#3". The volume is an error of its own; the folder stays readable.
    (tmp_path / "d3").mkdir()
    (tmp_path / "d4").mkdir()
    shutil.copy(lung_pngs[0], tmp_path / "d3" / "scan#3.png")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", tmp_path / "d4" / "scan.dcm")
    embed(tmp_path / "d3", tmp_path / "o2", **opts)
    result = embed(tmp_path / "d4", tmp_path / "o2", **opts)
    assert result.rows == 0 and "row id 'scan#3' is already in" in result.errors[0]["reason"]
    assert list(read_embeddings(tmp_path / "o2").ids) == ["scan#3"]
    assert read_errors(tmp_path / "o2").column("id").to_pylist() == ["scan"]
    # And the other order: scan.dcm first, then a file scan#3.png is refused up front.
    embed(tmp_path / "d4", tmp_path / "o3", **opts)
    with pytest.raises(InputError, match="already holds id 'scan#3'"):
        embed(tmp_path / "d3", tmp_path / "o3", **opts)
