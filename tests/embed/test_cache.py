"""Building the decoded-slice cache: decode once, embed from it with the same results, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.embed.cache import build_cache
from ctfp.embed.runner import embed
from ctfp.embed.settings import CacheSettings
from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.settings import SettingsError
from ctfp.store.cache import is_slice_cache
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
    assert result.settings == CacheSettings(size=64).to_dict() and result.precision == "fp32"
    assert is_slice_cache(tmp_path / "cache") and not is_slice_cache(src)
    # A cache is not embeddings: handed to a reader, it is refused with what to do instead.
    with pytest.raises(ShardMismatchError, match=r"decoded-slice cache.*ctfp embed"):
        read_embeddings(tmp_path / "cache")
    assert read_errors(tmp_path / "cache").column("id").to_pylist() == ["broken"]
    schema = pq.read_schema(next((tmp_path / "cache").glob("part-*.parquet")))
    assert schema.field("pixels").type.byte_width == 64 * 64

    options = dict(backbone_factory=random_backbone_64, progress=False, precision="fp32")
    direct = embed(src, tmp_path / "direct", dtype="float32", **options)
    cached = embed(tmp_path / "cache", tmp_path / "cached", dtype="float32", **options)
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
    first = build_cache(src, tmp_path / "cache", CacheSettings(size=128), progress=False)
    assert first.rows == 6
    again = build_cache(src, tmp_path / "cache", CacheSettings(size=128), progress=False)
    assert again.rows == 0 and again.skipped_files == 6
    # Cached at 128, embedded at 64: the reader resizes.
    options = dict(backbone_factory=random_backbone_64, progress=False)
    assert embed(tmp_path / "cache", tmp_path / "emb", **options).rows == 6
    again = embed(tmp_path / "cache", tmp_path / "emb", **options)
    assert again.rows == 0 and again.skipped_files == 6
    assert len(read_embeddings(tmp_path / "emb")) == 6
    # Another size is another identity: the folder refuses it instead of mixing.
    with pytest.raises(ShardMismatchError):
        build_cache(src, tmp_path / "cache", size=64, progress=False)


def test_cache_options_are_checked(tmp_path: Path, lung_pngs) -> None:
    with pytest.raises(SettingsError, match=r"CacheSettings\.size must be at least 8"):
        build_cache(lung_pngs[0], tmp_path / "c", size=4)
    with pytest.raises(SettingsError, match=r"build_cache\(\) got an unknown option 'batch_size'"):
        build_cache(lung_pngs[0], tmp_path / "c", batch_size=4)
    with pytest.raises(SettingsError, match="takes CacheSettings settings"):
        build_cache(lung_pngs[0], tmp_path / "c", object())  # type: ignore[arg-type]
    assert not (tmp_path / "c").exists()


def test_embeddings_from_a_cache_carry_its_decoding(
    tmp_path: Path, lung_pngs, random_backbone_64
) -> None:
    src = copy_pngs(lung_pngs[:4], tmp_path / "src")
    shutil.copy(EDGE / "CT_Explicit_Little.dcm", src / "ct.dcm")
    build_cache(src, tmp_path / "bone", size=64, window="bone", progress=False)
    build_cache(src, tmp_path / "big", size=128, progress=False)
    options = dict(backbone_factory=random_backbone_64, progress=False)
    embed(tmp_path / "bone", tmp_path / "e-bone", **options)
    assert read_embeddings(tmp_path / "e-bone").metadata["decode"] == {"window": "hu:400,1800"}
    # Cached at another size than the model's: other pixels, another identity.
    embed(tmp_path / "big", tmp_path / "e-big", **options)
    decode = read_embeddings(tmp_path / "e-big").metadata["decode"]
    assert decode == {"window": "auto:-600,1500", "cached_size": 128}
    # Cached slices are 8-bit already: another window cannot be applied to them.
    with pytest.raises(SettingsError, match=r"differs from the window the cache was decoded"):
        embed(tmp_path / "bone", tmp_path / "e-lung", window="lung", **options)
    embed(tmp_path / "bone", tmp_path / "e-bone2", window="400,1800", **options)  # the same
    with pytest.raises(InputError, match="were decoded differently"):
        embed([tmp_path / "bone", tmp_path / "big"], tmp_path / "e-mixed", **options)
