"""The commit record of a shard folder: readers go by it, writers keep it, and what it names is
checked — on a local folder here (the object-store side is in test_object_store.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.store.manifest import MANIFEST_FILE, committed_shards, read_manifest
from ctfp.store.reader import read_embeddings, shard_paths
from ctfp.store.writer import ShardWriter
from tests.store.test_shards import fill, meta


def record(folder: Path) -> list[str]:
    return [p["name"] for p in json.loads((folder / MANIFEST_FILE).read_text())["parts"]]


def test_each_commit_names_its_part_with_rows_and_size(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b", "c", "d", "e"])
        assert record(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]
    parts = read_manifest(tmp_path)
    assert [p.name for p in parts] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [p.rows for p in parts] == [2, 2, 1]
    assert all(p.bytes == (tmp_path / p.name).stat().st_size for p in parts)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["format"] == "ctfp-manifest/1"
    assert [Path(p).name for p in shard_paths(tmp_path)] == [p.name for p in parts]


def test_a_part_the_record_does_not_name_is_left_out_by_readers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ShardWriter(tmp_path / "a", metadata=meta()) as w:
        fill(w, ["a", "b"])
    with ShardWriter(tmp_path / "b", metadata=meta()) as w:
        fill(w, ["c"])
    shutil.copy(tmp_path / "b" / "part-00000.parquet", tmp_path / "a" / "part-00007.parquet")
    with caplog.at_level("WARNING", logger="ctfp"):
        data = read_embeddings(tmp_path / "a")
    assert sorted(data.ids) == ["a", "b"]
    assert "part-00007.parquet" in caplog.text and "does not name" in caplog.text


def test_a_killed_runs_unrecorded_part_is_checked_and_adopted(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["a", "b", "c"])
    # As if killed between writing part 2 and recording it.
    doc = json.loads((tmp_path / MANIFEST_FILE).read_text())
    doc["parts"] = doc["parts"][:2]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "b"]
    w = ShardWriter(tmp_path, metadata=meta())
    assert w.pending(["a", "b", "c", "d"]) == {"d"}  # adopted: not embedded again
    w.close()
    assert record(tmp_path) == [f"part-0000{k}.parquet" for k in range(3)]
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "b", "c"]


def test_an_unrecorded_part_with_committed_rows_is_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["a", "b"])
    shutil.copy(tmp_path / "part-00000.parquet", tmp_path / "part-00009.parquet")
    with pytest.raises(
        ShardMismatchError, match=r"part-00009.parquet is not named .* \(e\.g\. 'a'\)"
    ):
        ShardWriter(tmp_path, metadata=meta())
    # The refused folder is not left locked.
    (tmp_path / "part-00009.parquet").unlink()
    ShardWriter(tmp_path, metadata=meta()).close()


def test_a_deleted_part_is_an_error_for_readers_and_embedded_again_by_writers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b", "c", "d"])
    (tmp_path / "part-00000.parquet").unlink()
    with pytest.raises(InputError, match=r"part-00000.parquet is missing: .*names it \(2 rows\)"):
        read_embeddings(tmp_path)
    with caplog.at_level("WARNING", logger="ctfp"):
        w = ShardWriter(tmp_path, metadata=meta())
    assert "embedded again" in caplog.text
    assert w.pending(["a", "b", "c", "d"]) == {"a", "b"}
    fill(w, ["a", "b"])
    w.close()
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "b", "c", "d"]


def test_a_replaced_part_is_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "x", metadata=meta(), rows_per_shard=2) as w:
        fill(w, ["a", "b"])
    with ShardWriter(tmp_path / "y", metadata=meta(), rows_per_shard=3) as w:
        fill(w, ["a", "b", "c"])
    shutil.copy(tmp_path / "y" / "part-00000.parquet", tmp_path / "x" / "part-00000.parquet")
    with pytest.raises(ShardMismatchError, match="bytes where the folder's commit record says"):
        read_embeddings(tmp_path / "x")
    with pytest.raises(ShardMismatchError, match="replaced since it was written"):
        ShardWriter(tmp_path / "x", metadata=meta())


def test_a_folder_from_before_records_is_read_by_listing_and_gets_one(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, metadata=meta(), rows_per_shard=1) as w:
        fill(w, ["a", "b"])
    (tmp_path / MANIFEST_FILE).unlink()
    assert [Path(p).name for p in committed_shards(tmp_path)] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    ShardWriter(tmp_path, metadata=meta()).close()  # resuming writes the record
    assert record(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "is not a ctfp commit record"),
        ('{"format": "other/1", "parts": []}', "format 'other/1'"),
        (
            '{"format": "ctfp-manifest/1", "parts": [{"name": "../x.parquet", "rows": 1, '
            '"bytes": 1}]}',
            "not a shard file name",
        ),
    ],
)
def test_a_broken_record_is_named(tmp_path: Path, text: str, match: str) -> None:
    with ShardWriter(tmp_path, metadata=meta()) as w:
        fill(w, ["a"])
    (tmp_path / MANIFEST_FILE).write_text(text)
    with pytest.raises(ShardMismatchError, match=match):
        read_embeddings(tmp_path)
    with pytest.raises(ShardMismatchError, match=match):
        ShardWriter(tmp_path, metadata=meta())
