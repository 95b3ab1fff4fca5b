"""Archive-scale scoring: synthetic float16 2048-d shards, streamed through fitted models.

For each size (10k, 100k, 1M rows) it writes shards with the real ShardWriter, then scores them
against 64 L1 centres (CentroidMembership, k = 32 per class) with ``score_shards`` in a fresh
process, and prints one JSON line per size: rows, seconds, rows/s and that process's peak RSS.
With ``--fits``: streamed k-means and GMM fits over the shards, and proximity scoring against a
100k generated set with an IVF index (up to ``--proximity-max-rows`` rows; a CPU IVF search is
~1,000x the work of 64 centres per row).

The rows are drawn from a mixture of 1,000 clusters (ReLU of a centre plus noise), the shape of
real CT embeddings (slices of the same anatomy cluster). Unclustered noise would be no archive:
on it, IVF lists are wildly unbalanced and approximate search degenerates.

    python benchmarks/scale_bench.py [--sizes 10000,100000,1000000] [--fits] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D = 2048
IDENTITY = {
    "model": "synthetic",
    "weights": "none",
    "weights_sha256": "0" * 64,
    "dim": D,
    "preprocessing": {},
}


CENTRES = np.random.default_rng(12345).gamma(1.0, 1.0, (1000, D)).astype(np.float32)


def sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """n rows of the clustered synthetic embedding distribution (float32), made in blocks so
    that the temporaries do not set the peak RSS a benchmark reports."""
    x = CENTRES[rng.integers(0, len(CENTRES), n)]
    for i in range(0, n, 10_000):
        block = x[i : i + 10_000]
        block += rng.standard_normal(block.shape, dtype=np.float32) * 0.5
        np.maximum(block, 0.0, out=block)
    return x


def write(out: Path, n: int, seed: int = 0) -> float:
    from ctfp.store.schema import make_metadata
    from ctfp.store.writer import ShardWriter

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    block = 10_000
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(out, metadata=meta, rows_per_shard=100_000) as w:
        for first in range(0, n, block):
            m = min(block, n - first)
            x = sample(rng, m).astype(np.float16)
            ids = [f"r{i:08d}" for i in range(first, first + m)]
            w.add(f"block{first}", ids, "synthetic", range(m), None, x)
    return time.perf_counter() - start


def score(shards: Path, out: Path) -> dict:
    """Runs in its own process so that its peak RSS is the scoring's alone."""
    from ctfp.membership.centroid import CentroidMembership
    from ctfp.runs.score import score_shards

    rng = np.random.default_rng(1)
    train = np.concatenate([sample(rng, 2000), sample(rng, 2000)])
    labels = np.repeat([1, 0], 2000)
    model = CentroidMembership(32, device="cpu").fit(train, labels)
    result = score_shards(model, shards, out, progress=False)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def proximity_and_fits(shards: Path, out: Path, n: int, proximity_max_rows: int) -> dict:
    """Runs in its own process: streamed k-means / GMM fits over the shards, and proximity
    scoring against 100k generated rows (IVF, recall@1 measured against exact search)."""
    import torch

    from ctfp.cluster import GaussianMixture, KMeans
    from ctfp.membership.proximity import ProximityMembership
    from ctfp.runs.score import score_shards
    from ctfp.store.reader import iter_embeddings

    def batches():
        return (e.matrix for e in iter_embeddings(shards, batch_size=16_384))

    result: dict = {}
    first = next(iter(batches()))
    t = time.perf_counter()
    KMeans(64, device="cpu").fit_stream(batches, first[:5000], passes=2)
    result["kmeans64_2_passes_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    GaussianMixture(
        8,
        covariance_type="diag",
        max_iter=3,
        tol=0.0,
        device="cpu",
        dtype=torch.float32,
        random_state=0,
    ).fit_stream(batches, first[:5000], init_max_iter=5)
    result["gmm8_diag_3_passes_s"] = round(time.perf_counter() - t, 2)
    if n <= proximity_max_rows:
        rng = np.random.default_rng(2)
        generated, train = sample(rng, 100_000), sample(rng, 400)
        t = time.perf_counter()
        model = ProximityMembership(metric="l2", index="ivf", device="cpu").fit(
            train, np.arange(400) % 2, generated
        )
        result["proximity_ivf_build_s"] = round(time.perf_counter() - t, 2)
        result["proximity_ivf_nlist"] = int(model.index_.index.nlist)
        result["proximity_ivf_nprobe"] = int(model.index_.index.nprobe)
        result["proximity_recall_at_1"] = model.recall_
        prox = score_shards(model, shards, out / "prox", progress=False)
        result["proximity_rows_per_s"] = round(prox["rows_per_second"])
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", default="bench-out/scale")
    parser.add_argument("--score-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--fits-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--fits",
        action="store_true",
        help="also streamed fits and proximity scoring vs 100k generated rows",
    )
    parser.add_argument("--proximity-max-rows", type=int, default=100_000)
    args = parser.parse_args()
    if args.score_only:
        print(json.dumps(score(Path(args.score_only[0]), Path(args.score_only[1]))))
        return
    if args.fits_only:
        shards, out = Path(args.fits_only[0]), Path(args.fits_only[1])
        n = int(args.sizes)
        print(json.dumps(proximity_and_fits(shards, out, n, args.proximity_max_rows)))
        return
    root = Path(args.out)
    for n in (int(v) for v in args.sizes.split(",")):
        shards, scores = root / f"emb-{n}", root / f"scores-{n}"
        for folder in (shards, scores):
            shutil.rmtree(folder, ignore_errors=True)
        write_s = write(shards, n)
        child = subprocess.run(
            [sys.executable, __file__, "--score-only", str(shards), str(scores)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    "benchmark": "scale_score_l1_64_centres",
                    "rows": n,
                    "dim": D,
                    "write_seconds": round(write_s, 2),
                    "score_seconds": round(result["seconds"], 2),
                    "rows_per_second": round(result["rows_per_second"]),
                    "peak_rss_mib": round(result["peak_rss_mib"]),
                }
            ),
            flush=True,
        )
        if args.fits:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--fits-only",
                    str(shards),
                    str(scores),
                    "--sizes",
                    str(n),
                    "--proximity-max-rows",
                    str(args.proximity_max_rows),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            fits = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                json.dumps({"benchmark": "scale_fits_and_proximity", "rows": n, **fits}), flush=True
            )
        shutil.rmtree(shards, ignore_errors=True)
        shutil.rmtree(scores, ignore_errors=True)


if __name__ == "__main__":
    main()
