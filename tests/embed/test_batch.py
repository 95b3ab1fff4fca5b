"""``embed_batch``: Arrow in, Arrow out, the same rows as ``ctfp embed``; inside Ray Data too."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ctfp.embed.batch import _MAPPERS, embed_batch
from ctfp.embed.runner import embed
from ctfp.exceptions import InputError
from ctfp.settings import SettingsError
from ctfp.store.reader import read_embeddings
from ctfp.store.schema import read_metadata

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MULTIFRAME = DATA / "dicom-edge" / "MR_Explicit_Little_MultiFrame.dcm"
NO_PIXELS = DATA / "dicom-edge" / "rtstruct.dcm"
OPTIONS = {"features": "pixels:16", "dtype": "float32"}


def inputs(lung_pngs: list[Path], tmp_path: Path) -> tuple[pa.Table, Path]:
    """Four CT PNGs, a 16-frame DICOM and a DICOM without pixels: as a batch, and as the
    manifest ``ctfp embed`` reads (same paths, same ids)."""
    paths = [*lung_pngs[:4], MULTIFRAME, NO_PIXELS]
    ids = [f"slice {n}" for n in range(len(paths))]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id"])
        w.writerows(zip(map(str, paths), ids, strict=True))
    return pa.table({"path": list(map(str, paths)), "id": ids}), manifest


def test_rows_equal_those_of_ctfp_embed(lung_pngs: list[Path], tmp_path: Path) -> None:
    batch, manifest = inputs(lung_pngs, tmp_path)
    got = embed_batch(batch, **OPTIONS)
    embed(manifest, tmp_path / "shards", progress=False, **OPTIONS)
    shards = read_embeddings(tmp_path / "shards")
    # Every readable slice, in input order; a volume's frames as id#k.
    good = got.filter(pa.compute.is_null(got["error"]))
    assert good["id"].to_pylist() == list(shards.ids)
    assert good["id"].to_pylist()[4:6] == ["slice 4#0", "slice 4#1"] and len(good) == 4 + 16
    np.testing.assert_array_equal(
        np.stack(good["embedding"].to_numpy(zero_copy_only=False)), shards.matrix
    )
    # The same model identity, decoding and version as the shards: they score alike.
    meta = read_metadata(got.schema)
    assert meta == shards.metadata
    # The file without pixels is one row with its reason, not a failed batch.
    bad = got.filter(pa.compute.invert(pa.compute.is_null(got["error"])))
    assert bad["id"].to_pylist() == ["slice 5"] and bad["frame"].to_pylist() == [-1]
    assert bad["embedding"].null_count == 1 and "pixel" in bad["error"][0].as_py().lower()


def test_the_model_is_built_once_per_process(lung_pngs: list[Path]) -> None:
    batch = pa.table({"path": [str(p) for p in lung_pngs[:2]]})
    _MAPPERS.clear()
    first = embed_batch(batch, **OPTIONS)
    embed_batch(batch.to_batches()[0], **OPTIONS)  # a RecordBatch works too
    assert len(_MAPPERS) == 1
    embed_batch(batch, features="pixels:32")
    assert len(_MAPPERS) == 2
    assert first["id"].to_pylist() == [str(p) for p in lung_pngs[:2]]  # the path is the id


def test_what_it_refuses(lung_pngs: list[Path]) -> None:
    path = str(lung_pngs[0])
    with pytest.raises(InputError, match="needs a 'path' column"):
        embed_batch(pa.table({"file": [path]}), **OPTIONS)
    with pytest.raises(InputError, match="appears twice"):
        embed_batch(pa.table({"path": [path, path]}), **OPTIONS)
    with pytest.raises(InputError, match="row 1 has no path"):
        embed_batch(pa.table({"path": [path, None]}), **OPTIONS)
    with pytest.raises(SettingsError, match="not auto"):
        embed_batch(pa.table({"path": [path]}), features="auto")
    with pytest.raises(SettingsError, match="unknown option 'colour'"):
        embed_batch(pa.table({"path": [path]}), colour="red")
