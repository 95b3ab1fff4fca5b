"""Reading a decoded-slice cache: recognising its folder and listing its rows as inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.sources import InputFile
from ctfp.store.cache import cache_rows, is_slice_cache
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter

IDENTITY = {"model": "slices", "weights": "none", "weights_sha256": "0", "dim": 16}


def write(out: Path, dtype: str) -> Path:
    """Three files, the second with 2 frames: a shard is committed once it holds 2 rows."""
    meta = make_metadata({**IDENTITY, "preprocessing": {}}, dtype, {"window": "auto:-600,1500"})
    with ShardWriter(out, metadata=meta, rows_per_shard=2) as writer:
        writer.add("a", ["a"], "/in/a.png", [0], "x", np.zeros((1, 16), np.uint8))
        writer.add("v", ["v#0", "v#1"], "/in/v.dcm", [0, 1], None, np.ones((2, 16), np.uint8))
        writer.add("b", ["b"], "/in/b.png", [0], None, np.zeros((1, 16), np.uint8))
    return out


def test_a_cache_folder_is_recognised(tmp_path: Path) -> None:
    cache = write(tmp_path / "cache", "uint8")
    embeddings = write(tmp_path / "emb", "float16")
    assert is_slice_cache(cache)
    assert not is_slice_cache(embeddings) and not is_slice_cache(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not is_slice_cache(tmp_path / "empty")


def test_cache_rows_are_inputs_with_their_place(tmp_path: Path) -> None:
    cache = write(tmp_path / "cache", "uint8")
    rows = cache_rows(cache)
    shards = sorted(str(p) for p in cache.glob("part-*.parquet"))
    assert rows == [
        InputFile("a", "/in/a.png", "x", 0, (shards[0], 0, 0)),
        InputFile("v#0", "/in/v.dcm", None, 0, (shards[0], 0, 1)),
        InputFile("v#1", "/in/v.dcm", None, 1, (shards[0], 0, 2)),
        InputFile("b", "/in/b.png", None, 0, (shards[1], 0, 0)),
    ]
    assert cache_rows([tmp_path / "emb"]) is None and cache_rows(str(tmp_path)) is None
    with pytest.raises(InputError, match="not both"):
        cache_rows([cache, write(tmp_path / "emb", "float16")])


def test_only_a_folder_with_shard_names_is_looked_into(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(b"")
    assert cache_rows(images) is None and not is_slice_cache(images)
    # A cache from before commit records: its parts, found by name.
    cache = write(tmp_path / "cache", "uint8")
    (cache / "_manifest.json").unlink()
    assert is_slice_cache(cache) and len(cache_rows(cache)) == 4
    # A record among images is read (and refused) as before.
    (images / "_manifest.json").write_text("{}")
    with pytest.raises(ShardMismatchError, match="not a ctfp commit record"):
        cache_rows(images)
