"""``embed_batch`` inside another engine's job: Ray Data's ``map_batches``, as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ctfp.embed.batch import embed_batch

# Ray Data in a local cluster: outside `make test-fast`.
pytestmark = pytest.mark.slow

OPTIONS = {"features": "pixels:16", "dtype": "float32"}


def test_inside_ray_data_map_batches(lung_pngs: list[Path], ray_address: str) -> None:
    import ray

    batch = pa.table({"path": [str(p) for p in lung_pngs[:6]]})
    ds = ray.data.from_arrow(batch).repartition(3)  # three blocks, three calls
    out = ds.map_batches(embed_batch, batch_format="pyarrow", fn_kwargs=OPTIONS)
    got = pa.concat_tables(ray.get(out.to_arrow_refs())).sort_by("id")
    direct = embed_batch(batch, **OPTIONS).sort_by("id")
    assert got["id"].to_pylist() == direct["id"].to_pylist() and len(got) == 6
    np.testing.assert_array_equal(
        np.stack(got["embedding"].to_numpy(zero_copy_only=False)),
        np.stack(direct["embedding"].to_numpy(zero_copy_only=False)),
    )
    assert got.schema.metadata == direct.schema.metadata  # the model identity travels along
