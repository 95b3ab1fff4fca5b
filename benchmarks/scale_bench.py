"""Archive-scale scoring: synthetic float16 2048-d shards, streamed through the seed model.

For each size (10k, 100k, 1M rows) it writes shards with the real ShardWriter, then scores them
against 64 L1 centres (CentroidMembership, k = 32 per class) with ``score_shards`` in a fresh
process, and prints one JSON line per size: rows, seconds, rows/s and that process's peak RSS.

    python benchmarks/scale_bench.py [--sizes 10000,100000,1000000] [--out bench-out/scale]
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
            x = rng.gamma(1.0, 1.0, (m, D)).astype(np.float16)
            ids = [f"r{i:08d}" for i in range(first, first + m)]
            w.add(f"block{first}", ids, "synthetic", range(m), None, x)
    return time.perf_counter() - start


def score(shards: Path, out: Path) -> dict:
    """Runs in its own process so that its peak RSS is the scoring's alone."""
    from ctfp.tasks.membership import CentroidMembership
    from ctfp.tasks.score import score_shards

    rng = np.random.default_rng(1)
    model = CentroidMembership(32, device="cpu").fit(
        rng.gamma(1.0, 1.0, (2000, D)), rng.gamma(1.1, 1.0, (2000, D))
    )
    result = score_shards(model, shards, out, progress=False)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def proximity_and_fits(shards: Path, out: Path, n: int) -> dict:
    """Runs in its own process: proximity scoring against 100k generated rows (IVF, recall
    measured), and streamed k-means / GMM fits over the shards."""
    from ctfp.cluster import GaussianMixture, KMeans
    from ctfp.store.reader import iter_embeddings
    from ctfp.tasks.proximity import ProximityMembership
    from ctfp.tasks.score import score_shards

    rng = np.random.default_rng(2)
    generated = rng.gamma(1.0, 1.0, (100_000, D)).astype(np.float32)
    train = rng.gamma(1.0, 1.0, (400, D)).astype(np.float32)
    t = time.perf_counter()
    model = ProximityMembership(metric="l2", index="ivf", device="cpu").fit(
        generated, train, np.arange(400) % 2
    )
    build_s = time.perf_counter() - t
    prox = score_shards(model, shards, out / "prox", progress=False)

    def batches():
        return (e.matrix for e in iter_embeddings(shards, batch_size=16_384))

    sample = next(iter(batches()))[:5000]
    t = time.perf_counter()
    KMeans(64, device="cpu").fit_stream(batches, sample, passes=2)
    kmeans_s = time.perf_counter() - t
    t = time.perf_counter()
    GaussianMixture(
        8,
        covariance_type="diag",
        max_iter=3,
        tol=0.0,
        device="cpu",
        dtype=__import__("torch").float32,
        random_state=0,
    ).fit_stream(batches, sample, init_max_iter=5)
    gmm_s = time.perf_counter() - t
    return {
        "proximity_ivf_build_s": round(build_s, 2),
        "proximity_recall_at_1": model.recall_,
        "proximity_rows_per_s": round(prox["rows_per_second"]),
        "kmeans64_2_passes_s": round(kmeans_s, 2),
        "gmm8_diag_3_passes_s": round(gmm_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", default="bench-out/scale")
    parser.add_argument("--score-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--fits-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--fits",
        action="store_true",
        help="also proximity scoring vs 100k generated rows and streamed fits",
    )
    args = parser.parse_args()
    if args.score_only:
        print(json.dumps(score(Path(args.score_only[0]), Path(args.score_only[1]))))
        return
    if args.fits_only:
        shards, out = Path(args.fits_only[0]), Path(args.fits_only[1])
        print(json.dumps(proximity_and_fits(shards, out, 0)))
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
                [sys.executable, __file__, "--fits-only", str(shards), str(scores)],
                check=True,
                capture_output=True,
                text=True,
            )
            fits = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                json.dumps({"benchmark": "scale_proximity_and_fits", "rows": n, **fits}), flush=True
            )
        shutil.rmtree(shards, ignore_errors=True)
        shutil.rmtree(scores, ignore_errors=True)


if __name__ == "__main__":
    main()
