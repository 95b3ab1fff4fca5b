"""The decoded-slice cache: decode once, embed from it with the same results, resume, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.cli import main
from ctfp.embed.runner import embed
from ctfp.exceptions import ShardMismatchError
from ctfp.store.cache import build_cache, is_slice_cache
from ctfp.store.reader import read_embeddings, read_errors
from tests.conftest import EDGE, copy_pngs


def test_embedding_from_the_cache_equals_embedding_the_images(
    tmp_path: Path, lung_pngs, random_backbone_64
) -> None:
    src = copy_pngs(lung_pngs[:12], tmp_path / "src")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")
    (src / "broken.png").write_bytes(b"not a png")
    result = build_cache(src, tmp_path / "cache", size=64, progress=False)
    assert result.rows == 12 + 16 and len(result.errors) == 1
    assert is_slice_cache(tmp_path / "cache") and not is_slice_cache(src)
    # A cache is not embeddings: handed to a reader, it is refused with what to do instead.
    with pytest.raises(ShardMismatchError, match=r"decoded-slice cache.*ctfp embed"):
        read_embeddings(tmp_path / "cache")
    assert read_errors(tmp_path / "cache").column("id").to_pylist() == ["broken"]
    schema = pq.read_schema(next((tmp_path / "cache").glob("part-*.parquet")))
    assert schema.field("pixels").type.byte_width == 64 * 64

    direct = embed(
        src,
        tmp_path / "direct",
        backbone_factory=random_backbone_64,
        progress=False,
        precision="fp32",
        dtype="float32",
    )
    cached = embed(
        tmp_path / "cache",
        tmp_path / "cached",
        backbone_factory=random_backbone_64,
        progress=False,
        precision="fp32",
        dtype="float32",
    )
    assert direct.rows == cached.rows == 28
    a, b = read_embeddings(tmp_path / "direct"), read_embeddings(tmp_path / "cached")
    assert sorted(a.ids) == sorted(b.ids)
    ia, ib = np.argsort(a.ids), np.argsort(b.ids)
    np.testing.assert_allclose(a.matrix[ia], b.matrix[ib], rtol=1e-5, atol=1e-5)
    frames = dict(zip(b.ids, b.table.column("frame").to_pylist(), strict=True))
    assert frames["mr#15"] == 15
    sources = dict(zip(b.ids, b.table.column("source").to_pylist(), strict=True))
    assert sources["mr#3"].endswith("mr.dcm")


def test_cache_resize_and_resume(tmp_path: Path, lung_pngs, random_backbone_64) -> None:
    src = copy_pngs(lung_pngs[:6], tmp_path / "src")
    assert (
        main(["cache", str(src), "--out", str(tmp_path / "cache"), "--size", "128", "--quiet"]) == 0
    )
    # Cached at 128, embedded at 64: the loader resizes.
    first = embed(
        tmp_path / "cache", tmp_path / "emb", backbone_factory=random_backbone_64, progress=False
    )
    assert first.rows == 6
    again = embed(
        tmp_path / "cache", tmp_path / "emb", backbone_factory=random_backbone_64, progress=False
    )
    assert again.rows == 0 and again.skipped_files == 6
    assert len(read_embeddings(tmp_path / "emb")) == 6
