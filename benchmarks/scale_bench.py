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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", default="bench-out/scale")
    parser.add_argument("--score-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_only:
        print(json.dumps(score(Path(args.score_only[0]), Path(args.score_only[1]))))
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
        shutil.rmtree(shards, ignore_errors=True)
        shutil.rmtree(scores, ignore_errors=True)


if __name__ == "__main__":
    main()
