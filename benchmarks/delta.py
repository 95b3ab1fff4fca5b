"""Scoring from a Delta table vs from a shard folder: the same rows, same machine, same run.

Writes N synthetic 2048-d float16 embeddings (the clustered rows of ``scale_bench``) with the
real ShardWriter into a shard folder and into a Delta table (``delta:PATH``: float32 values,
as Delta has no 16-bit float), then scores each against 64 L1 centres with ``score_shards``
in fresh processes, alternating (folder, table, folder, table...), and prints one JSON line:
each format's best rows/s, its peak RSS, bytes on disk, and the table's rows/s as a fraction
of the folder's (the issue asks for at least 0.9).

    python benchmarks/delta.py [--rows 1000000] [--repeats 2] [--out bench-out/delta] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_bench import IDENTITY, sample, score


def write(out: str, n: int, seed: int = 0) -> float:
    """The same ``n`` rows into ``out`` (a folder, or ``delta:PATH``); seconds taken."""
    from ctfp.store.schema import make_metadata
    from ctfp.store.writer import ShardWriter

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    meta = make_metadata(IDENTITY, "float16", {})
    with ShardWriter(out, metadata=meta, rows_per_shard=100_000) as w:
        for first in range(0, n, 10_000):
            m = min(10_000, n - first)
            x = sample(rng, m).astype(np.float16)
            ids = [f"r{i:08d}" for i in range(first, first + m)]
            w.add(f"block{first}", ids, "synthetic", range(m), None, x)
    return time.perf_counter() - start


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="bench-out/delta")
    parser.add_argument(
        "--reuse", action="store_true", help="score what an earlier run wrote in --out again"
    )
    parser.add_argument("--score-only", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_only:
        print(json.dumps(score(args.score_only[0], Path(args.score_only[1]))))
        return
    root = Path(args.out)
    folder, table = root / "folder", root / "table"
    if args.reuse:  # the rows of an earlier run: its count, no write times
        from ctfp.store.reader import count_rows, shard_paths

        args.rows, written = count_rows(shard_paths(folder)), {"folder": None, "table": None}
    else:
        shutil.rmtree(root, ignore_errors=True)
        written = {
            "folder": write(str(folder), args.rows),
            "table": write(f"delta:{table}", args.rows),
        }
    runs: dict[str, list[dict]] = {"folder": [], "table": []}
    for k in range(args.repeats):
        for name, shards in (("folder", folder), ("table", f"delta:{table}")):
            scores = root / f"scores-{name}-{k}"
            cmd = [sys.executable, __file__, "--score-only", str(shards), str(scores)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(line.strip().splitlines()[-1]))
            shutil.rmtree(scores)
    best = {name: max(r, key=lambda r: r["rows_per_second"]) for name, r in runs.items()}
    result = {
        "rows": args.rows,
        "dim": 2048,
        "repeats": args.repeats,
        **{
            f"{name}_{key}": value
            for name, r in best.items()
            for key, value in (
                ("rows_per_s", round(r["rows_per_second"])),
                ("peak_rss_mib", round(r["peak_rss_mib"])),
                ("write_s", written[name] and round(written[name], 1)),
                ("bytes", size(folder if name == "folder" else table)),
            )
        },
        "all_rows_per_s": {n: [round(r["rows_per_second"]) for r in rs] for n, rs in runs.items()},
        "table_vs_folder": round(
            best["table"]["rows_per_second"] / best["folder"]["rows_per_second"], 3
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
