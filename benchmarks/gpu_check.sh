#!/usr/bin/env bash
# One-shot GPU check: the GPU-marked tests and the throughput benchmarks on CUDA, JSON lines out.
# Run from the repository root on a CUDA machine with the project installed (pip install -e
# '.[dev,gpu]'; all wheels can be carried in, nothing is downloaded). Budget: under 8 minutes.
#   bash benchmarks/gpu_check.sh [PYTHON]
set -uo pipefail
PY=${1:-${PYTHON:-python}}
cd "$(dirname "$0")/.."

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo '{"gpu_check": "skipped", "reason": "torch sees no CUDA device here"}'
  exit 0
fi
"$PY" - <<'PY'
import json, torch
import faiss
print(json.dumps({"gpu_check": "device", "name": torch.cuda.get_device_name(0),
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "bf16": torch.cuda.is_bf16_supported(),
                  "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}))
PY

status=0
# 1. The GPU tests (index, k-means, GMM, embedding on CUDA vs CPU).
CTFP_ALLOW_MISSING_DATA=1 timeout 240 "$PY" -m pytest -q -m gpu tests 2>&1 | tail -n 15 || status=1
# 2. Embedding throughput on CUDA: 188 PNGs is too few for a GPU, so repeat them via a manifest.
tmp=$(mktemp -d)
"$PY" - "$tmp" <<'PY'
import csv, sys
from pathlib import Path
root = Path("../shared/data/lung-pet-ct-dx/png").resolve()
if not root.is_dir():  # ../shared does not travel to a device machine: use the bundled sample
    root = Path("ctfp/data/sample/png").resolve()
pngs = sorted(root.glob("*.png"))
with open(Path(sys.argv[1]) / "manifest.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "id"])
    for r in range(-(-9400 // len(pngs))):  # about 9,400 slices
        for p in pngs:
            w.writerow([p, f"r{r}/{p.stem}"])
PY
timeout 180 "$PY" - "$tmp" <<'PY' || status=1
import json, sys, time
from pathlib import Path
from ctfp.embed.runner import embed
from ctfp.store.cache import build_cache
tmp = Path(sys.argv[1])
res = {}
r = embed(tmp / "manifest.csv", tmp / "emb", weights="random", device="cuda", progress=False,
          batch_size=256, workers=15)
res["png_to_parquet_slices_per_s"] = round(r.images_per_second)
res["timings"] = r.timings
build_cache(tmp / "manifest.csv", tmp / "cache", size=224, workers=15, progress=False)
r = embed(tmp / "cache", tmp / "emb2", weights="random", device="cuda", progress=False,
          batch_size=256, workers=4)
res["cache_to_parquet_slices_per_s"] = round(r.images_per_second)
print(json.dumps({"gpu_check": "embed_throughput", **res}))
PY
# 3. L1 scoring on the GPU index: 1M x 2048 queries against 64 centres.
timeout 120 "$PY" - <<'PY' || status=1
import json, time
import numpy as np
from ctfp.index import FlatIndex
rng = np.random.default_rng(0)
index = FlatIndex(2048, metric="l1", device="cuda").add(rng.gamma(1, 1, (64, 2048)).astype("float32"))
q = rng.gamma(1, 1, (200_000, 2048)).astype("float32")
index.search(q[:1000], 1)
t = time.perf_counter()
for _ in range(5):
    index.search(q, 1)
s = time.perf_counter() - t
print(json.dumps({"gpu_check": "l1_scoring", "rows_per_s": round(1_000_000 / s)}))
PY
rm -rf "$tmp"
exit $status
