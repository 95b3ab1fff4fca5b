"""Task 2 end to end: embed an ImageCLEF-style folder (resumable), fit the Gaussian mixture on
the test slices, write clusters.csv, the model and the summary."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.attribution.clustering import cluster_slices
from ctfp.attribution.settings import Task2Settings
from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.evaluate import attribution_metrics, write_run
from ctfp.exceptions import InputError
from ctfp.progress import logger
from ctfp.runs.folder import CLUSTERS_FILE, MODEL_DIR, begin_commit, write_summary
from ctfp.runs.layout import embed_layout, model_identity, test_part
from ctfp.runs.models import save_model

PathLike = str | os.PathLike[str]


def run_task2(
    data: PathLike,
    out: PathLike,
    settings: Task2Settings | None = None,
    *,
    embed: EmbedSettings | None = None,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Task 2: embed ``data``, fit a Gaussian mixture on the test slices, write clusters.csv.

    ``settings`` (``overrides``: its fields, e.g. ``k=3, pca=8``): ``k="auto"`` picks the number
    of components with the lowest BIC over ``k_range`` (the silhouette of each k is reported as
    a check). ``pca`` projects the embeddings first (full covariances in 2048-d are ill-posed
    with a few hundred slices). ``semi_supervised`` starts the mixture from the class means of
    ``data/train/<group>/`` (one component per group). With labelled examples present, the
    summary also reports how the fitted mixture clusters them. ``embed`` says how the slices
    become embeddings (reused from ``out`` on reruns with the same settings).
    """
    start = time.perf_counter()
    s = (settings or Task2Settings()).replace(**overrides)
    embed_settings = embed or EmbedSettings()
    out = Path(out)
    emb = embed_layout(data, out, ["test"], embed_settings, engine=engine, progress=progress)
    ids, x = test_part(emb)
    groups = emb.labels
    train = np.array(
        [i.startswith("train/") and g is not None for i, g in zip(emb.ids, groups, strict=True)],
        dtype=bool,
    )
    if s.semi_supervised and not train.any():
        raise InputError("--semi-supervised needs labelled examples in DATA/train/<group>/")
    result = cluster_slices(
        x,
        s,
        train_x=emb.matrix[train] if s.semi_supervised else None,
        train_groups=groups[train] if s.semi_supervised else None,
        progress=progress,
    )
    labels = result.labels
    sizes = np.bincount(labels, minlength=result.k).tolist()
    warnings = fit_warnings(result, sizes, s, x.shape)
    if result.k > 1 and max(sizes) == len(labels) and not s.allow_collapse:
        raise InputError(
            f"the {result.k}-component mixture put all {len(labels)} test slices in one component "
            f"(sizes {sizes}): it attributes nothing. Try --covariance diag, --pca N or another "
            "--init, or pass --allow-collapse to keep it"
        )
    for warning in warnings:
        logger.warning(f"warning: {warning}")
    begin_commit(out)
    write_run(out / CLUSTERS_FILE, ids, labels)
    recorded = {"task2": s.to_dict(), "embed": embed_settings.to_dict()}
    save_model(result, out / MODEL_DIR, identity=emb.metadata, settings=recorded)
    if result.bics is not None:
        logger.info(
            f"task2: k=auto chose {result.k} components (BIC: "
            + ", ".join(f"k={kk} {b:.0f}" for kk, b in result.bics.items())
            + ")"
        )
    logger.info(f"task2: {len(ids)} test slices in {result.k} clusters -> {out / CLUSTERS_FILE}")
    engine_settings = engine if isinstance(engine, EngineSettings) else EngineSettings(engine)
    summary: dict[str, Any] = {
        "task": "task2",
        "method": "gmm",
        "k": result.k,
        "k_auto_bic": None if result.bics is None else {str(a): b for a, b in result.bics.items()},
        "k_auto_silhouette": None
        if result.silhouettes is None
        else {str(a): b for a, b in result.silhouettes.items()},
        "init": "train-group means" if s.semi_supervised else s.init,
        "covariance_type": s.covariance_type,
        "pca": s.pca,
        "seed": s.seed,
        "settings": {
            "task2": s.to_dict(),
            "embed": embed_settings.to_dict(),
            "engine": engine_settings.to_dict(),
        },
        "n_test": len(ids),
        "converged": bool(result.model.converged_),
        "n_iter": int(result.model.n_iter_),
        "cluster_sizes": sizes,
        "warnings": warnings,
        "clusters": str(out / CLUSTERS_FILE),
        "model_dir": str(out / MODEL_DIR),
        "model": model_identity(emb.metadata),
    }
    if train.any():
        predicted = result.predict(emb.matrix[train])
        summary["train_check"] = attribution_metrics(groups[train].tolist(), predicted.tolist())
    summary["seconds"] = round(time.perf_counter() - start, 2)
    write_summary(out, summary, [out / CLUSTERS_FILE, out / MODEL_DIR])
    return summary


def fit_warnings(
    result: Any, sizes: list[int], settings: Task2Settings, shape: tuple[int, int]
) -> list[str]:
    """What makes a task 2 fit doubtful, in words: empty components, k at the edge of the
    searched range, BIC and silhouette disagreeing, full covariances with fewer rows than
    dimensions."""
    found = []
    empty = [j for j, n in enumerate(sizes) if n == 0]
    if empty:
        found.append(
            f"{len(empty)} of {result.k} components hold no test slice (sizes {sizes}): the data "
            "support fewer clusters than k"
        )
    if result.bics is not None:
        low, high = min(result.bics), max(result.bics)
        if result.k in (low, high) and low != high:
            found.append(
                f"k=auto chose k={result.k}, the edge of the range searched ({low}-{high}): the "
                "best k may lie outside it; widen --k-range"
            )
        scored = {k: v for k, v in (result.silhouettes or {}).items() if np.isfinite(v)}
        if scored and max(scored, key=scored.get) != result.k:
            found.append(
                f"BIC chose k={result.k} but the silhouette prefers k={max(scored, key=scored.get)}"
            )
    n, d = shape
    if settings.covariance_type == "full" and n <= (settings.pca or d):
        found.append(
            f"full covariances from {n} slices in {settings.pca or d} dimensions are singular "
            "(only reg_covar makes them usable); prefer --pca or --covariance diag"
        )
    return found


__all__ = ["fit_warnings", "run_task2"]
