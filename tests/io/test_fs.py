"""Locations: local paths and object-store URIs as pyarrow filesystems, against a real S3
endpoint on 127.0.0.1 (moto's server)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctfp.exceptions import InputError
from ctfp.io.fs import is_remote, resolve, scheme_of


def test_local_paths_and_file_uris(tmp_path: Path) -> None:
    plain = resolve(tmp_path / "a")
    assert plain.local and plain.path == str((tmp_path / "a").resolve())
    uri = resolve((tmp_path / "a").as_uri())
    assert uri.local and uri.path == plain.path and uri.uri.startswith("file://")
    assert scheme_of("S3://b/k") == "s3" and scheme_of(str(tmp_path)) is None
    assert is_remote("gs://b/k") and not is_remote(tmp_path) and not is_remote("file:///x")
    assert resolve(tmp_path).join("x", "/y/").path == str(tmp_path.resolve()) + "/x/y"


def test_what_cannot_be_resolved() -> None:
    with pytest.raises(InputError, match="empty path"):
        resolve("")
    with pytest.raises(InputError, match="unknown storage scheme 'nope'"):
        resolve("nope://bucket/key")


def test_s3_through_the_standard_environment(s3: str) -> None:  # s3: a fresh bucket
    """Write and read a Parquet file and list a prefix on s3:// with no ctfp setting at all:
    the endpoint and keys come from AWS_* variables; the location never shows the secret."""
    loc = resolve(f"s3://{s3}/shards")
    assert not loc.local and loc.path == f"{s3}/shards"
    table = pa.table({"id": ["a", "b"], "x": [1.0, 2.0]})
    part = loc.join("part-00000.parquet")
    pq.write_table(table, part.path, filesystem=part.filesystem)
    assert pq.read_table(part.path, filesystem=loc.filesystem).equals(table)
    import pyarrow.fs as pafs

    listed = loc.filesystem.get_file_info(pafs.FileSelector(loc.path))
    assert [i.base_name for i in listed] == ["part-00000.parquet"]
    shown = repr(loc) + str(loc)
    assert "ctfp-test-secret" not in shown and "ctfp-test-key" not in shown
    missing = resolve(f"s3://{s3}/nothing/here.parquet")
    assert missing.filesystem.get_file_info(missing.path).type == pafs.FileType.NotFound
