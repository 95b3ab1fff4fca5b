"""End-to-end task runs on an ImageCLEF-style folder: embed (resumable), fit, write run files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.runner import embed
from ctfp.evaluate import attribution_metrics, write_run
from ctfp.exceptions import InputError
from ctfp.progress import logger, progress_bar
from ctfp.store.reader import Embeddings, read_embeddings
from ctfp.store.writer import write_text_atomic
from ctfp.tasks.attribution import cluster_slices
from ctfp.tasks.ensemble import EnsembleMembership
from ctfp.tasks.membership import CentroidMembership
from ctfp.tasks.persist import save_model
from ctfp.tasks.proximity import ProximityMembership

PathLike = str | os.PathLike[str]
TEST_PREFIX = "test/"
METHODS = ("centroid", "proximity", "ensemble")
SAVABLE = ("centroid", "proximity")  # the experimental ensemble is not saved


def shards_dir(out: PathLike, features: str = "resnet50") -> Path:
    """Where a run keeps its embeddings: one folder per feature type, reused on reruns."""
    return Path(out) / ("embeddings" if features == "resnet50" else f"embeddings-{features}")


def fit_membership(
    method: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    generated: np.ndarray | None = None,
    *,
    k: int = 4,
    seed: int = 0,
    device: str = "auto",
    metric: str = "cosine",
    neighbours: int = 1,
    reference: bool = True,
    calibrate: str = "balanced",
    index: str = "flat",
    recall_target: float | None = 0.99,
) -> Any:
    """Fit a task 1 model: ``centroid`` (seed), ``proximity`` or ``ensemble``.

    ``train_y`` is 1 for used and 0 for not-used training slices; the proximity methods also
    need the generated slices.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "centroid":
        model = CentroidMembership(k, random_state=seed, device=device)
        return model.fit(train_x[train_y == 1], train_x[train_y == 0])
    if generated is None or len(generated) == 0:
        raise InputError(f"method {method!r} needs generated slices (DATA/generated/)")
    proximity = dict(metric=metric, neighbours=neighbours, reference=reference, index=index)
    if method == "proximity":
        model = ProximityMembership(
            calibrate=calibrate, device=device, recall_target=recall_target, **proximity
        )
    else:
        model = EnsembleMembership(
            k=k, calibrate=calibrate, random_state=seed, device=device, **proximity
        )
    return model.fit(generated, train_x, train_y)


def _embed_layout(
    data: PathLike, out: PathLike, required: Sequence[str], **options: Any
) -> Embeddings:
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"data folder {str(root)!r} does not exist")
    missing = [r for r in required if not (root / r).is_dir()]
    if missing:
        raise InputError(
            f"{str(root)!r} lacks {', '.join(f'{m}/' for m in missing)}; the ImageCLEF layout is "
            "train/used/, train/not_used/, generated/ and test/ (task 1) or test/ with optional "
            "train/<group>/ (task 2)"
        )
    shards = shards_dir(out, options.get("features", "resnet50"))
    embed(root, shards, layout="imageclef", **options)
    return read_embeddings(shards)


def _rows(data: Embeddings, mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise InputError(f"no readable {what} images were embedded")
    return data.matrix[mask]


def _test_part(data: Embeddings) -> tuple[list[str], np.ndarray]:
    """Run-file ids (relative to test/, without suffix) and embeddings of the test slices."""
    mask = np.array([i.startswith(TEST_PREFIX) for i in data.ids], dtype=bool)
    x = _rows(data, mask, "test/")
    return [i[len(TEST_PREFIX) :] for i in data.ids[mask]], x


def _write_json(path: Path, content: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(content, indent=2) + "\n")


def run_task1(
    data: PathLike,
    out: PathLike,
    *,
    k: int | Sequence[int] = 4,
    method: str = "centroid",
    metric: str = "cosine",
    neighbours: int = 1,
    reference: bool = True,
    calibrate: str = "balanced",
    index: str = "flat",
    recall_target: float | None = 0.99,
    seed: int = 0,
    device: str = "auto",
    **embed_options: Any,
) -> dict[str, Any]:
    """Task 1: embed ``data``, fit the membership model, write run and score files.

    ``method``: ``centroid`` (the seed paper: k-means centres per class, L1 1-NN), ``proximity``
    (distance to the nearest generated slices, calibrated on the training reals) or ``ensemble``
    (a logistic model on both scores; experimental: it did not beat proximity on the quality
    benchmark, so the command line does not offer it). One k writes ``out/run.csv``
    (``<id>,<0|1>``) and ``out/scores.csv`` (``id,score,label``); several write ``out/k<k>/``.
    ``out/summary.json`` records the settings and the chosen threshold. Embeddings are reused.
    """
    start = time.perf_counter()
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(v < 1 for v in ks):
        raise InputError(f"k must be positive integers, got {ks}")
    if method == "proximity":
        ks = ks[:1]  # k is the centroid method's; proximity has none
    out = Path(out)
    emb = _embed_layout(
        data,
        out,
        ["train/used", "train/not_used", "test"],
        seed=seed,
        device=device,
        **embed_options,
    )
    labels = emb.labels
    train = (labels == "used") | (labels == "not_used")
    _rows(emb, labels == "used", "train/used/")
    _rows(emb, labels == "not_used", "train/not_used/")
    train_x, train_y = emb.matrix[train], (labels[train] == "used").astype(int)
    generated = emb.matrix[labels == "generated"]
    ids, x = _test_part(emb)
    runs: dict[int, dict[str, Any]] = {}
    for kk in progress_bar(
        len(ks),
        "task1 fits",
        "k",
        enabled=len(ks) > 1 and embed_options.get("progress", True),
        iterable=ks,
    ):
        model = fit_membership(
            method,
            train_x,
            train_y,
            generated,
            k=kk,
            seed=seed,
            device=device,
            metric=metric,
            neighbours=neighbours,
            reference=reference,
            calibrate=calibrate,
            index=index,
            recall_target=recall_target,
        )
        pred, score = model.predict(x), model.score(x)
        dest = out if len(ks) == 1 else out / f"k{kk}"
        write_run(dest / "run.csv", ids, pred)
        _write_scores(dest / "scores.csv", ids, score, pred)
        settings = {"method": method, "k": kk, "metric": metric, "seed": seed}
        if method in SAVABLE:
            save_model(model, dest / "model", identity=emb.metadata, settings=settings)
        runs[kk] = {
            "run": str(dest / "run.csv"),
            "scores": str(dest / "scores.csv"),
            "model_dir": str(dest / "model") if method in SAVABLE else None,
            "predicted_used": int(pred.sum()),
            "threshold": getattr(model, "threshold_", None),
            "recall_at_1": getattr(getattr(model, "proximity_", model), "recall_", None),
        }
        chosen = ""
        if runs[kk]["threshold"] is not None:
            chosen = f" (threshold {runs[kk]['threshold']:.4g} chosen for {calibrate} on train)"
        logger.info(
            f"task1 {method} k={kk}: {int(pred.sum())}/{len(ids)} test slices labelled used"
            f"{chosen} -> {dest / 'run.csv'}"
        )
        if runs[kk]["recall_at_1"] is not None:
            logger.info(f"task1 {index} index recall@1 vs exact: {runs[kk]['recall_at_1']:.4f}")
    summary = {
        "task": "task1",
        "method": method,
        "k": ks,
        "metric": metric if method != "centroid" else "l1",
        "neighbours": neighbours,
        "reference": reference,
        "calibrate": calibrate,
        "index": index,
        "recall_target": recall_target if index != "flat" else None,
        "seed": seed,
        "n_used": int(train_y.sum()),
        "n_not_used": int((train_y == 0).sum()),
        "n_generated": len(generated),
        "n_test": len(ids),
        "runs": runs,
        "model": {key: emb.metadata.get(key) for key in ("model", "weights", "weights_sha256")},
        "seconds": round(time.perf_counter() - start, 2),
    }
    _write_json(out / "summary.json", summary)
    return summary


def _write_scores(path: Path, ids: Sequence[str], score: np.ndarray, pred: np.ndarray) -> None:
    rows = "".join(f"{i},{s:.6f},{int(p)}\n" for i, s, p in zip(ids, score, pred, strict=True))
    write_text_atomic(path, "id,score,label\n" + rows)


def run_task2(
    data: PathLike,
    out: PathLike,
    *,
    k: int | str = 4,
    init: str = "kmeans",
    covariance_type: str = "full",
    k_range: Sequence[int] = range(2, 9),
    n_init: int = 1,
    reg_covar: float = 1e-6,
    pca: int | None = None,
    semi_supervised: bool = False,
    seed: int = 0,
    device: str = "auto",
    **embed_options: Any,
) -> dict[str, Any]:
    """Task 2: embed ``data``, fit a Gaussian mixture on the test slices, write clusters.csv.

    ``k="auto"`` picks the number of components with the lowest BIC over ``k_range`` (the
    silhouette of each k is reported as a check). ``pca`` projects the embeddings first (full
    covariances in 2048-d are ill-posed with a few hundred slices). ``semi_supervised`` starts
    the mixture from the class means of ``data/train/<group>/`` (one component per group). With
    labelled examples present, the summary also reports how the fitted mixture clusters them.
    """
    start = time.perf_counter()
    out = Path(out)
    emb = _embed_layout(data, out, ["test"], seed=seed, device=device, **embed_options)
    ids, x = _test_part(emb)
    groups = emb.labels
    train = np.array(
        [i.startswith("train/") and g is not None for i, g in zip(emb.ids, groups, strict=True)],
        dtype=bool,
    )
    if semi_supervised and not train.any():
        raise InputError("--semi-supervised needs labelled examples in DATA/train/<group>/")
    result = cluster_slices(
        x,
        k=k,
        init=init,
        covariance_type=covariance_type,
        k_range=k_range,
        n_init=n_init,
        reg_covar=reg_covar,
        pca=pca,
        train_x=emb.matrix[train] if semi_supervised else None,
        train_groups=groups[train] if semi_supervised else None,
        seed=seed,
        device=device,
        progress=embed_options.get("progress", True),
    )
    labels = result.labels
    write_run(out / "clusters.csv", ids, labels)
    save_model(
        result,
        out / "model",
        identity=emb.metadata,
        settings={"init": init, "covariance_type": covariance_type, "pca": pca, "seed": seed},
    )
    if result.bics is not None:
        logger.info(
            f"task2: k=auto chose {result.k} components (BIC: "
            + ", ".join(f"k={kk} {b:.0f}" for kk, b in result.bics.items())
            + ")"
        )
    logger.info(f"task2: {len(ids)} test slices in {result.k} clusters -> {out / 'clusters.csv'}")
    summary: dict[str, Any] = {
        "task": "task2",
        "method": "gmm",
        "k": result.k,
        "k_auto_bic": None if result.bics is None else {str(a): b for a, b in result.bics.items()},
        "k_auto_silhouette": None
        if result.silhouettes is None
        else {str(a): b for a, b in result.silhouettes.items()},
        "init": "train-group means" if semi_supervised else init,
        "covariance_type": covariance_type,
        "pca": pca,
        "seed": seed,
        "n_test": len(ids),
        "converged": bool(result.model.converged_),
        "n_iter": int(result.model.n_iter_),
        "cluster_sizes": np.bincount(labels, minlength=result.k).tolist(),
        "clusters": str(out / "clusters.csv"),
        "model_dir": str(out / "model"),
        "model": {key: emb.metadata.get(key) for key in ("model", "weights", "weights_sha256")},
    }
    if train.any():
        predicted = result.predict(emb.matrix[train])
        summary["train_check"] = attribution_metrics(groups[train].tolist(), predicted.tolist())
    summary["seconds"] = round(time.perf_counter() - start, 2)
    _write_json(out / "summary.json", summary)
    return summary
