"""Shard writer and reader: schema, atomic commits, resume state, errors, refusal to mix models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctfp.exceptions import CtfpError, InputError, ShardMismatchError
from ctfp.store.reader import iter_embeddings, read_embeddings, read_errors
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter, frame_id, write_text_atomic

IDENTITY = {
    "model": "resnet50",
    "weights": "random:seed=0",
    "weights_sha256": "ab" * 32,
    "dim": 8,
    "preprocessing": {"image_size": 64},
}


def meta(**changes) -> dict:
    return make_metadata({**IDENTITY, **changes}, "float32", {"window": "auto"})


def fill(writer: ShardWriter, names: list[str], frames: int = 1) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        ids = [frame_id(name, k, frames) for k in range(frames)]
        writer.add(
            name,
            ids,
            f"/data/{name}.png",
            range(frames),
            "used",
            rng.standard_normal((frames, 8)).astype(np.float32),
        )


def test_schema_metadata_and_external_readers(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=4) as w:
        fill(w, [f"s{i:02d}" for i in range(10)])
    shards = sorted(tmp_path.glob("part-*.parquet"))
    assert [p.name for p in shards] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    schema = pq.read_schema(shards[0])
    assert schema.names == ["id", "source", "frame", "label", "embedding", "fingerprint"]
    emb = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb) and emb.list_size == 8
    assert emb.value_type == pa.float32()
    # Non-null elements: Parquet stores no definition level per element (faster reads).
    assert not emb.value_field.nullable and not schema.field("embedding").nullable
    stored = json.loads(schema.metadata[b"ctfp"])
    assert stored["weights_sha256"] == "ab" * 32 and stored["dim"] == 8
    assert "ctfp_version" in stored and stored["dtype"] == "float32"
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/*.parquet'").fetchall()[0][0] == 10
    frame = pl.read_parquet(tmp_path / "*.parquet")
    assert frame.height == 10 and frame["id"].n_unique() == 10
    data = read_embeddings(tmp_path)
    assert data.matrix.shape == (10, 8) and data.matrix.dtype == np.float32
    np.testing.assert_array_equal(data.matrix, np.stack(frame["embedding"].to_list()))
    batches = list(iter_embeddings(tmp_path, batch_size=3))
    assert sum(len(b) for b in batches) == 10 and max(len(b) for b in batches) <= 3
    np.testing.assert_array_equal(np.concatenate([b.matrix for b in batches]), data.matrix)


def test_volumes_stay_in_one_shard_and_resume_by_base_id(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["vol"], frames=5)
        fill(w, ["img"])
    assert read_embeddings(tmp_path).ids.tolist() == [f"vol#{k}" for k in range(5)] + ["img"]
    w = ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2)
    assert w.pending(["vol", "img", "new"]) == {"new"}
    w.release()


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a"])
    with pytest.raises(ShardMismatchError, match="weights_sha256"):
        ShardWriter(tmp_path, metadata=meta(weights_sha256="cd" * 32))


def test_reader_refuses_mixed_models(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a", metadata=meta()) as w:
        fill(w, ["a"])
    with ShardWriter(tmp_path / "b", metadata=meta(weights_sha256="cd" * 32)) as w:
        fill(w, ["b"])
    with pytest.raises(ShardMismatchError, match="cannot be mixed"):
        read_embeddings([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ShardMismatchError):
        next(iter_embeddings([tmp_path / "a", tmp_path / "b"]))


def test_reader_refuses_duplicate_ids_and_missing_folders(tmp_path: Path) -> None:
    for sub, names in (("a", ["same"]), ("b", ["other", "same"]), ("c", ["same"])):
        with ShardWriter(tmp_path / sub, metadata=meta()) as w:
            fill(w, names)
    with pytest.raises(InputError, match="both hold the id 'same'"):
        read_embeddings([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match=r"both hold the id 'same' \(1 ids in common\)"):
        read_embeddings([tmp_path / "a", tmp_path / "c"])  # a shard's exact twin
    with pytest.raises(InputError, match="no ctfp shards"):
        read_embeddings(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_embeddings(tmp_path / "nope")


def test_errors_table_tracks_latest_attempt(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta()) as w:
        fill(w, ["good"])
        w.add_error("bad1", "/data/bad1.png", "empty file (0 bytes)")
        w.add_error("bad2", "/data/bad2.png", "truncated")
    assert sorted(read_errors(tmp_path).column("id").to_pylist()) == ["bad1", "bad2"]
    # Rerun: bad1 was fixed, bad2 still fails; nothing is duplicated.
    with ShardWriter(tmp_path, metadata=meta()) as w:
        assert w.pending(["good", "bad1", "bad2"]) == {"bad1", "bad2"}
        fill(w, ["bad1"])
        w.add_error("bad2", "/data/bad2.png", "truncated")
    assert read_errors(tmp_path).to_pylist() == [
        {"id": "bad2", "source": "/data/bad2.png", "reason": "truncated"}
    ]
    assert sorted(read_embeddings(tmp_path).ids) == ["bad1", "good"]


def test_stale_temp_files_are_cleaned_and_never_read(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    # ctfp's names: target, pid, mkstemp's 8 random characters.
    stale = [
        f".part-00000.parquet.{dead.pid}.ab12cd_4.tmp",
        f".errors.parquet.{dead.pid}.x1y2z3w4.tmp",
    ]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a shard")
    # Not ctfp's, or a live process's: left alone.
    kept = [
        ".notes.123.tmp",
        f".part-00001.parquet.{os.getpid()}.abcdefgh.tmp",  # a live process's
        ".part-9.parquet.tmp",
        f".part-00000.parquet.{dead.pid}.tmp",  # a user's files that only look alike
        f".part-00003.parquet.{dead.pid}.myedit.tmp",
    ]
    for name in kept:
        (tmp_path / name).write_bytes(b"someone else's")
    with ShardWriter(tmp_path, metadata=meta()) as w:
        fill(w, ["a"])
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == sorted(kept)
    assert len(read_embeddings(tmp_path)) == 1


def test_temp_files_are_new_files_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    # The old predictable temp name, and the lock file, planted as symlinks to the victim.
    (out / f".run.csv.{os.getpid()}.tmp").symlink_to(victim)
    (out / ".lock").symlink_to(victim)
    write_text_atomic(out / "run.csv", "a,1\n")
    assert (out / "run.csv").read_text() == "a,1\n" and victim.read_text() == "precious"
    with pytest.raises(CtfpError, match="cannot open the lock file"):
        ShardWriter(out, metadata=meta())
    assert victim.read_text() == "precious"
    # An ordinary lock file of that name is appended to, never truncated.
    (out / ".lock").unlink()
    (out / ".lock").write_text("mine")
    with ShardWriter(out, metadata=meta()) as w:
        fill(w, ["a"])
    assert (out / ".lock").read_text() == "mine"
    assert oct((out / "run.csv").stat().st_mode & 0o777) != oct(0o600)


def test_one_writer_per_folder(tmp_path: Path) -> None:
    first = ShardWriter(tmp_path, metadata=meta())
    with pytest.raises(CtfpError, match="another ctfp writer in this process"):
        ShardWriter(tmp_path, metadata=meta())
    code = (
        "import sys\nfrom ctfp.store.writer import ShardWriter\n"
        "from ctfp.exceptions import CtfpError\n"
        "try:\n    ShardWriter(sys.argv[1], metadata=eval(sys.argv[2]))\n"
        "except CtfpError as e:\n    print(e); sys.exit(3)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), repr(meta())], capture_output=True, text=True
    )
    assert other.returncode == 3 and "another ctfp process" in other.stdout
    first.close()
    ShardWriter(tmp_path, metadata=meta()).close()


def test_foreign_parquet_is_refused(tmp_path: Path) -> None:
    pq.write_table(pl.DataFrame({"x": [1]}).to_arrow(), tmp_path / "part-00000.parquet")
    with pytest.raises(ShardMismatchError, match="not written by ctfp"):
        ShardWriter(tmp_path, metadata=meta())


def test_shards_with_nullable_elements_still_read(tmp_path: Path) -> None:
    """Shards written before the elements were declared non-null sit beside new ones: the
    readers, the streamed scorer and DuckDB take both."""
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=4) as w:
        fill(w, [f"s{i:02d}" for i in range(8)])
    expected = read_embeddings(tmp_path).matrix
    old = tmp_path / "part-00000.parquet"
    table = pq.read_table(old)
    i = table.schema.get_field_index("embedding")
    nullable = pa.list_(pa.field("element", pa.float32(), nullable=True), 8)
    column = pa.FixedSizeListArray.from_arrays(table.column(i).combine_chunks().flatten(), 8)
    table = table.set_column(
        i, pa.field("embedding", nullable, nullable=False), column.cast(nullable)
    )
    pq.write_table(table, old)
    (tmp_path / "_manifest.json").unlink()  # such shards are in folders from before records
    assert pq.read_schema(old).field("embedding").type.value_field.nullable
    np.testing.assert_array_equal(read_embeddings(tmp_path).matrix, expected)
    streamed = np.concatenate([b.matrix for b in iter_embeddings(tmp_path, batch_size=3)])
    np.testing.assert_array_equal(streamed, expected)
    query = f"SELECT count(*) FROM '{tmp_path}/*.parquet' WHERE len(embedding) = 8"
    assert duckdb.sql(query).fetchall()[0][0] == 8


def test_a_truncated_shard_is_named(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["a", "b"])
    shard = tmp_path / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    for read in (read_embeddings, lambda p: list(iter_embeddings(p))):  # the record sees it
        with pytest.raises(ShardMismatchError, match=r"part-00001.parquet has 200 bytes where"):
            read(tmp_path)
    (tmp_path / "_manifest.json").unlink()  # a folder from before records: the footer sees it
    for read in (read_embeddings, lambda p: list(iter_embeddings(p))):
        with pytest.raises(InputError, match=r"part-00001.parquet is not a readable Parquet shard"):
            read(tmp_path)
    with pytest.raises(InputError, match=r"part-00001.parquet is not a readable Parquet shard"):
        ShardWriter(tmp_path, metadata=meta())  # resuming into the folder names it too


def test_shards_are_committed_by_time_as_well_as_by_rows(tmp_path: Path) -> None:
    import time

    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=1000, commit_seconds=0.2) as w:
        fill(w, ["a"])
        assert not list(tmp_path.glob("part-*.parquet"))  # neither enough rows nor time
        time.sleep(0.25)
        fill(w, ["b"])  # overdue: committed now, before the run ends
        assert [p.name for p in tmp_path.glob("part-*.parquet")] == ["part-00000.parquet"]
        fill(w, ["c"])
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "b", "c"]
    with pytest.raises(CtfpError, match="commit_seconds must be positive"):
        ShardWriter(tmp_path / "x", metadata=meta(), commit_seconds=0)


def test_shared_ids_are_refused_by_every_reader(tmp_path: Path) -> None:
    import shutil

    from ctfp.store.reader import check_compatible, shard_paths

    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "c", "e", "g"])
    readers = (
        read_embeddings,
        lambda p: list(iter_embeddings(p)),
        lambda p: check_compatible(shard_paths(p)),  # score_shards and cluster_shards
    )
    # Interleaved but distinct ids (files added to an archive between two runs): accepted.
    with ShardWriter(tmp_path / "more", metadata=meta()) as w:
        fill(w, ["b", "d"])
    for read in readers:
        read([tmp_path, tmp_path / "more"])
    # A copied shard, and a shard sharing only some ids with another: refused everywhere. (A
    # copy dropped into a folder is not named by its commit record: readers leave it out.)
    copies = tmp_path / "copies"
    copies.mkdir()
    shutil.copy(tmp_path / "part-00001.parquet", copies / "part-00008.parquet")
    for read in readers:
        with pytest.raises(InputError, match=r"part-0000[18].parquet and .*part-0000[18].*'e'"):
            read([tmp_path, copies / "part-00008.parquet"])
    with ShardWriter(tmp_path / "twice", metadata=meta()) as w:
        fill(w, ["f", "g", "h"])
    for read in readers:
        with pytest.raises(InputError, match=r"both hold the id 'g' \(1 ids in common\)"):
            read([tmp_path, tmp_path / "twice"])


def test_a_fifo_at_the_lock_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(CtfpError, match="lock file"):
        ShardWriter(tmp_path, metadata=meta())


def test_clashes_name_the_frame_ids_a_volume_would_take(tmp_path: Path) -> None:
    """What a Ray worker checks before writing a volume's frames (the local writer checks in
    add): rows already in the folder with the ids that volume would produce."""
    with ShardWriter(tmp_path, metadata=meta()) as w:
        fill(w, ["scan#1", "scan#x", "a#b"])
        fill(w, ["vol"], frames=2)
    w = ShardWriter(tmp_path, metadata=meta())
    assert w.clashes("scan") == ["scan#1"]
    assert w.clashes("vol") == ["vol#0", "vol#1"] and w.clashes("a") == []
    assert w.clashes("sc") == [] and w.clashes("scan#1") == []
    names = w.reserve_names(2)
    assert names == ["part-00001.parquet", "part-00002.parquet"]
    w.release()
