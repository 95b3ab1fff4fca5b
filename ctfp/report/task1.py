"""The task 1 page: scores, evaluation, k sweep and evidence (the nearest generated slices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctfp.exceptions import InputError
from ctfp.index.distance import METRICS, nearest
from ctfp.io.fs import PathLike
from ctfp.report.audit_md import criterion_meaning
from ctfp.report.figures import (
    GENERATED,
    MEMBER,
    NON_MEMBER,
    TEST,
    confusion_plot,
    k_sweep_plot,
    roc_plot,
    score_distributions,
    score_histogram,
)
from ctfp.report.html import Html, Thumbnails, escape, figure, table, window_of
from ctfp.report.rows import Rows, read_rows
from ctfp.report.sections import NO_TRUTH, map_section
from ctfp.runs.folder import (
    RUN_FILE,
    SCORES_FILE,
    TEST_PREFIX,
    TRAIN_SCORES_FILE,
    chosen_k,
    read_scores,
    task1_dir,
)

NAV = ("selection", "map", "scores", "evaluation", "k-sweep", "evidence", "settings")
COLOURS = {"used": MEMBER, "not_used": NON_MEMBER, "generated": GENERATED, "test": TEST}
METRIC_ROWS = (
    ("F1 (used = positive)", "f1"),
    ("accuracy", "accuracy"),
    ("Cohen's kappa", "kappa"),
    ("ROC-AUC", "roc_auc"),
    ("precision", "precision"),
    ("recall", "recall"),
    ('baseline F1 (every slice "used")', "baseline_all_used_f1"),
    ("test slices", "n"),
    ("truly used", "n_used"),
)
# The evidence distance of each metric, as ctfp.index.distance defines it.
DISTANCE_LABELS = {
    "cosine": "cosine distance (L2 of unit vectors, sqrt(2 - 2 cos))",
    "l2": "L2 distance",
    "l1": "L1 distance",
}


def nearest_generated(
    rows: Rows, query: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Distance to and row (in ``rows.generated_ids``) of the exact nearest generated slice of
    each ``query`` (n, d) row; None when either side is empty."""
    generated = np.concatenate(rows.generated_x or [np.zeros((0, 0))])
    if len(generated) == 0 or len(query) == 0:
        return None
    distances, found = nearest(query, generated, metric, k=1)
    return distances[:, 0], found[:, 0]


def task1_body(
    run: Path,
    summary: dict[str, Any],
    shards: Path | None,
    truth: PathLike | None,
    k: int | None,
    max_items: int,
    seed: int,
) -> tuple[str, Rows | None]:
    """The task 1 sections between the method selection and the settings, and the rows read
    from the shards (None without embeddings)."""
    from ctfp.evaluate import evaluate_run, read_table

    ks = [int(v) for v in summary.get("k") or []]
    if not ks:
        raise InputError("summary.json lists no k for this task1 run")
    if k is None:
        k = chosen_k(summary) or ks[0]
    elif k not in ks:
        raise InputError(f"k={k} is not one of this run's k: {', '.join(map(str, ks))}")
    dest = task1_dir(run, ks, k)
    run_csv, scores_csv = dest / RUN_FILE, dest / SCORES_FILE
    ids, scores, pred = read_scores(scores_csv)
    threshold = ((summary.get("runs") or {}).get(str(k)) or {}).get("threshold")
    method = summary.get("method", "centroid")
    metric = summary.get("metric") if method != "centroid" else "cosine"
    metric = metric if metric in METRICS else "cosine"
    order = np.argsort(-scores, kind="stable")[:max_items]
    top = [ids[i] for i in order]
    wanted = {TEST_PREFIX + i for i in top}
    rows = read_rows(shards, wanted, generated=True, vectors=True, seed=seed) if shards else None
    truth_table = metrics = y = None
    if truth is not None:
        metrics = evaluate_run("task1", run_csv, truth, scores_csv)
        truth_table = read_table(truth, "label")
        y = np.array([int(truth_table[i]) for i in ids], dtype=int)
    # The map: train used / not used, generated and test rows.
    pairs = zip(rows.map_ids, rows.map_labels, strict=True) if rows is not None else ()
    groups = ["test" if i.startswith(TEST_PREFIX) or g not in COLOURS else g for i, g in pairs]
    caption = (
        "Every embedded slice projected to 2-D, coloured by its folder: train/used, "
        "train/not_used, generated and test."
    )
    sections = [map_section(rows, groups, COLOURS, caption, seed)]

    # Scores.
    chosen = f" for k={k}" if len(ks) > 1 else ""
    parts = [f'<section id="scores"><h2>Test scores{escape(chosen)}</h2>']
    split, which, by = (
        (pred, "predicted", "the predicted label") if y is None else (y, "truly", "the truth")
    )
    uri = score_histogram(scores, split, (f"{which} not used", f"{which} used"), threshold)
    # The known members' and non-members' out-of-fold scores (not in older or member-less runs).
    non_members = None
    if (dest / TRAIN_SCORES_FILE).is_file():
        _, train, known = read_scores(dest / TRAIN_SCORES_FILE)
        members, non_members = train[known == 1], train[known == 0]
        implied = ""
        if threshold is not None and len(non_members):
            tpr = float((members >= threshold).mean()) if len(members) else None
            implied = (
                f" At the threshold, {float((non_members >= threshold).mean()):.0%} of the known "
                "non-members would be flagged (the false-positive rate it implies)"
                + (f" and {tpr:.0%} of the known members found" if tpr is not None else "")
                + "."
            )
        parts.append(
            figure(
                score_distributions(scores, members, non_members, threshold),
                "The chosen scorer's scores of the labelled training reals (out of fold: each "
                "scored by a model that did not see it) and of the test slices. Where the "
                "member and non-member curves separate, the score carries the signal; the "
                f"test slices should look like a mixture of the two.{implied}",
                "score distributions of known members, known non-members and test slices",
            )
        )
    caption = (
        f"Scores of the {len(ids)} test slices ({method}), split by {by}; the dashed line is the "
        f"threshold, set {criterion_meaning(summary.get('calibrate'))}."
        + (" The run does not store the training slices' scores." if non_members is None else "")
    )
    parts.append(figure(uri, caption, "histogram of the test scores"))
    parts.append(f'<p class="note">{int(pred.sum())} of {len(ids)} test slices predicted used.')
    parts.append(f" {NO_TRUTH}</p></section>" if truth is None else "</p></section>")
    sections.append("".join(parts))

    if metrics is not None and y is not None:
        sections.append(_evaluation_section(metrics, y, scores, pred))
    if len(ks) > 1:
        sections.append(k_sweep_section(run, summary, ks, truth))
    sections.append(
        evidence_section(
            rows, top, scores[order], pred[order], truth_table, metric, max_items, non_members
        )
    )
    return "".join(sections), rows


def _evaluation_section(
    metrics: dict[str, Any], y: np.ndarray, scores: np.ndarray, pred: np.ndarray
) -> str:
    """The metrics against the truth, the ROC curve (with both classes) and the confusion
    matrix."""
    parts = [
        '<section id="evaluation"><h2>Evaluation against the truth</h2>',
        '<p class="note">F1 alone flatters: labelling every slice "used" scores the baseline '
        "below. Read it with accuracy, kappa and ROC-AUC.</p>",
        table(["metric", "value"], [(n, metrics.get(key)) for n, key in METRIC_ROWS]),
    ]
    figures = []
    if len(np.unique(y)) == 2:
        roc = roc_plot(y, scores, metrics.get("roc_auc"))
        figures.append(figure(roc, "ROC curve of the test scores against the truth.", "ROC curve"))
    else:
        parts.append('<p class="note">The truth has one class only: no ROC curve.</p>')
    figures.append(
        figure(confusion_plot(y, pred), "Confusion matrix of the run file.", "confusion matrix")
    )
    return "".join(parts) + '<div class="figures">' + "".join(figures) + "</div></section>"


def k_sweep_section(
    run: Path, summary: dict[str, Any], ks: list[int], truth: PathLike | None
) -> str:
    """Each k's predicted-used count and threshold, with the truth its metrics; and their plot."""
    from ctfp.evaluate import evaluate_run

    runs = summary.get("runs") or {}
    selection = summary.get("selection") or {}
    cv = {
        str((c.get("params") or {}).get("k")): c
        for c in selection.get("candidates") or []
        if c.get("error") is None
    }
    chosen = chosen_k(summary)
    header = ["k", "predicted used", "threshold"]
    if cv:
        header += ["CV ROC-AUC (train)", "SE", "chosen"]
    if truth is not None:
        header += ["F1", "accuracy", "kappa", "ROC-AUC", "baseline F1"]
    rows = []
    series: dict[str, list[float]] = {"F1": [], "kappa": [], "ROC-AUC": []}
    baseline = None
    for kk in ks:
        info = runs.get(str(kk)) or {}
        row: list[Any] = [kk, info.get("predicted_used"), info.get("threshold")]
        if cv:
            c = cv.get(str(kk)) or {}
            row += [c.get("roc_auc"), c.get("roc_auc_se"), "chosen" if kk == chosen else ""]
        if truth is not None:
            dest = task1_dir(run, ks, kk)
            m = evaluate_run("task1", dest / RUN_FILE, truth, dest / SCORES_FILE)
            row += [m["f1"], m["accuracy"], m["kappa"], m["roc_auc"], m["baseline_all_used_f1"]]
            baseline = m["baseline_all_used_f1"]
            for name, key in (("F1", "f1"), ("kappa", "kappa"), ("ROC-AUC", "roc_auc")):
                series[name].append(np.nan if m[key] is None else m[key])
        rows.append(row)
    used = [row[1] for row in rows]  # predicted used
    uri = k_sweep_plot(ks, used, series if truth is not None else None, baseline)
    caption = (
        "Metrics of each k against the truth."
        if truth is not None
        else "Test slices predicted used for each k."
    )
    note = (
        f'<p class="note">k={chosen} is shown in detail above: the smallest k within one paired '
        "standard error of the best cross-validated ROC-AUC of the training reals; the test "
        "truth, where given, only measures.</p>"
        if chosen is not None
        else ""
    )
    return (
        '<section id="k-sweep"><h2>k sweep</h2>'
        + note
        + table(header, rows)
        + figure(uri, caption, "k sweep plot")
        + "</section>"
    )


def evidence_section(
    rows: Rows | None,
    top: list[str],
    top_scores: np.ndarray,
    top_pred: np.ndarray,
    truth: dict[str, str] | None,
    metric: str,
    max_items: int,
    non_members: np.ndarray | None = None,
) -> str:
    """The ``top`` test slices (best first), each next to its nearest generated slice, their
    difference and distance; with ``non_members``, each score's percentile among theirs."""
    label = DISTANCE_LABELS[metric]
    parts = [
        '<section id="evidence"><h2>Evidence: the highest-scoring test slices</h2>',
        f'<p class="note">The {len(top)} test slices the run rates most likely used (at most '
        f"{max_items}), each next to its nearest generated slice by {escape(label)} (exact search "
        "over every generated embedding of the run).</p>",
    ]
    if rows is None:
        return "".join(parts) + '<p class="note">No embeddings: no thumbnails.</p></section>'
    thumbs = Thumbnails(window_of(rows.metadata))
    keys = [TEST_PREFIX + i for i in top]
    have = [key for key in keys if key in rows.vectors]
    query = [rows.vectors[key] for key in have]
    found = nearest_generated(rows, np.stack(query), metric) if have else None
    if found is None:
        parts.append('<p class="note">The run has no generated slices to compare with.</p>')
    near_of: dict[str, tuple[Any, Any]] = {}  # (distance, row in rows.generated_ids) of each
    if found is not None:
        distances, nearest_rows = found
        near_of = dict(zip(have, zip(distances, nearest_rows, strict=True), strict=True))
    header = ["rank", "test slice", "score", "predicted"]
    percentile = non_members is not None and len(non_members) > 0
    if percentile:
        header.append("above this share of known non-members")
        parts.append(
            '<p class="note">The percentile column says where each score falls among the known '
            "non-members' (out-of-fold) scores: 99 % means higher than 99 % of slices known not "
            "to be in the training set.</p>"
        )
    header += ["truth"] if truth is not None else []
    header += ["nearest generated slice", "difference |test - generated|", label]
    cells_of_rows = []
    for rank, (run_id, key) in enumerate(zip(top, keys, strict=True)):
        cells: list[Any] = [
            str(rank + 1),
            Html(thumbs.html(rows.where.get(key), run_id)),
            f"{top_scores[rank]:.4g}",
            "used" if top_pred[rank] else "not used",
        ]
        if percentile:  # the share of known non-members below
            cells.append(f"{(non_members < top_scores[rank]).mean():.0%}")
        if truth is not None:
            t = truth.get(run_id)
            cells.append("-" if t is None else ("used" if t == "1" else "not used"))
        if key in near_of:
            distance, j = near_of[key]
            near = rows.generated_where[j]
            cells.append(Html(thumbs.html(near, rows.generated_ids[j])))
            cells.append(Html(thumbs.difference_html(rows.where[key], near)))
            cells.append(f"{float(distance):.4g}")
        else:
            cells += ["-", "-", "-"]
        cells_of_rows.append(cells)
    parts.append(table(header, cells_of_rows))
    parts.append(
        '<p class="note">A black difference image means the test slice and its nearest '
        "generated slice are identical: a copy. Bright areas are where they differ.</p>"
    )
    return "".join(parts) + "</section>"


__all__ = [
    "COLOURS",
    "DISTANCE_LABELS",
    "METRIC_ROWS",
    "NAV",
    "evidence_section",
    "k_sweep_section",
    "nearest_generated",
    "task1_body",
]
