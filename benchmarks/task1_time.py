"""How long the default ``ctfp run task1`` takes on a folder of the challenge's size, and where
the time goes (``summary.json``'s ``stage_seconds``: embedding, selection, fit and files).

The folder is built from the 188 shared Lung-PET-CT-Dx PNGs (256 px) as the ImageCLEF 2024
task 1 folders are sized: 26 used and 26 not-used training slices (interleaved by slice
position), 76 test slices, and 1,000 generated slices (noisy copies of the used slices and of
half the test ones: a generator that memorised them). ImageNet weights cannot be downloaded on
the machine this was written on, so the default run leaves ResNet50 out, as it would for such a
user; ``--weights random`` puts it back (slow on a CPU). Each repeat starts from an empty output
folder (embedding included). Time-sensitive: run it on a quiet machine and say how quiet it was.

    python benchmarks/task1_time.py [--out bench-out/task1-time] [--repeats 1] [--weights W]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUNG = ROOT.parent / "shared" / "data" / "lung-pet-ct-dx" / "png"


def build(root: Path, seed: int = 0) -> Path:
    """The challenge-sized folder under ``root`` (made once)."""
    from PIL import Image

    data = root / "data"
    if (data / "generated").is_dir():
        return data
    pngs = sorted(LUNG.glob("*.png"))
    if len(pngs) < 180:
        raise SystemExit(f"needs the 188 shared PNGs in {LUNG}")
    used, not_used, test = pngs[0:52:2], pngs[1:52:2], pngs[104:180]
    for name, files in (("train/used", used), ("train/not_used", not_used), ("test", test)):
        (data / name).mkdir(parents=True, exist_ok=True)
        for p in files:
            shutil.copy(p, data / name / p.name)
    rng = np.random.default_rng(seed)
    members = used + test[::2]
    (data / "generated").mkdir(parents=True)
    for j in range(1000):
        a = np.asarray(Image.open(members[j % len(members)]).convert("L"), dtype=np.float32)
        a = np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(data / "generated" / f"g{j:04d}.png")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-out/task1-time")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--weights", default=None, help="passed to ctfp run (e.g. random)")
    args = parser.parse_args()
    root = Path(args.out)
    data = build(root)
    runs = []
    for r in range(args.repeats):
        out = root / f"run{r}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "ctfp", "run", "task1", str(data), "--out", str(out)]
        command += ["--quiet", "--json"] + (["--weights", args.weights] if args.weights else [])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
    median = {
        k: round(statistics.median(r["stage_seconds"][k] for r in runs), 2)
        for k in runs[0]["stage_seconds"]
    }
    last = runs[-1]
    print(
        json.dumps(
            {
                "benchmark": "task1_time",
                "seconds_median": round(statistics.median(r["seconds"] for r in runs), 2),
                "stage_seconds_median": median,
                "runs": len(runs),
                "candidates": len(last["selection"]["candidates"]),
                "features_tried": last["selection"]["features_tried"],
                "chosen": last["selection"]["chosen"]["label"],
                "verdict": last["verdict"],
            }
        )
    )


if __name__ == "__main__":
    main()
