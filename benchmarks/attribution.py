"""Attribution benchmark: task 2's modes on clean, degraded and same-architecture data, over seeds.

Sets (``benchmarks/quality_data.py``, :data:`TASK2_SETS`; generators trained here on the real
lung CT of ``../shared/data/lung-pet-ct-dx``, 60 labelled and 150 test images per generator,
cached under ``--out/data``):

- ``architectures``: PCA-Gaussian, 128 px VAE, 64 px VAE with an upsampling decoder, 64 px
  DCGAN, all trained on the same slices;
- ``degraded``: a copy of ``architectures`` where every image went through a seeded data-lake
  chain (gamma 0.9-1.1, rescale 0.75-1.25 and back, JPEG quality 70-95);
- ``same-arch``: the 64 px VAE three times, same settings, trained on disjoint thirds of the
  slices with other seeds (which training subset made an image);
- ``open``: ``architectures`` with the DCGAN's folder removed from ``train/``: the open set
  should call its test slices unknown.

Modes, each a plain ``ctfp run task2`` on the set (no ImageNet weights here, so no ResNet50):
``auto`` (the default), ``classify`` and ``semi`` (``--method``, features chosen by
cross-validation), ``blind`` (``--method gmm --k <number of generators>``, features: the blind
default). Test labels are used for scoring only. Prints one JSON line and markdown tables of
ARI mean ± sd over seeds.

    python benchmarks/attribution.py [--out bench-out/attribution] [--seeds 0,1,2]
        [--sets architectures,degraded,same-arch,open] [--modes auto,classify,semi,blind]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_data import TASK2_SETS, build_task2_set, degrade_task2

from ctfp.attribution.settings import Task2Settings
from ctfp.embed.settings import EmbedSettings
from ctfp.evaluate import read_table
from ctfp.runs.task2 import run_task2

SETS = ("architectures", "degraded", "same-arch", "open")
MODES = ("auto", "classify", "semi", "blind")
LEFT_OUT = "g3_gan"


def dataset(out: Path, name: str, seed: int) -> tuple[Path, dict[str, int], int]:
    """(task2 folder, truth, number of generators) of set ``name`` and ``seed``, built once."""
    source = "same-arch" if name == "same-arch" else "architectures"
    clean = out / "data" / f"{source}-seed{seed}"
    if not (clean / "task2_truth.csv").is_file():
        build_task2_set(clean, source, seed=seed)
    folder = clean
    if name == "degraded":
        folder = out / "data" / f"degraded-seed{seed}"
        if not (folder / "task2_truth.csv").is_file():
            degrade_task2(clean, folder, seed=seed)
    elif name == "open":
        folder = out / "data" / f"open-seed{seed}"
        if not (folder / "task2_truth.csv").is_file():
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(clean, folder)
            shutil.rmtree(folder / "task2" / "train" / LEFT_OUT)
    truth = {k: int(v) for k, v in read_table(folder / "task2_truth.csv", "cluster").items()}
    return folder / "task2", truth, len(TASK2_SETS[source])


def ari(truth: dict[str, int], run: Path) -> float:
    from sklearn.metrics import adjusted_rand_score

    got = {}
    for line in run.read_text().splitlines():
        i, c = line.rsplit(",", 1)
        got[i] = int(c)
    ids = sorted(truth)
    return round(float(adjusted_rand_score([truth[i] for i in ids], [got[i] for i in ids])), 4)


def one(out: Path, name: str, seed: int, modes: list[str]) -> dict[str, Any]:
    root, truth, k = dataset(out, name, seed)
    run = out / "runs" / f"{name}-seed{seed}"  # one folder: the embeddings are shared
    row: dict[str, Any] = {}
    for mode in modes if name != "open" else ["auto"]:
        settings = Task2Settings(seed=seed, device="cpu")
        if mode == "blind":
            settings = settings.replace(method="gmm", k=k)
        elif mode != "auto":
            settings = settings.replace(method=mode)
        start = time.perf_counter()
        summary = run_task2(
            root, run, settings, embed=EmbedSettings(features="auto"), progress=False
        )
        result: dict[str, Any] = {
            "ari": ari(truth, run / "clusters.csv"),
            "seconds": round(time.perf_counter() - start, 1),
            "features": summary.get("features"),
        }
        if "selection" in summary:
            chosen = summary["selection"]["chosen"]
            result.update(chosen=chosen["label"], cv_ari=chosen["ari"])
            result["unknown"] = summary["open_set"]["unknown"]
        if name == "open":
            opened = {}
            for line in (run / "open_set.csv").read_text().splitlines():
                i, c = line.rsplit(",", 1)
                opened[i] = int(c)
            new = [i for i in truth if truth[i] == k - 1]  # the generator left out
            known = [i for i in truth if truth[i] != k - 1]
            result["unknown_recall"] = round(float(np.mean([opened[i] == -1 for i in new])), 4)
            result["false_unknown"] = round(float(np.mean([opened[i] == -1 for i in known])), 4)
            result["extra_group"] = summary["open_set"]["extra_group"]
            known_truth = {i: truth[i] for i in known}
            result["ari_known"] = ari(known_truth, run / "clusters.csv")
        row[mode] = result
        print(
            f"  {name} seed {seed} {mode}: ARI {result['ari']}"
            + (
                f" ({result.get('chosen')}, CV {result.get('cv_ari')})"
                if "chosen" in result
                else ""
            )
            + f" {result['seconds']} s",
            file=sys.stderr,
            flush=True,
        )
    return row


def mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def markdown(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    lines = [
        "| set | mode | ARI (test) | CV ARI (train/) | chose |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, by_seed in results.items():
        modes = list(next(iter(by_seed.values())))
        for mode in modes:
            got = [s[mode] for s in by_seed.values()]
            cv = [g["cv_ari"] for g in got if "cv_ari" in g]
            chose = "; ".join(sorted({g.get("chosen") or g.get("features") or "" for g in got}))
            lines.append(
                f"| {name} | {mode} | {mean_sd([g['ari'] for g in got])} | "
                f"{mean_sd(cv) if cv else '-'} | {chose} |"
            )
    opened = results.get("open")
    if opened:
        got = [s["auto"] for s in opened.values()]
        lines += [
            "",
            f"Open set (`{LEFT_OUT}` left out of train/): its test slices called unknown "
            f"{mean_sd([g['unknown_recall'] for g in got])}, known generators' slices called "
            f"unknown {mean_sd([g['false_unknown'] for g in got])} (5 % asked), ARI on the known "
            f"generators' slices {mean_sd([g['ari_known'] for g in got])}, extra group found "
            f"{sum(g['extra_group'] for g in got)} of {len(got)}.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/attribution")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    sets, modes = args.sets.split(","), args.modes.split(",")
    for bad, valid, what in ((sets, SETS, "set"), (modes, MODES, "mode")):
        unknown = sorted(set(bad) - set(valid))
        if unknown:
            parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(valid)}")
    out = Path(args.out)
    start = time.perf_counter()
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in sets:
            results.setdefault(name, {})[seed] = r = one(out, name, seed, modes)
            saved = out / "results" / f"{name}-seed{seed}.json"
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(r, indent=1))
    line = {"benchmark": "attribution", "results": results}
    line["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(line))
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
