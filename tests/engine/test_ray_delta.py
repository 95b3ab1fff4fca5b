"""The Ray engine into a Delta table: actors write the parts, the driver commits each one."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ctfp.embed.runner import embed
from ctfp.engine.settings import EngineSettings
from ctfp.store.reader import read_embeddings
from tests.conftest import assert_same_embeddings, copy_pngs

pytest.importorskip("ray.data", reason="ray is not installed (pip install 'ctfp[ray]')")
deltalake = pytest.importorskip("deltalake")
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning"),
    pytest.mark.slow,
]

SMALL = dict(features="pixels:16", progress=False)  # no network to start in each actor


def test_ray_fills_and_resumes_a_table_like_the_local_engine(
    tmp_path: Path, lung_pngs, ray_address: str
) -> None:
    src = copy_pngs(lung_pngs[:10], tmp_path / "src")
    local = embed(src, tmp_path / "local", rows_per_shard=4, **SMALL)
    table = tmp_path / "table"
    # The local engine starts the table, Ray adds the rest: one transaction per block's part.
    embed(sorted(src.glob("*.png"))[:4], f"delta:{table}", rows_per_shard=4, **SMALL)
    engine = EngineSettings(engine="ray", actors=2)
    result = embed(src, table, engine=engine, rows_per_shard=4, batch_size=2, **SMALL)
    assert result.skipped_files == 4 and result.rows == 6 and local.rows == 10
    assert_same_embeddings(read_embeddings(tmp_path / "local"), read_embeddings(table))
    dt = deltalake.DeltaTable(str(table))
    assert dt.version() == 1 + len(result.shards)  # version 1: the local part; then Ray's
    assert sorted(pl.read_delta(str(table))["id"]) == sorted(p.stem for p in src.glob("*.png"))
