"""Embedding throughput: the ctfp pipeline vs a naive per-image loop, same images, same run.

Prints one JSON line. The naive baseline is what a first script does: PIL open, torchvision
transforms, one fp32 forward per image under ``torch.no_grad()``. The ctfp pipeline decodes in
DataLoader workers, batches uint8 slices, normalises on the device, runs channels_last under the
resolved precision and writes Parquet shards. Both use the same weights. Then the pipeline
again with 0, 1 and 2 loader workers, and from a decoded-slice cache of the same slices
(``ctfp cache``: no image decoding on that pass).

    python benchmarks/embed_throughput.py [--images DIR] [--weights random] [--image-size 224]
        [--limit N]

``--limit 8 --image-size 64`` is a quick check that the script runs (figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ctfp.device import resolve_device, resolve_precision
from ctfp.embed.backbone import build_backbone
from ctfp.embed.cache import build_cache
from ctfp.embed.runner import embed
from ctfp.io.decode import decode_file
from ctfp.io.sources import discover

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-pet-ct-dx" / "png"


def naive(paths: list[str], net: torch.nn.Module, image_size: int) -> float:
    """Seconds for PIL open + transforms + one fp32 forward per image."""
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    start = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            x = tf(Image.open(p).convert("RGB"))
            net(x[None])
    return time.perf_counter() - start


def decode_seconds(paths: list[str], preprocessing) -> float:
    start = time.perf_counter()
    for p in paths:
        for frame in decode_file(p):
            preprocessing.resize(frame)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--weights", default="random")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args()

    paths = [f.path for f in discover(args.images)][: args.limit]
    device = resolve_device(args.device)
    backbone = build_backbone(args.weights, image_size=args.image_size).to(device)
    precision = resolve_precision(args.precision, device)

    # The naive baseline gets a plain NCHW copy of the same network, warmed up once.
    plain = build_backbone(args.weights, image_size=args.image_size).net.to(
        memory_format=torch.contiguous_format
    )
    with torch.no_grad():
        plain(torch.zeros(1, 3, args.image_size, args.image_size))
    naive_s = naive(paths, plain, args.image_size)

    def run(prec: str) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            # Warm-up on a few images so one-off kernel selection is not timed.
            embed(
                paths[:8],
                Path(tmp) / "warm",
                backbone_factory=lambda: backbone,
                precision=prec,
                device=str(device),
                workers=0,
                progress=False,
            )
            result = embed(
                paths,
                Path(tmp) / "out",
                backbone_factory=lambda: backbone,
                batch_size=args.batch_size,
                workers=args.workers,
                precision=prec,
                device=str(device),
                progress=False,
            )
        return result.to_dict()

    pipeline = run(precision)
    pipeline_fp32 = run("fp32") if precision != "fp32" else pipeline
    by_workers = {}
    for w in (0, 1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            r = embed(
                paths,
                Path(tmp) / "w",
                backbone_factory=lambda: backbone,
                batch_size=args.batch_size,
                workers=w,
                precision=precision,
                device=str(device),
                progress=False,
            )
        by_workers[f"workers_{w}"] = round(r.images_per_second, 2)
    # The same slices embedded from a decoded-slice cache (``ctfp cache``): no image decoding.
    with tempfile.TemporaryDirectory() as tmp:
        build_cache(paths, Path(tmp) / "cache", size=args.image_size, progress=False)
        from_cache = embed(
            Path(tmp) / "cache",
            Path(tmp) / "c",
            backbone_factory=lambda: backbone,
            batch_size=args.batch_size,
            workers=0,
            precision=precision,
            device=str(device),
            progress=False,
        )
    n = len(paths)
    line = {
        "benchmark": "embed_throughput",
        "images": n,
        "image_size": args.image_size,
        "weights": backbone.identity.weights,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "precision": precision,
        "naive_images_per_s": round(n / naive_s, 2),
        "ctfp_images_per_s": round(pipeline["images_per_second"], 2),
        "ratio": round(pipeline["images_per_second"] / (n / naive_s), 2),
        "ctfp_fp32_images_per_s": round(pipeline_fp32["images_per_second"], 2),
        "ratio_fp32": round(pipeline_fp32["images_per_second"] / (n / naive_s), 2),
        "stage_seconds": {
            "decode_resize_single_process": round(decode_seconds(paths, backbone.preprocessing), 3),
            "pipeline_wait_for_decoded": round(pipeline["timings"]["decode_wait"], 3),
            "pipeline_infer": round(pipeline["timings"]["infer"], 3),
            "pipeline_write": round(pipeline["timings"]["write"], 3),
            "pipeline_total": round(pipeline["seconds"], 3),
            "naive_total": round(naive_s, 3),
        },
        "ctfp_images_per_s_by_workers": by_workers,
        "ctfp_images_per_s_from_cache": round(from_cache.images_per_second, 2),
        "from_cache_wait_for_decoded": round(from_cache.timings["decode_wait"], 3),
        "workers": pipeline["workers"],
        "batch_size": pipeline["batch_size"],
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
