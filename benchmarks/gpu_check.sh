#!/usr/bin/env bash
# One-shot GPU check: the GPU-marked tests and the throughput benchmarks on CUDA, JSON lines out.
# Run from the repository root on a CUDA machine with the project installed (pip install -e
# '.[dev,gpu]'; all wheels can be carried in, nothing is downloaded). Budget: under 8 minutes.
#   bash benchmarks/gpu_check.sh [PYTHON]
# On a bare CUDA image that has torch, pyarrow, scikit-learn and pytest but not the rest, the repo
# root is importable as it stands: carry the missing runtime wheels (faiss-cpu, pydicom, nibabel;
# ~25 MB) and before this script run
#   pip install --no-index --no-deps --target /tmp/site WHEELS/*.whl && export PYTHONPATH=/tmp/site
# The GPU tests then run what the image allows: the torch GMM, CuPy arrays and the embedding on
# CUDA; faiss-gpu and cuML tests are skipped with the reason when those packages are absent.
# A dry run of the script itself on a machine without CUDA (small, on the CPU; figures
# meaningless): GPU_CHECK_DEVICE=cpu GPU_CHECK_SLICES=300 bash benchmarks/gpu_check.sh
set -uo pipefail
PY=${1:-${PYTHON:-python}}
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda} GPU_CHECK_SLICES=${GPU_CHECK_SLICES:-60000}
cd "$(dirname "$0")/.."

if [ "$GPU_CHECK_DEVICE" = cuda ] &&
  ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo '{"gpu_check": "skipped", "reason": "torch sees no CUDA device here"}'
  exit 0
fi
"$PY" - <<'PY'
import json, os, torch
import faiss
if os.environ["GPU_CHECK_DEVICE"] != "cuda":
    print(json.dumps({"gpu_check": "dry_run", "device": os.environ["GPU_CHECK_DEVICE"]}))
    raise SystemExit(0)
print(json.dumps({"gpu_check": "device", "name": torch.cuda.get_device_name(0),
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "bf16": torch.cuda.is_bf16_supported(),
                  "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}))
PY

status=0
# 1. The GPU tests (index, k-means, GMM, embedding on CUDA vs CPU), from the files that hold them
#    (the other test modules import dev-only packages a bare image may lack).
mapfile -t gpu_tests < <(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
CTFP_ALLOW_MISSING_DATA=1 timeout 240 "$PY" -m pytest -q -rs -m gpu "${gpu_tests[@]}" 2>&1 \
  | tail -n 25 || status=1
# 2. Embedding throughput on CUDA: a few hundred PNGs take a GPU well under a second, so repeat
#    them via a manifest to ~60,000 slices (seconds of steady work, start-up amortised).
tmp=$(mktemp -d)
"$PY" - "$tmp" <<'PY'
import csv, os, sys
from pathlib import Path
root = Path("../shared/data/lung-pet-ct-dx/png").resolve()
if not root.is_dir():  # ../shared does not travel to a device machine: use the bundled sample
    root = Path("ctfp/data/sample/png").resolve()
pngs = sorted(root.glob("*.png"))
with open(Path(sys.argv[1]) / "manifest.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "id"])
    for r in range(-(-int(os.environ["GPU_CHECK_SLICES"]) // len(pngs))):
        for p in pngs:
            w.writerow([p, f"r{r}/{p.stem}"])
PY
timeout 180 "$PY" - "$tmp" <<'PY' || status=1
import json, os, sys, time
from pathlib import Path
from ctfp.embed.runner import embed
from ctfp.embed.cache import build_cache
tmp = Path(sys.argv[1])
device = os.environ["GPU_CHECK_DEVICE"]
workers = max(1, min(15, (os.cpu_count() or 2) - 1))
res = {"device": device, "workers": workers}
r = embed(tmp / "manifest.csv", tmp / "emb", weights="random", device=device, progress=False,
          batch_size=256, workers=workers)
res["png_to_parquet_slices_per_s"] = round(r.images_per_second)
res["timings"] = r.timings
build_cache(tmp / "manifest.csv", tmp / "cache", size=224, workers=workers, progress=False)
r = embed(tmp / "cache", tmp / "emb2", weights="random", device=device, progress=False,
          batch_size=256, workers=min(4, workers))
res["cache_to_parquet_slices_per_s"] = round(r.images_per_second)
print(json.dumps({"gpu_check": "embed_throughput", **res}))
PY
# 3. L1 scoring on the GPU index: 1M x 2048 queries against 64 centres.
timeout 120 "$PY" - <<'PY' || status=1
import json, time
import numpy as np
from ctfp.index import FlatIndex
from ctfp.index.flat import faiss_has_gpu
if not faiss_has_gpu():
    print(json.dumps({"gpu_check": "l1_scoring", "skipped": "this FAISS build has no GPU support"}))
    raise SystemExit(0)
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
