"""Delta Lake tables: the shard writer's second commit protocol, read by ctfp and by others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from ctfp.exceptions import CtfpError, InputError
from ctfp.io.sources import InputFile
from ctfp.store.delta import ORPHAN_HOURS, pin, snapshot
from ctfp.store.reader import read_embeddings, read_errors
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter
from tests.store.test_shards import IDENTITY, fill, meta

deltalake = pytest.importorskip("deltalake")


def stored_as(dtype: str) -> dict:
    return make_metadata(IDENTITY, dtype, {"window": "auto"})


def table_rows(path: Path | str) -> list[str]:
    """The ids Polars reads through the Delta log (delta-rs), sorted."""
    return sorted(pl.read_delta(str(path))["id"].to_list())


def duckdb_rows(path: Path) -> list[str]:
    """The ids DuckDB reads with ``delta_scan``; skipped where its delta extension cannot be
    installed (it is downloaded from extensions.duckdb.org)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("INSTALL delta; LOAD delta")
    except duckdb.Error as exc:
        pytest.skip(f"DuckDB's delta extension cannot be installed here: {str(exc)[:120]}")
    return sorted(r[0] for r in con.execute(f"SELECT id FROM delta_scan('{path}')").fetchall())


def test_a_table_holds_the_rows_and_provenance_of_a_shard_folder(tmp_path: Path) -> None:
    names = [f"s{i:02d}" for i in range(10)]
    for out in (tmp_path / "folder", f"delta:{tmp_path / 'table'}"):
        with ShardWriter(out, metadata=stored_as("float16"), rows_per_shard=4) as w:
            fill(w, names)
            w.add_error("bad", "/data/bad.png", "not a PNG")
    table = tmp_path / "table"
    a, b = read_embeddings(tmp_path / "folder"), read_embeddings(f"delta:{table}")
    assert b.ids.tolist() == a.ids.tolist() and read_embeddings(table).ids.tolist() == names
    np.testing.assert_array_equal(a.matrix, b.matrix)  # float16 values, stored as float32
    assert b.table.equals(a.table)  # id, source, frame, label, fingerprint
    assert b.metadata["dtype"] == "float32" and b.metadata["model"] == a.metadata["model"]
    assert read_errors(f"delta:{table}").equals(read_errors(tmp_path / "folder"))
    # Every engine reads the committed rows through the log: a version per part.
    dt = deltalake.DeltaTable(str(table))
    assert dt.version() == 3 and table_rows(table) == names
    recorded = json.loads(dt.metadata().configuration["ctfp.metadata"])
    assert recorded == {**a.metadata, "dtype": "float32"}
    commits = [c for c in dt.history() if "ctfp" in c]
    assert [c["ctfp"]["rows"] for c in reversed(commits)] == [4, 4, 2]
    frame = pl.read_delta(str(table)).sort("id")
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_list()), b.matrix)
    assert pin(table) == f"delta:{table}@v3" and pin(tmp_path / "folder") == tmp_path / "folder"


def test_versions_are_snapshots_and_resume_reads_the_committed_ids(tmp_path: Path) -> None:
    table = f"delta:{tmp_path}"
    with ShardWriter(table, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b", "c"])
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:  # found as a table
        assert w.pending(["a", "b", "c", "d"]) == {"d"}
        fill(w, ["d"])
    assert sorted(read_embeddings(table).ids) == ["a", "b", "c", "d"]
    assert sorted(read_embeddings(f"{table}@v2").ids) == ["a", "b", "c"]
    assert snapshot(tmp_path, 1).version == 1 and len(snapshot(tmp_path, 1).files) == 1
    with pytest.raises(InputError, match="no version 9"):
        read_embeddings(f"{table}@v9")
    with pytest.raises(CtfpError, match="latest version"):
        ShardWriter(f"{table}@v1", metadata=meta())
    with pytest.raises(Exception, match="other settings"):
        ShardWriter(table, metadata=meta(model="vit"))


def test_a_changed_input_is_replaced_in_one_transaction(tmp_path: Path) -> None:
    table = f"delta:{tmp_path}"

    def run(stamp_of: dict[str, str]) -> None:
        files = [InputFile(n, f"/data/{n}.png", "used", stamp=s) for n, s in stamp_of.items()]
        with ShardWriter(table, metadata=meta(), rows_per_shard=2) as w:
            todo = w.resume(files)
            rng = np.random.default_rng(len(todo))
            for f in files:
                if f.id in todo:
                    w.add(f.id, [f.id], f.path, [0], f.label, rng.random((1, 8)), f.fingerprint)

    run({"a": "1", "b": "1", "c": "1"})
    before = read_embeddings(table)
    run({"a": "1", "b": "2", "c": "1"})  # b was overwritten: its row is embedded again
    after = read_embeddings(table)
    assert sorted(after.ids) == ["a", "b", "c"]
    stamps = after.table.column("fingerprint").to_pylist()
    assert dict(zip(after.ids, stamps, strict=True))["b"] == "2"
    old, new = (dict(zip(d.ids, d.matrix.tolist(), strict=True)) for d in (before, after))
    assert old["a"] == new["a"] and old["b"] != new["b"]
    assert sorted(read_embeddings(f"{table}@v2").ids) == ["a", "b", "c"]  # time travel
    assert table_rows(tmp_path) == ["a", "b", "c"]


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from ctfp.store.delta import table_schema
from ctfp.store.parts import rows_table, write_part
from ctfp.store.schema import shard_schema
from tests.store.test_shards import meta
m = {**meta(), "dtype": "float32"}
schema = table_schema(shard_schema(8, "float32", m, fingerprints=True))
rows = [(["ghost"], "/data/ghost.png", [0], None, np.ones((1, 8)), "1")]
write_part(os.path.join(sys.argv[1], "part-00009-deadbeef.parquet"), rows_table(schema, rows))
os.kill(os.getpid(), signal.SIGKILL)  # before the commit
"""


def test_a_writer_killed_before_its_commit_leaves_no_visible_row(tmp_path: Path) -> None:
    with ShardWriter(f"delta:{tmp_path}", metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b"])
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=root)
    assert done.returncode == -9
    orphan = tmp_path / "part-00009-deadbeef.parquet"
    assert orphan.exists()
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "b"] == table_rows(tmp_path)


def test_duckdb_reads_the_committed_rows(tmp_path: Path) -> None:
    with ShardWriter(f"delta:{tmp_path}", metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b", "c"])
    part = Path(w.shards_written[0])
    (tmp_path / "part-00009-deadbeef.parquet").write_bytes(part.read_bytes())  # uncommitted
    assert duckdb_rows(tmp_path) == ["a", "b", "c"]


def test_the_next_writer_deletes_an_old_uncommitted_part(tmp_path: Path) -> None:
    with ShardWriter(f"delta:{tmp_path}", metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a"])
    part = Path(w.shards_written[0])
    for name, hours in (("part-00007-0dd0dd00.parquet", 0), ("part-00008-01d01d01.parquet", 2)):
        (tmp_path / name).write_bytes(part.read_bytes())
        then = time.time() - hours * 3600 * ORPHAN_HOURS
        os.utime(tmp_path / name, (then, then))
    with ShardWriter(tmp_path, metadata=meta()):  # a young one may be a live writer's: kept
        pass
    assert (tmp_path / "part-00007-0dd0dd00.parquet").exists()
    assert not (tmp_path / "part-00008-01d01d01.parquet").exists() and part.exists()
    assert read_embeddings(tmp_path).ids.tolist() == ["a"]


def test_two_writers_append_their_own_inputs_or_one_is_refused(tmp_path: Path) -> None:
    table = f"delta:{tmp_path}"
    with ShardWriter(table, metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["seed"])
    # Both read version 1, then commit in turns: disjoint inputs are all committed once.
    first = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    second = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    fill(first, ["a1", "a2"])
    fill(second, ["b1"])
    fill(first, ["a3"])
    assert sorted(read_embeddings(table).ids) == ["a1", "a2", "a3", "b1", "seed"]
    # The same inputs: the one that commits second is refused, and commits nothing.
    third = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    fill(first, ["c"])
    with pytest.raises(CtfpError, match=r"same inputs.*'c'"):
        fill(third, ["c"])
    data = read_embeddings(table)  # refuses an id twice
    assert sorted(data.ids) == ["a1", "a2", "a3", "b1", "c", "seed"] == table_rows(tmp_path)


def test_concurrent_writers_in_threads_leave_every_row_once(tmp_path: Path) -> None:
    table = f"delta:{tmp_path}"
    ShardWriter(table, metadata=meta()).close()
    names = [[f"w{k}-{i}" for i in range(6)] for k in range(3)] + [["same"]] * 2
    errors: list[BaseException] = []

    def write(batch: list[str]) -> None:
        try:
            with ShardWriter(table, metadata=meta(), rows_per_shard=1) as w:
                fill(w, batch)
        except CtfpError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(read_embeddings(table).ids)
    assert ids == sorted({i for b in names for i in b}) == table_rows(tmp_path)
    assert len(errors) <= 1 and all("same inputs" in str(e) for e in errors)


def test_a_table_is_never_written_over_a_shard_folder(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta()) as w:
        fill(w, ["a"])
    with pytest.raises(InputError, match="not a Delta table"):
        ShardWriter(f"delta:{tmp_path}", metadata=meta())
    assert read_embeddings(tmp_path).ids.tolist() == ["a"]
    with pytest.raises(CtfpError, match="shard folder"):
        ShardWriter(f"delta:{tmp_path / 'cache'}", metadata=stored_as("uint8"))
    # A foreign table: rows ctfp did not write are refused, not read as embeddings.
    foreign = tmp_path / "foreign"
    deltalake.write_deltalake(str(foreign), pa.table({"id": ["x"]}))
    with pytest.raises(Exception, match="not written by ctfp"):
        read_embeddings(foreign)


def test_two_writers_of_a_table_on_an_s3_server(s3: str) -> None:
    table = f"delta:s3://{s3}/emb"  # commits are conditional writes (If-None-Match)
    first = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    second = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    fill(first, ["a"])
    with pytest.raises(CtfpError, match="same inputs"):
        fill(second, ["a"])  # read the version before first's commit: refused
    fill(second, ["b"])  # at the version after first's: appended
    assert sorted(read_embeddings(table).ids) == ["a", "b"]


def test_concurrent_writers_keep_each_others_errors(tmp_path: Path) -> None:
    table = f"delta:{tmp_path}"
    ShardWriter(table, metadata=meta()).close()
    first = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    second = ShardWriter(table, metadata=meta(), rows_per_shard=1)
    first.add_error("bad-a", "/data/bad-a.png", "truncated file")
    fill(first, ["a"])  # commits its row and the errors file
    second.add_error("bad-b", "/data/bad-b.png", "not an image")
    fill(second, ["b"])  # started before first's error was written: merges, not overwrites
    first.close(), second.close()
    errors = {e["id"]: e["reason"] for e in read_errors(table).to_pylist()}
    assert errors == {"bad-a": "truncated file", "bad-b": "not an image"}
    assert sorted(read_embeddings(table).ids) == ["a", "b"]
