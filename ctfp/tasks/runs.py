"""End-to-end task runs on an ImageCLEF-style folder: embed (resumable), fit, write run files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.cluster.gmm import GaussianMixture
from ctfp.embed.runner import embed
from ctfp.evaluate import attribution_metrics, write_run
from ctfp.exceptions import InputError
from ctfp.progress import logger
from ctfp.store.reader import Embeddings, read_embeddings
from ctfp.tasks.attribution import select_components
from ctfp.tasks.membership import CentroidMembership

PathLike = str | os.PathLike[str]
TEST_PREFIX = "test/"


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
    shards = Path(out) / "embeddings"
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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def run_task1(
    data: PathLike,
    out: PathLike,
    *,
    k: int | Sequence[int] = 4,
    seed: int = 0,
    device: str = "auto",
    **embed_options: Any,
) -> dict[str, Any]:
    """Task 1 with the seed method: embed ``data``, fit centres per k, write run and score files.

    One k writes ``out/run.csv`` (``<id>,<0|1>``) and ``out/scores.csv`` (``id,score,label``);
    several write ``out/k<k>/run.csv`` and ``out/k<k>/scores.csv`` each. ``out/summary.json``
    records the settings. Embeddings go to ``out/embeddings`` and are reused on reruns.
    """
    start = time.perf_counter()
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(v < 1 for v in ks):
        raise InputError(f"k must be positive integers, got {ks}")
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
    used = _rows(emb, labels == "used", "train/used/")
    not_used = _rows(emb, labels == "not_used", "train/not_used/")
    ids, x = _test_part(emb)
    runs = {}
    for kk in ks:
        model = CentroidMembership(kk, random_state=seed, device=device).fit(used, not_used)
        pred, score = model.predict(x), model.score(x)
        dest = out if len(ks) == 1 else out / f"k{kk}"
        write_run(dest / "run.csv", ids, pred)
        _write_scores(dest / "scores.csv", ids, score, pred)
        runs[kk] = {
            "run": str(dest / "run.csv"),
            "scores": str(dest / "scores.csv"),
            "predicted_used": int(pred.sum()),
        }
        logger.info(
            f"task1 k={kk}: {int(pred.sum())}/{len(ids)} test slices labelled used "
            f"-> {dest / 'run.csv'}"
        )
    summary = {
        "task": "task1",
        "method": "centroid-l1",
        "k": ks,
        "seed": seed,
        "n_used": len(used),
        "n_not_used": len(not_used),
        "n_test": len(ids),
        "runs": runs,
        "model": {key: emb.metadata.get(key) for key in ("model", "weights", "weights_sha256")},
        "seconds": round(time.perf_counter() - start, 2),
    }
    _write_json(out / "summary.json", summary)
    return summary


def _write_scores(path: Path, ids: Sequence[str], score: np.ndarray, pred: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write("id,score,label\n")
        for i, s, p in zip(ids, score, pred, strict=True):
            f.write(f"{i},{s:.6f},{int(p)}\n")
    os.replace(tmp, path)


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
    seed: int = 0,
    device: str = "auto",
    **embed_options: Any,
) -> dict[str, Any]:
    """Task 2: embed ``data``, fit a Gaussian mixture on the test slices, write clusters.csv.

    ``k="auto"`` picks the number of components with the lowest BIC over ``k_range``. When
    ``data/train/<group>/`` holds labelled examples, the fitted mixture also clusters them and the
    summary reports their ARI/NMI against the groups (a check, not used for fitting).
    """
    start = time.perf_counter()
    out = Path(out)
    emb = _embed_layout(data, out, ["test"], seed=seed, device=device, **embed_options)
    ids, x = _test_part(emb)
    gmm_kwargs = dict(
        covariance_type=covariance_type,
        init_params=init,
        n_init=n_init,
        reg_covar=reg_covar,
        random_state=seed,
        device=device,
    )
    bics = None
    if k == "auto":
        k, bics = select_components(x, k_range, **gmm_kwargs)
        logger.info(
            f"task2: k=auto chose {k} components (BIC: "
            + ", ".join(f"k={kk} {b:.0f}" for kk, b in bics.items())
            + ")"
        )
    k = int(k)
    if k < 1 or k > len(ids):
        raise InputError(f"k must be between 1 and the {len(ids)} test slices, got {k}")
    gmm = GaussianMixture(k, **gmm_kwargs).fit(x)
    labels = gmm.predict(x)
    write_run(out / "clusters.csv", ids, labels)
    logger.info(f"task2: {len(ids)} test slices in {k} clusters -> {out / 'clusters.csv'}")
    summary: dict[str, Any] = {
        "task": "task2",
        "method": "gmm",
        "k": k,
        "k_auto_bic": None if bics is None else {str(kk): b for kk, b in bics.items()},
        "init": init,
        "covariance_type": covariance_type,
        "seed": seed,
        "n_test": len(ids),
        "converged": bool(gmm.converged_),
        "n_iter": int(gmm.n_iter_),
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "clusters": str(out / "clusters.csv"),
        "model": {key: emb.metadata.get(key) for key in ("model", "weights", "weights_sha256")},
    }
    groups = emb.labels
    train = np.array(
        [i.startswith("train/") and g is not None for i, g in zip(emb.ids, groups, strict=True)]
    )
    if train.any():
        summary["train_check"] = attribution_metrics(
            groups[train].tolist(), gmm.predict(emb.matrix[train]).tolist()
        )
    summary["seconds"] = round(time.perf_counter() - start, 2)
    _write_json(out / "summary.json", summary)
    return summary
