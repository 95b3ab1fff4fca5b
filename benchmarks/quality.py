"""Quality benchmark: both tasks on datasets made by generators trained here, every method, every
feature type. Prints one JSON line and markdown tables.

Datasets (benchmarks/quality_data.py): task 1 — real slices of ../shared/data/lung-pet-ct-dx split
used / not used interleaved by slice position, a generator trained on the used ones, a balanced
test set; task 2 — several generators of different kinds trained on different subsets. The
backbone uses seeded random weights (`--weights random`): ImageNet weights cannot be downloaded
on the machine this was measured on. Thresholds are chosen on the training reals only; test
labels are used for scoring, never for tuning.

    python benchmarks/quality.py [--out bench-out/quality] [--seed 0] [--features a,b,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_data import build_all

from ctfp.attribution.clustering import cluster_slices
from ctfp.attribution.settings import Task2Settings
from ctfp.cluster import KMeans
from ctfp.embed.runner import embed
from ctfp.embed.settings import EmbedSettings
from ctfp.evaluate import attribution_metrics, membership_metrics, read_table
from ctfp.membership.settings import Task1Settings
from ctfp.store.reader import Embeddings, read_embeddings

FEATURES = ("resnet50", "pixels", "residual", "spectrum", "pixels+residual")
KS = (1, 2, 4, 8, 16, 32)
INITS = ("kmeans", "k-means++", "random", "random_from_data")


def embed_dataset(root: Path, out: Path, features: str, seed: int) -> Embeddings:
    settings = EmbedSettings(
        features=features, weights="random", weights_seed=seed, layout="imageclef"
    )
    embed(root, out, settings, progress=False)
    return read_embeddings(out)


def test_part(emb: Embeddings, truth: dict[str, str]) -> tuple[np.ndarray, list[str], list[str]]:
    mask = np.array([i.startswith("test/") for i in emb.ids])
    ids = [i[len("test/") :] for i in emb.ids[mask]]
    return emb.matrix[mask], ids, [truth[i] for i in ids]


def r4(m: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def task1(emb: Embeddings, truth: dict[str, str], seed: int) -> dict[str, Any]:
    labels = emb.labels
    train = (labels == "used") | (labels == "not_used")
    tx, ty = emb.matrix[train], (labels[train] == "used").astype(int)
    generated = emb.matrix[labels == "generated"]
    x, _, y = test_part(emb, truth)
    y = np.asarray(y, dtype=int)
    rows: dict[str, Any] = {}

    def fit(**options: Any) -> Any:
        settings = Task1Settings.with_options(seed=seed, device="cpu", **options)
        return settings.build().fit(tx, ty, generated=generated)

    def score(name: str, model: Any) -> None:
        m = membership_metrics(y, model.predict(x), model.score_samples(x))
        rows[name] = r4({k: m[k] for k in ("f1", "accuracy", "kappa", "roc_auc")})

    smallest = min(ty.sum(), (ty == 0).sum())
    for k in KS:
        if k <= smallest:
            score(f"seed k={k}", fit(method="centroid", k=k))
    for metric in ("l2", "l1", "cosine"):
        score(f"proximity {metric}", fit(method="proximity", metric=metric))
    score("proximity l2, no reference", fit(method="proximity", metric="l2", reference=False))
    score("proximity l2, 5 neighbours", fit(method="proximity", metric="l2", neighbours=5))
    base = membership_metrics(y, np.ones_like(y), None)
    rows["all used"] = r4(
        {"f1": base["f1"], "accuracy": base["accuracy"], "kappa": base["kappa"], "roc_auc": 0.5}
    )
    return rows


def task2(emb: Embeddings, truth: dict[str, str], seed: int, pca: int) -> dict[str, Any]:
    x, _, y = test_part(emb, truth)
    k_true = len(set(y))
    groups = emb.labels
    train = np.array([i.startswith("train/") for i in emb.ids])
    rows: dict[str, Any] = {}

    def run(name: str, **kw: Any) -> None:
        train_x, train_groups = kw.pop("train_x", None), kw.pop("train_groups", None)
        if "k_range" in kw:
            kw["k_range"] = (min(kw["k_range"]), max(kw["k_range"]))
        settings = Task2Settings(seed=seed, device="cpu", **kw)
        result = cluster_slices(x, settings, train_x=train_x, train_groups=train_groups)
        rows[name] = r4({**attribution_metrics(y, result.labels.tolist()), "k": result.k})
        rows[name].pop("n", None)
        rows[name].pop("n_groups", None)

    for init in INITS:
        run(
            f"gmm {init}, pca {pca}", k=k_true, init=init, covariance_type="full", pca=pca, n_init=3
        )
    run("gmm kmeans, diag, no pca", k=k_true, init="kmeans", covariance_type="diag", n_init=3)
    run(
        f"gmm kmeans, pca {pca}, k=auto",
        k="auto",
        k_range=range(2, 9),
        init="kmeans",
        covariance_type="full",
        pca=pca,
        n_init=3,
    )
    run(
        f"gmm semi-supervised, pca {pca}",
        covariance_type="full",
        pca=pca,
        train_x=emb.matrix[train],
        train_groups=groups[train],
    )
    run(
        "gmm semi-supervised, diag, no pca",
        covariance_type="diag",
        train_x=emb.matrix[train],
        train_groups=groups[train],
    )
    km = KMeans(k_true, n_init=10, random_state=seed, device="cpu").fit(x)
    rows["k-means"] = r4({**attribution_metrics(y, km.labels_.tolist()), "k": k_true})
    rows["k-means"].pop("n", None)
    rows["k-means"].pop("n_groups", None)
    return rows


def markdown(title: str, table: dict[str, dict[str, dict[str, Any]]], cols: list[str]) -> str:
    lines = [
        f"### {title}",
        "",
        "| features | method | " + " | ".join(cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for feature, rows in table.items():
        for method, m in rows.items():
            cells = [("-" if m.get(c) is None else str(m.get(c))) for c in cols]
            lines.append(f"| {feature} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--pca", type=int, default=16)
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    data = build_all(out / "data", seed=args.seed)
    t1_root, t2_root = Path(data["task1"]), Path(data["task2"])
    truth1 = read_table(data["task1_truth"], "label")
    truth2 = read_table(data["task2_truth"], "cluster")
    t1: dict[str, Any] = {}
    t2: dict[str, Any] = {}
    for feature in args.features.split(","):
        e1 = embed_dataset(t1_root, out / "emb" / f"task1-{feature}", feature, args.seed)
        t1[feature] = task1(e1, truth1, args.seed)
        e2 = embed_dataset(t2_root, out / "emb" / f"task2-{feature}", feature, args.seed)
        t2[feature] = task2(e2, truth2, args.seed, args.pca)
    line = {
        "benchmark": "quality",
        "weights": "random (seed 0)",
        "seed": args.seed,
        "data": {k: v for k, v in data.items() if k not in ("task1", "task2")},
        "task1": t1,
        "task2": t2,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(line))
    print()
    print(
        markdown(
            "Task 1 (membership), ResNet50 with random weights",
            t1,
            ["f1", "accuracy", "kappa", "roc_auc"],
        )
    )
    print()
    print(markdown("Task 2 (attribution)", t2, ["ari", "nmi", "k", "n_clusters"]))


if __name__ == "__main__":
    main()
