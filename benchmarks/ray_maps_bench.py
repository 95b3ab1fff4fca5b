"""`ctfp score` and `ctfp cluster` on the local engine vs on Ray, same shards, same run.

Writes ``--rows`` synthetic float16 rows (``--dim`` wide, blobs) in shards of
``--rows-per-shard``, then scores them with a seed-method model and fits a streamed diagonal
mixture, once per engine, and prints one JSON line per (stage, engine) with the seconds, rows/s
and whether the outputs agree with the local engine's (scores to 1e-6, mixture means to 1e-9).

    python benchmarks/ray_maps_bench.py [--rows 200000] [--dim 256] [--rows-per-shard 20000]
        [--passes 5] [--ray-address ADDR]

On one small machine this measures Ray's overhead, not a speed-up: the figures that matter on
a cluster are that the outputs agree and that the driver receives summaries (score) and O(k d)
statistics per shard (cluster), never rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ctfp.attribution.shards import cluster_shards
from ctfp.engine.ray_map import require_ray
from ctfp.engine.settings import EngineSettings
from ctfp.membership.centroid import CentroidMembership
from ctfp.runs.score import score_shards
from ctfp.store.manifest import read_manifest
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter


def write_rows(out: Path, rows: int, dim: int, per_shard: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (4, dim))
    x = (centres[rng.integers(0, 4, rows)] + rng.normal(size=(rows, dim))).astype(np.float16)
    identity = {"model": "synthetic", "weights": "none", "weights_sha256": "0" * 64, "dim": dim}
    meta = make_metadata({**identity, "preprocessing": {}}, "float16", {})
    with ShardWriter(out, metadata=meta, rows_per_shard=per_shard) as w:
        for start in range(0, rows, 1000):
            block = x[start : start + 1000]
            for i in range(len(block)):
                w.add(
                    f"r{start + i:08d}",
                    [f"r{start + i:08d}"],
                    "synthetic",
                    [0],
                    None,
                    block[i : i + 1],
                )
    return x


def scores_of(folder: Path) -> np.ndarray:
    return np.concatenate(
        [pq.read_table(folder / p.name).column("score").to_numpy() for p in read_manifest(folder)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--rows-per-shard", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args()
    ray = require_ray()
    started = time.perf_counter()
    if args.ray_address:
        ray.init(address=args.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    ray_init = time.perf_counter() - started
    about = {"machine": platform.node(), "cpus": os.cpu_count(), "rows": args.rows, "dim": args.dim}
    print(json.dumps({"ray_init_s": round(ray_init, 2), **about}))
    engines = {"local": EngineSettings(), "ray": EngineSettings(engine="ray")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        x = write_rows(root / "emb", args.rows, args.dim, args.rows_per_shard)
        labels = np.r_[np.ones(500, int), np.zeros(500, int)]
        model = CentroidMembership(4, device="cpu").fit(x[:1000].astype(np.float32), labels)
        for name, engine in engines.items():
            start = time.perf_counter()
            score_shards(model, root / "emb", root / f"s-{name}", engine=engine, progress=False)
            seconds = time.perf_counter() - start
            line = {"stage": "score", "engine": name, "seconds": round(seconds, 2)}
            print(json.dumps({**line, "rows_per_s": round(args.rows / seconds)}))
        same = np.allclose(scores_of(root / "s-local"), scores_of(root / "s-ray"), rtol=1e-6)
        print(json.dumps({"stage": "score", "outputs_agree": bool(same)}))
        fits = {}
        for name, engine in engines.items():
            start = time.perf_counter()
            fits[name], _ = cluster_shards(
                root / "emb", k=4, covariance_type="diag", sample=20_000, passes=args.passes,
                tol=0.0, device="cpu", engine=engine,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            rate = round(args.rows * (args.passes + 1) / seconds)  # the sampling pass too
            line = {"stage": "cluster", "engine": name, "seconds": round(seconds, 2)}
            print(json.dumps({**line, "passes": args.passes, "rows_per_s_per_pass": rate}))
        a, b = fits["local"].model, fits["ray"].model
        agree = np.allclose(a.means_, b.means_, rtol=1e-9, atol=1e-9) and np.array_equal(
            fits["local"].labels, fits["ray"].labels
        )
        print(json.dumps({"stage": "cluster", "outputs_agree": bool(agree)}))


if __name__ == "__main__":
    main()
