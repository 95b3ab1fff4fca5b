"""Fingerprint features at the decoder's pace: embed() against the PIL decode rate, same files.

Prints one JSON line. The files are the 188 shared CT PNGs (256 px) repeated to a few thousand
(symbolic links in a temporary folder). Measured, in this order:

- the single-process PIL decode rate (open, decode, 8-bit gray, no resize): the baseline, and
  ctfp's own decoder (``decode_file``) on the same files;
- each fingerprint type through ``embed()`` with ``--workers`` 0, 1 and 2: slices/s and its
  ratio to the decode rate (wall time), CPU time per slice (this process and its loader
  workers) and ``ratio_per_core``, the PIL decode's CPU time per file over it (per core: what
  one core embeds while it could decode, which a busy shared machine disturbs far less than
  wall time), and the stage times (decode wait / forward / write);
- a run's feature types (task 2's fingerprint types) decoded once for all of them
  (``embed_many``, what ``ctfp run`` does) against one ``embed()`` per type, the loop runs used
  before, with the default workers;
- the floor (``floor``): what a type's features alone cost a slice already decoded, in memory
  (its ``forward`` on batches of 64 in one thread, no decode, no resize, no write), against the
  budget a ratio per core of 0.8 leaves beside PIL's decode (``decode * (1 / 0.8 - 1)``). A type
  whose forward alone costs more than the budget cannot reach 0.8 however the pipeline is built.

    python benchmarks/fingerprint_throughput.py [--repeat 16] [--workers 0,1,2]

``--repeat 1 --workers 0`` is a quick check that the script runs (figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ctfp.embed.features import ConcatFeatures, build_features
from ctfp.embed.runner import embed, embed_many
from ctfp.io.decode import decode_file

PNGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-pet-ct-dx" / "png"
TYPES = ("pixels:16", "pixels", "spectrum", "residual", "residual+spectrum")
RUN_TYPES = ("pixels:16", "residual", "spectrum", "pixels:16+residual", "residual+spectrum")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers are joined
    at the end of a run), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(function) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, value) of ``function()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    value = function()
    return time.perf_counter() - wall, cpu_seconds() - cpu, value


def pil_decode(paths: list[Path]) -> None:
    from PIL import Image

    for p in paths:
        with Image.open(p) as img:
            np.asarray(img.convert("L"))


def forward_cpu_us(features: str, frames: np.ndarray, batch: int = 64) -> float:
    """CPU µs per slice of ``features``' forward alone, one thread, on the decoded uint8
    ``frames`` (n, s, s) already resized to each part's side: the best of three passes."""
    model = build_features(features)
    joined = isinstance(model, ConcatFeatures)  # takes one view per part
    parts = list(model.parts) if joined else [model]
    views = [
        torch.from_numpy(np.stack([p.preprocessing.resize(f) for f in frames])[:, None])
        for p in parts
    ]

    def run() -> None:
        for start in range(0, len(frames), batch):
            chunk = [v[start : start + batch] for v in views]
            model(chunk if joined else chunk[0])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            run()  # warm-up: scratch tensors, tables
            best = min(measured(run)[1] for _ in range(3))
    finally:
        torch.set_num_threads(threads)
    return best / len(frames) * 1e6


def stage(timings: dict[str, float]) -> dict[str, float]:
    return {
        "decode_wait": round(timings["decode_wait"], 3),
        "forward": round(timings["infer"], 3),
        "write": round(timings["write"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(PNGS))
    parser.add_argument("--repeat", type=int, default=16, help="copies of each PNG (links)")
    parser.add_argument("--workers", default="0,1,2", help="loader workers to measure")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--run-types", default=",".join(RUN_TYPES))
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    unique = sorted(Path(args.images).glob("*.png"))
    line: dict = {
        "benchmark": "fingerprint_throughput",
        "unique_files": len(unique),
        "files": len(unique) * args.repeat,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for k in range(args.repeat):
            for p in unique:
                (src / f"r{k:03d}_{p.name}").symlink_to(p.resolve())
        paths = sorted(src.iterdir())
        n = len(paths)
        pil_decode(paths[:64])  # warm-up: imports, page cache
        wall, cpu, _ = measured(lambda: pil_decode(paths))
        decode_rate, decode_cpu = n / wall, cpu / n
        line["pil_decode_per_s"] = round(decode_rate, 1)
        line["pil_decode_cpu_us_per_file"] = round(decode_cpu * 1e6, 1)
        wall, cpu, _ = measured(lambda: [decode_file(p) for p in paths])
        line["ctfp_decode_file_per_s"] = round(n / wall, 1)
        line["ctfp_decode_file_cpu_us_per_file"] = round(cpu / n * 1e6, 1)
        frames = np.concatenate([decode_file(p) for p in unique])  # (n, s, s) uint8
        budget = decode_cpu * (1 / 0.8 - 1) * 1e6
        line["floor"] = {
            "budget_us_per_slice_at_0.8": round(budget, 1),
            "forward_cpu_us_per_slice": {
                f: round(forward_cpu_us(f, frames), 1) for f in args.types.split(",")
            },
        }

        def one(out: Path, features: str, w: int | None) -> dict:
            wall, cpu, r = measured(
                lambda: embed(src, out, features=features, workers=w, progress=False)
            )
            assert r.rows == n, r.summary()
            return {
                "slices_per_s": round(n / wall, 1),
                "cpu_us_per_slice": round(cpu / n * 1e6, 1),
                "ratio_to_decode": round(n / wall / decode_rate, 3),
                "ratio_per_core": round(decode_cpu / (cpu / n), 3),
                "workers": r.workers,
                "stage_seconds": stage(r.timings),
            }

        embed(paths[:64], Path(tmp) / "warm", features="residual", workers=0, progress=False)
        types = {}
        for features in args.types.split(","):
            types[features] = {
                f"workers_{w}": one(Path(tmp) / f"{features}-{w}", features, w) for w in workers
            }
        line["types"] = types

        run_types = args.run_types.split(",")
        outs = {f: Path(tmp) / "once" / f for f in run_types}
        wall_once, cpu_once, once = measured(lambda: embed_many(src, outs, progress=False))
        first = once[run_types[0]]
        loop: dict[str, dict] = {}
        for f in run_types:
            loop[f] = one(Path(tmp) / "loop" / f, f, None)
        wall_loop = sum(n / v["slices_per_s"] for v in loop.values())
        cpu_loop = sum(v["cpu_us_per_slice"] * n / 1e6 for v in loop.values())
        line["run_style"] = {
            "types": run_types,
            "decode_once": {
                "seconds": round(wall_once, 2),
                "slices_per_s": round(n / wall_once, 1),
                "cpu_us_per_slice": round(cpu_once / n * 1e6, 1),
                "workers": first.workers,
                "stage_seconds": stage(first.timings),
            },
            "one_type_at_a_time": {
                "seconds": round(wall_loop, 2),
                "slices_per_s": round(n / wall_loop, 1),
                "cpu_us_per_slice": round(cpu_loop / n * 1e6, 1),
                "per_type": {f: v["slices_per_s"] for f, v in loop.items()},
            },
            "speedup": round(wall_loop / wall_once, 2),
        }
    line["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
