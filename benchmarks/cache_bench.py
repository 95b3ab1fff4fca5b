"""Loader throughput without the model: decoding images vs reading the decoded-slice cache.

On a GPU the network outruns CPU image decoders; this measures the input side alone. For the 188
shared PNGs (256 px), their 188 DICOMs (512 px, HU windowing) and a cache built from each, it
times one pass of the embedding DataLoader (decode/read + resize to 224, uint8 batches) with 0, 1
and 2 worker processes, and prints one JSON line with slices/s.

    python benchmarks/cache_bench.py [--repeat 8]   (--repeat 1: a quick check that it runs)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ctfp.embed.backbone import Preprocessing
from ctfp.embed.cache import build_cache
from ctfp.embed.reader import CacheDataset, SliceDataset, make_loader
from ctfp.io.sources import discover
from ctfp.io.window import Window
from ctfp.store.cache import cache_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-pet-ct-dx"


def rate(dataset, workers: int, repeat: int) -> float:
    loader = make_loader(dataset, files_per_batch=32, workers=workers, pin_memory=False)
    start = time.perf_counter()
    n = 0
    for _ in range(repeat):
        for batch in loader:
            n += batch.frames.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8, help="passes over the 188 slices")
    args = parser.parse_args()
    pre = Preprocessing(image_size=224)
    line: dict = {"benchmark": "cache_bench", "cores": os.cpu_count(), "image_size": 224}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("png", "dicom"):
            files = discover(DATA / kind)
            t = time.perf_counter()
            build_cache(DATA / kind, Path(tmp) / kind, size=224, progress=False)
            line[f"{kind}_cache_build_slices_per_s"] = round(len(files) / (time.perf_counter() - t))
            rows = cache_rows(Path(tmp) / kind)
            for workers in (0, 1, 2):
                line[f"{kind}_decode_w{workers}"] = round(
                    rate(SliceDataset(files, Window(), pre), workers, args.repeat)
                )
                line[f"{kind}_cache_w{workers}"] = round(
                    rate(CacheDataset(rows, pre), workers, args.repeat)
                )
    print(json.dumps(line))


if __name__ == "__main__":
    main()
