"""Embedding throughput: the local engine vs the Ray engine, same inputs, same run.

Prints JSON lines: one per engine run, then one comparison line (best of ``--rounds``) with
the ratio. Each run embeds the same files into a fresh folder with the same model factory
(random weights unless told), so the figures differ only by the engine. The Ray runs join one
Ray started (and timed) up front; each Ray run still starts its own actor pool, which the
``startup`` timing shows.

    python benchmarks/ray_bench.py [--images DIR] [--image-size 224] [--actors 1,2]
        [--repeat N] [--rounds N] [--ray-address ADDR]

Ray lines also give the driver's CPU seconds and the bytes it received from the workers
(``driver_bytes``; older ctfp, whose driver collected every embedding, has none: compare with
``embedding_bytes``, what the embeddings alone weigh).

``--repeat N`` lists every image N times under distinct ids (a manifest), to see the steady
state once the actor start-up is amortised. A quick check that it runs (figures meaningless):
``--images ctfp/data/sample/png --image-size 64``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ctfp.embed.runner import embed
from ctfp.engine.ray_map import require_ray
from ctfp.engine.settings import EngineSettings
from ctfp.io.sources import discover

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-pet-ct-dx" / "png"


def _manifest(images: str, repeat: int, folder: Path) -> str:
    """A CSV manifest listing every image ``repeat`` times with distinct ids."""
    files = discover(images)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "path"])
        for r in range(repeat):
            for file in files:
                writer.writerow([f"{file.id}~{r}", file.path])
    return str(path)


def _line(engine: str, result, wall: float, **extra) -> dict:
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    return {
        "benchmark": "ray_bench",
        "engine": engine,
        "images": result.rows,
        "wall_s": round(wall, 3),
        "images_per_s": round(result.rows / wall, 2),
        "engine_images_per_s": round(result.images_per_second, 2),
        "device": result.device,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "timings_s": timings,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--weights", default="random")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--actors", default="1", help="Ray actor counts to run, e.g. 1,2")
    parser.add_argument("--repeat", type=int, default=1, help="list every image this many times")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the engines N times")
    args = parser.parse_args()
    actor_counts = [int(a) for a in args.actors.split(",")]

    ray = require_ray()
    start = time.perf_counter()
    if args.ray_address:
        ray.init(address=args.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    ray_init = time.perf_counter() - start
    resources = ray.cluster_resources()

    options = dict(
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        dtype=args.dtype,
        progress=False,
    )
    common = {
        "image_size": args.image_size,
        "weights": args.weights,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "ray_version": ray.__version__,
        "ray_cluster": {k: resources[k] for k in ("CPU", "GPU") if k in resources},
    }
    with tempfile.TemporaryDirectory() as tmp:
        sources = (
            args.images if args.repeat == 1 else _manifest(args.images, args.repeat, Path(tmp))
        )
        # Warm-up (file cache, oneDNN kernel choice) on a few images, not timed.
        embed(discover(args.images)[0].path, Path(tmp) / "warm", **options)

        local_lines: list[dict] = []
        ray_lines: dict[int, list[dict]] = {a: [] for a in actor_counts}
        # Rounds alternate the engines, so that load from other processes hits both alike.
        for round_ in range(args.rounds):
            out = Path(tmp) / f"local-{round_}"
            t = time.perf_counter()
            local = embed(sources, out, **options)
            line = _line("local", local, time.perf_counter() - t, round=round_, **common)
            local_lines.append({**line, "workers": local.workers})
            print(json.dumps(local_lines[-1]), flush=True)
            for actors in actor_counts:
                out = Path(tmp) / f"ray{actors}-{round_}"
                t = time.perf_counter()
                engine = EngineSettings(engine="ray", actors=actors)
                cpu = time.process_time()
                result = embed(sources, out, engine=engine, **options)
                wall = time.perf_counter() - t
                cpu = time.process_time() - cpu  # this process: the driver's CPU
                dim = int(result.identity.get("dim", 0))
                startup = result.timings["startup"]
                line = _line(
                    "ray",
                    result,
                    wall,
                    round=round_,
                    actors=actors,
                    ray_init_s=round(ray_init, 3),
                    driver_cpu_s=round(cpu, 3),
                    # What the driver received from the workers (ctfp >= the worker-written
                    # parts; absent before), and what the embeddings alone weigh: what a
                    # driver that collects them receives at the least.
                    driver_bytes=getattr(result, "driver_bytes", None),
                    embedding_bytes=result.rows * dim * (2 if options["dtype"] == "float16" else 4),
                    # Throughput after the first batch (about batch_size rows) is out: the
                    # actor start-up excluded.
                    after_startup_images_per_s=round(
                        (result.rows - result.batch_size) / max(result.seconds - startup, 1e-9), 2
                    ),
                    **common,
                )
                ray_lines[actors].append(line)
                print(json.dumps(line), flush=True)

    def best(lines: list[dict], key: str = "images_per_s") -> float:
        return max(line[key] for line in lines)

    local_best = best(local_lines)
    ray_best = {str(a): best(lines) for a, lines in ray_lines.items()}
    print(
        json.dumps(
            {
                "benchmark": "ray_bench",
                "summary": "best of rounds",
                "rounds": args.rounds,
                "images": local_lines[0]["images"],
                "image_size": args.image_size,
                "local_images_per_s": local_best,
                "ray_images_per_s": ray_best,
                "ray_after_startup_images_per_s": {
                    str(a): best(lines, "after_startup_images_per_s")
                    for a, lines in ray_lines.items()
                },
                "ratio_ray_over_local": round(max(ray_best.values()) / local_best, 3),
                "ray_startup_s": {
                    str(a): min(line["timings_s"]["startup"] for line in lines)
                    for a, lines in ray_lines.items()
                },
                "ray_init_s": round(ray_init, 3),
                "driver_cpu_s": {
                    str(a): min(line["driver_cpu_s"] for line in lines)
                    for a, lines in ray_lines.items()
                },
                "driver_bytes": {
                    str(a): lines[0]["driver_bytes"] for a, lines in ray_lines.items()
                },
                "embedding_bytes": local_lines[0]["images"]
                * int(local.identity.get("dim", 0))
                * (2 if args.dtype == "float16" else 4),
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
