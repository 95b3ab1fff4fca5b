"""Task 2 end to end: embed an ImageCLEF-style folder (resumable), fit the Gaussian mixture on
the test slices, write clusters.csv, the model and the summary."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ctfp.attribution.classify import GroupClassifier
from ctfp.attribution.clustering import cluster_slices
from ctfp.attribution.settings import Task2Settings
from ctfp.attribution.shards import stream_fit_warnings
from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.evaluate import attribution_metrics, write_run
from ctfp.exceptions import InputError
from ctfp.io.fs import Location, PathLike
from ctfp.progress import logger
from ctfp.runs.folder import CLUSTERS_FILE, MODEL_DIR, OPEN_SET_FILE, begin_commit, write_summary
from ctfp.runs.layout import (
    Run,
    check_layout,
    cross_validate,
    data_folder,
    files_under,
    model_identity,
    rows_by_id,
    run_ids,
    settings_record,
    unread_note,
    unread_warnings,
)
from ctfp.runs.models import save_model
from ctfp.runs.remote import in_run_folder
from ctfp.store.reader import Embeddings

#: Feature types ``--method auto`` tries with labels (ResNet50 too where its weights load).
TASK2_FEATURES = (
    "pixels:16",
    "residual",
    "spectrum",
    "pixels:16+residual",
    "residual+spectrum",
    "resnet50",
)
#: Features of the blind mixture when none are given: with no labels nothing can choose them
#: (``benchmarks/attribution.py`` measures this default over seeds).
BLIND_FEATURES = "residual"


def labelled_groups(data: PathLike | Location) -> list[str]:
    """The ``train/<group>/`` folders of ``data`` (local or on a store) that hold a file."""
    return sorted(
        {f.split("/")[0] for f in files_under(data_folder(data).join("train")) if "/" in f}
    )


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
    """Task 2: embed ``data``, attribute each test slice to a generator, write clusters.csv.

    ``settings.method`` (``overrides``: Task2Settings fields, e.g. ``method="classify"``):

    - ``auto`` (default): with labelled examples in ``data/train/<group>/``, choose the way to
      attribute (a linear classifier or the semi-supervised mixture), its settings and the
      features by cross-validation on them (:mod:`ctfp.attribution.selection`), and mark test
      slices that fit no known group in ``open_set.csv``; without, the blind mixture;
    - ``classify`` / ``semi``: that way, on the given features, cross-validated once for its
      estimate and the open set;
    - ``gmm``: the blind Gaussian mixture of the test slices (``k="auto"``: lowest BIC over
      ``k_range``; ``pca`` projects first).

    With labels, cluster ``j`` is the ``j``-th group in sorted order (the summary names them).
    ``embed`` says how the slices become embeddings (reused from ``out`` on reruns); its
    ``features="auto"`` lets the run choose. ``data`` and ``out`` may be on an object store
    (``s3://...``, :mod:`ctfp.runs.remote`).
    """
    return in_run_folder(
        data, out, "task2", engine, progress, lambda r: _run_task2(r, settings, embed, overrides)
    )


def _run_task2(
    run: Run, settings: Task2Settings | None, embed: EmbedSettings | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    data, out = run.data, run.out
    s = (settings or Task2Settings()).replace(**overrides)
    embed_settings = embed or EmbedSettings()
    method = s.method
    if s.semi_supervised:
        if method not in ("auto", "semi"):
            raise InputError(
                f"--semi-supervised is --method semi; it contradicts --method {method}"
            )
        method = "semi"
    check_layout(data, ["test"])  # before weights are fetched or anything is embedded
    groups_found = labelled_groups(data)
    if method in ("classify", "semi") and not groups_found:
        raise InputError(
            f"--method {method} needs labelled examples in {data.join('train')}/<group>/"
        )
    if method == "auto":
        method = "select" if groups_found else "gmm"
    if method == "gmm" and embed_settings.features == "auto":
        embed_settings = embed_settings.replace(features=BLIND_FEATURES)
    features, skipped, embedded = run.embed(["test"], embed_settings, TASK2_FEATURES)
    first = embedded[features[0]]
    ids, test_ids = run_ids(first)
    train = np.char.startswith(first.ids.astype(str), "train/")
    rows = ids, test_ids, train & np.not_equal(first.labels, None)
    if method == "gmm":
        result = _blind(run, s, embed_settings, first, rows)
    else:
        result = _labelled(run, s, method, embed_settings, embedded, features, skipped, rows)
    name, winner, model, clusters, recorded, fields = result
    write_run(out / CLUSTERS_FILE, ids, clusters)
    settings = {"task2": s.to_dict(), **recorded}
    save_model(model, out / MODEL_DIR, identity=winner.metadata, settings=settings)
    fields["warnings"] = [*unread_warnings(data, run.unread), *fields["warnings"]]
    fields["verdict"] += unread_note(len(run.unread))
    for warning in fields["warnings"]:
        logger.warning(f"warning: {warning}")
    logger.info(f"task2: {fields['verdict']}")
    summary = {
        "task": "task2",
        "method": name,
        **settings_record(run, s, embed_settings),
        "n_test": len(ids),
        "n_unreadable": len(run.unread),
        "clusters": str(out / CLUSTERS_FILE),
        "model_dir": str(out / MODEL_DIR),
        "model": model_identity(winner.metadata),
        **fields,
        "seconds": round(time.perf_counter() - run.start, 2),
    }
    files = [CLUSTERS_FILE, *([] if method == "gmm" else [OPEN_SET_FILE]), MODEL_DIR]
    write_summary(out, summary, [out / f for f in files])
    return summary


def _blind(
    run: Run,
    s: Task2Settings,
    embed_settings: EmbedSettings,
    emb: Embeddings,
    rows: tuple[list[str], list[str], np.ndarray],
) -> tuple[str, Embeddings, Any, np.ndarray, dict[str, Any], dict[str, Any]]:
    """The blind Gaussian mixture of the test slices: its name, embeddings, model, clusters,
    settings to record and summary fields. ``rows``: the test slices' run-file ids and ids,
    and the mask of the labelled rows."""
    ids, test_ids, train = rows
    out = run.out
    x = rows_by_id(emb, test_ids)
    result = cluster_slices(x, s.replace(method="gmm"), progress=run.progress)
    labels = result.labels
    sizes = np.bincount(labels, minlength=result.k).tolist()
    warnings = fit_warnings(result, sizes, s, x.shape)
    if result.k > 1 and max(sizes) == len(labels) and not s.allow_collapse:
        raise InputError(
            f"the {result.k}-component mixture put all {len(labels)} test slices in one component "
            f"(sizes {sizes}): it attributes nothing. Try --covariance diag, --pca N or another "
            "--init, or pass --allow-collapse to keep it"
        )
    begin_commit(out)
    if result.bics is not None:
        logger.info(
            f"task2: k=auto chose {result.k} components (BIC: "
            + ", ".join(f"k={kk} {b:.0f}" for kk, b in result.bics.items())
            + ")"
        )
    logger.info(f"task2: {len(ids)} test slices in {result.k} clusters -> {out / CLUSTERS_FILE}")
    fields = {
        "mode": "blind",
        "features": embed_settings.features,
        "k": result.k,
        "k_auto_bic": None if result.bics is None else {str(a): b for a, b in result.bics.items()},
        "k_auto_silhouette": None
        if result.silhouettes is None
        else {str(a): b for a, b in result.silhouettes.items()},
        "init": s.init,
        "covariance_type": s.covariance_type,
        "pca": s.pca,
        "converged": bool(result.model.converged_),
        "n_iter": int(result.model.n_iter_),
        "cluster_sizes": sizes,
        "warnings": warnings,
        "verdict": f"{len(ids)} test slices clustered blind into {result.k} groups (no "
        "labelled examples in train/<group>/, so no estimate of how right they are)",
    }
    if train.any():
        predicted = result.predict(emb.matrix[train])
        fields["train_check"] = attribution_metrics(emb.labels[train].tolist(), predicted.tolist())
    return "gmm", emb, result, labels, {"embed": embed_settings.to_dict()}, fields


def _labelled(
    run: Run,
    s: Task2Settings,
    method: str,
    embed_settings: EmbedSettings,
    embedded: dict[str, Embeddings],
    features: list[str],
    skipped: dict[str, str],
    rows: tuple[list[str], list[str], np.ndarray],
) -> tuple[str, Embeddings, Any, np.ndarray, dict[str, Any], dict[str, Any]]:
    """Attribution with labels: cross-validated choice (``select``) or one way (``classify``,
    ``semi``), then the open set (written); as :func:`_blind`'s."""
    from scipy.stats import binom

    from ctfp.attribution.selection import (
        candidate,
        default_candidates,
        fit,
        open_set_pvalues,
        select,
    )

    ids, test_ids, train = rows
    out = run.out
    first = embedded[features[0]]
    train_ids = first.ids[train].tolist()
    groups = np.asarray([str(g) for g in first.labels[train]], dtype=object)
    names = sorted(set(groups.tolist()))
    if isinstance(s.k, int) and s.k != len(names):
        raise InputError(
            f"--k {s.k} but train/ holds {len(names)} labelled groups ({', '.join(names)}): with "
            "labels k is the number of groups; drop --k, or --method gmm to cluster blind"
        )
    matrices = {f: (rows_by_id(e, train_ids), rows_by_id(e, test_ids)) for f, e in embedded.items()}
    if method == "select":
        candidates = default_candidates(features, len(groups))
    elif embed_settings.features == "auto":  # the way is given; its settings and features not
        candidates = [c for c in default_candidates(features, len(groups)) if c.method == method]
    elif method == "classify":
        candidates = [candidate(features[0], "classify", {"model": s.classifier, "pca": s.pca})]
    else:
        candidates = [
            candidate(features[0], "semi", {"pca": s.pca, "covariance": s.covariance_type})
        ]
    cv = s.selection
    on = f"{len(groups)} labelled slices of {len(names)} groups"
    selection = cross_validate(run, select, matrices, groups, candidates, cv, features, on, s)
    begin_commit(out)  # the previous run's results withdrawn, now that this one can write
    best = selection.best.candidate
    x_train, x_test = matrices[best.features]
    attributor = fit(best, x_train, groups, x_test, s.seed, s.device)
    predicted = attributor.predict_groups(x_test)
    clusters = np.searchsorted(names, predicted.astype(str))
    pvalues = open_set_pvalues(selection)
    unknown = pvalues <= cv.reject if pvalues is not None else np.zeros(len(ids), bool)
    n_unknown = int(unknown.sum())
    # More unknowns than the false-rejection rate explains (binomial tail, 0.1 %): a generator
    # nobody labelled, with --k auto a cluster of its own. Cross-conformal p-values are valid
    # only up to a factor of about 2 (Vovk 2015), so the null rate is twice --reject.
    null = min(1.0, 2 * cv.reject)
    tail = float(binom.sf(n_unknown - 1, len(ids), null)) if cv.reject > 0 else 1.0
    extra = n_unknown >= 5 and tail < 1e-3
    k = len(names)
    if extra and s.k == "auto":
        clusters = np.where(unknown, len(names), clusters)
        k += 1
    write_run(out / OPEN_SET_FILE, ids, np.where(unknown, -1, clusters))
    recorded = {
        "embed": embed_settings.replace(features=best.features).to_dict(),
        "chosen": {"features": best.features, "method": best.method, "params": dict(best.params)},
        "groups": names,
        "open_set_reject": cv.reject,
    }
    model = attributor.model
    if not isinstance(model, GroupClassifier):
        model.groups = attributor.groups
    sizes = np.bincount(clusters, minlength=k).tolist()
    b = selection.best
    verdict = (
        f"{len(ids)} test slices attributed to {len(names)} labelled generators by "
        f"{best.label}: cross-validated ARI {b.score:.2f} [{b.interval[0]:.2f}, "
        f"{b.interval[1]:.2f}], accuracy {b.extra['accuracy']:.2f}, on {len(groups)} labelled "
        "slices"
    )
    warnings = []
    if pvalues is not None and 1.0 / (len(groups) + 1) > cv.reject:  # the open set's blind spot
        verdict += f"; too few labelled slices for the open set to flag any at {cv.reject:.0%}"
        warnings.append(
            f"with {len(groups)} labelled slices the smallest open-set p-value is "
            f"1/{len(groups) + 1} = {1.0 / (len(groups) + 1):.3f}, above --reject {cv.reject}: "
            "no test slice can be called unknown; label more slices or raise --reject"
        )
    elif pvalues is not None:
        verdict += (
            f"; {n_unknown} fit no known generator (about {cv.reject * len(ids):.0f} expected "
            f"by chance at {cv.reject:.0%})"
        )
        if extra:
            verdict += ", more than chance: likely a generator not in train/"
    fields = {
        "mode": "auto" if method == "select" else method,
        "features": best.features,
        "params": dict(best.params),
        "pca": best.params.get("pca"),
        "init": "train-group means" if best.method == "semi" else None,
        "covariance_type": best.params.get("covariance", s.covariance_type)
        if best.method == "semi"
        else None,
        "k": k,
        "groups": names,
        "cluster_groups": {str(j): n for j, n in enumerate(names)}
        | ({str(len(names)): "unknown"} if k > len(names) else {}),
        "selection": {**selection.to_dict(), "features_tried": features}
        | ({"skipped": skipped} if skipped else {}),
        "open_set": {
            "reject": cv.reject,
            "rule": "cross-conformal p-value <= reject",
            "min_pvalue": round(1.0 / (len(groups) + 1), 4),
            "unknown": n_unknown,
            "expected_by_chance": round(cv.reject * len(ids), 1),
            "null_rate": null,
            "binomial_tail": tail,
            "extra_group": extra,
            "file": str(out / OPEN_SET_FILE),
        },
        "k_auto_bic": None,
        "k_auto_silhouette": None,
        "cluster_sizes": sizes,
        "warnings": warnings,
        "verdict": verdict,
        "train_check": attribution_metrics(
            groups.tolist(), attributor.predict_groups(x_train).tolist()
        ),
    }
    return best.method, embedded[best.features], model, clusters, recorded, fields


def fit_warnings(
    result: Any, sizes: list[int], settings: Task2Settings, shape: tuple[int, int]
) -> list[str]:
    """What makes a task 2 fit of the (n, d) ``shape`` test slices doubtful, in words
    (:func:`ctfp.attribution.shards.stream_fit_warnings`)."""
    return stream_fit_warnings(
        result.k,
        sizes,
        settings,
        rows=shape[0],
        dim=settings.pca or shape[1],
        bics=result.bics,
        silhouettes=result.silhouettes,
        slices=True,
    )


__all__ = [
    "BLIND_FEATURES",
    "OPEN_SET_FILE",
    "TASK2_FEATURES",
    "fit_warnings",
    "labelled_groups",
    "run_task2",
]
