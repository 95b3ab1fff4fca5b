"""The sections both task pages share: the run settings and model, and the embedding map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctfp.report.figures import map_plot, projections
from ctfp.report.html import escape, figure, fmt, table
from ctfp.report.rows import Rows


def verdict_box(summary: dict[str, Any]) -> str:
    """The top of every page: the answer in one sentence with its uncertainty
    (``summary["verdict"]``), and the method that gave it and why."""
    text = summary.get("verdict") or (
        f"{summary.get('task', 'this')} run of ctfp before the verdict was recorded: see the "
        "sections below."
    )
    parts = [
        '<section id="verdict" class="verdict-box"><h2>Answer</h2>',
        f'<p class="verdict">{escape(text)}</p>',
    ]
    selection = summary.get("selection") or {}
    chosen = (selection.get("chosen") or {}).get("label")
    if chosen:
        parts.append(
            f'<p class="why"><b>Method:</b> {escape(chosen)}, chosen by cross-validation on the '
            f"labelled training data: {escape(selection.get('reason', ''))}. "
            '<a href="#selection">All candidates</a>.</p>'
        )
    elif summary.get("method"):
        parts.append(
            f'<p class="why"><b>Method:</b> {escape(summary["method"])}, as asked (not '
            "chosen by cross-validation).</p>"
        )
    return "".join(parts) + "</section>"


#: How each selection metric is named on the page.
METRIC_LABELS = {"roc_auc": "ROC-AUC", "ari": "ARI"}
#: What each rule did, in words (the default: the one-standard-error rule alone).
RULES = {
    "forward selection": "forward selection from the best (Caruana et al. 2004): the candidate "
    "on its features that most raises the out-of-fold ROC-AUC of the weighted mean of "
    "standardised scores was added, with replacement, until none raised it; the whole choice "
    "was also repeated on held-out halves of the slices",
    "tied mean": "the equal mean of the standardised scores of the candidates on the best's "
    "features that are tied with it",
}


def open_set_note(summary: dict[str, Any]) -> str:
    """How many test slices fit no labelled generator, in a paragraph (HTML), or ``""``."""
    open_set = summary.get("open_set") or {}
    if not open_set:
        return ""
    return (
        f'<p class="note">Open set: {open_set.get("unknown")} of {summary.get("n_test")} test '
        "slices fit no labelled generator (cross-conformal p-value at most "
        f"{open_set.get('reject')}; about {open_set.get('expected_by_chance')} expected by "
        "chance). "
        + (
            "More than chance explains: likely a generator that train/ does not hold."
            if open_set.get("extra_group")
            else ""
        )
        + " They are -1 in open_set.csv.</p>"
    )


def selection_section(summary: dict[str, Any]) -> str:
    """What was chosen and why, and every candidate's cross-validated score on the labelled
    slices (best first; the table collapsed): the same section for both tasks, with task 2's
    open-set note."""
    selection = summary.get("selection")
    if not selection:
        return ""
    metric = selection.get("metric") or ("roc_auc" if summary.get("task") == "task1" else "ari")
    name = METRIC_LABELS.get(metric, metric)
    cv = selection.get("settings") or {}
    n = selection.get("n_labelled", selection.get("n_train"))
    rule = RULES.get(
        str(selection.get("rule")),
        "the best, simplified within its family (same features and method) by the "
        "one-standard-error rule",
    )
    parts = ['<section id="selection"><h2>Method selection</h2>']
    parts.append(f'<p class="reason">{escape(selection.get("reason", ""))}.</p>')
    parts.append(
        f'<p class="note">Each candidate was scored out of fold on the {n} labelled slices '
        f"({cv.get('folds')}-fold cross-validation stratified by class, {cv.get('repeats')} "
        "repeats; methods that learn nothing from the labels fitted once), by its "
        f"{escape(name)}. Candidates within one standard error of the best (on the paired gap: "
        f"the same bootstrap resamples for both) are tied with it. Chosen: {escape(rule)}. The "
        "winner's estimate is optimistic (it is the best of many); the test truth was never "
        "looked at.</p>"
    )
    parts.append(open_set_note(summary))
    for left_out, reason in (selection.get("skipped") or {}).items():
        parts.append(f'<p class="note">{escape(left_out)} left out: {escape(reason)}</p>')
    candidates = selection.get("candidates") or []
    accuracy = any(c.get("accuracy") is not None for c in candidates)
    rows = []
    for c in candidates:
        interval = c.get(f"{metric}_95") or [None, None]
        ci = "-" if None in interval else f"{interval[0]:.3f}-{interval[1]:.3f}"
        mark = "chosen" if c.get("chosen") else ("within 1 SE" if c.get("within_one_se") else "")
        row = [c.get("label"), c.get(metric), c.get(f"{metric}_se"), ci, c.get("gap_se")]
        rows.append([*row, *([c.get("accuracy")] if accuracy else []), mark, c.get("error") or ""])
    header = ["candidate", f"CV {name}", "SE", "95 % interval", "SE of gap to best"]
    header += ["accuracy"] if accuracy else []
    parts.append(f"<details><summary>All {len(rows)} candidates</summary>")
    parts.append(table([*header, "", "error"], rows))
    parts.append("</details></section>")
    return "".join(parts)


def settings_section(
    run: Path, summary: dict[str, Any], rows: Rows | None, shards: Path | None
) -> str:
    """``summary.json`` and the model identity of the shards, with warnings for random weights
    and missing embeddings."""
    model = dict(summary.get("model") or {})
    meta = rows.metadata if rows is not None else {}
    identity = {
        "model": meta.get("model", model.get("model")),
        "weights": meta.get("weights", model.get("weights")),
        "weights_sha256": meta.get("weights_sha256", model.get("weights_sha256")),
        "dim": meta.get("dim"),
        "stored dtype": meta.get("dtype"),
        "preprocessing": meta.get("preprocessing"),
        "decoding window": (meta.get("decode") or {}).get("window"),
        "ctfp version (embeddings)": meta.get("ctfp_version"),
        "embeddings": None if shards is None else f"{shards} ({rows.n_rows if rows else 0} rows)",
    }
    parts = ['<section id="settings"><h2>Run settings and model</h2>']
    weights = str(identity["weights"] or "")
    if weights.startswith("random"):
        parts.append(
            '<div class="warning"><b>Random weights.</b> The backbone was not trained '
            f"({escape(weights)}): its embeddings carry no learned features, so these results "
            "only show that the pipeline runs. They are meaningless for auditing a real "
            "generator.</div>"
        )
    for warning in summary.get("warnings") or []:
        parts.append(f'<div class="warning"><b>Warning.</b> {escape(warning)}</div>')
    if shards is None:
        parts.append(
            '<div class="warning">The run folder has no embeddings (embeddings/part-*.parquet): '
            "the map and the thumbnails are left out.</div>"
        )
    recorded = summary.get("settings") or {}
    skip = {"model", "runs", "settings", "warnings", "files"}
    outcome = [(k, v) for k, v in summary.items() if k not in skip]
    parts.append('<div class="figures"><div><h3>The run (summary.json)</h3>')
    parts.append(table(["field", "value"], [(k, fmt(v)) for k, v in outcome]))
    parts.append('</div><div class="wide"><h3>Model identity (shard metadata)</h3>')
    parts.append(table(["field", "value"], [(k, fmt(v)) for k, v in identity.items()]))
    parts.append("</div></div>")
    if recorded:
        stages = [
            (stage, ", ".join(f"{name}={fmt(value)}" for name, value in _flat(values or {})))
            for stage, values in recorded.items()
        ]
        parts.append("<h3>Settings that ran (one object per stage)</h3>")
        parts.append(f'<div class="stages">{table(["stage", "settings"], stages)}</div>')
    parts.append(f'<p class="note">Run folder: <code>{escape(run.resolve())}</code></p></section>')
    return "".join(parts)


def _flat(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"options": {"metric": "l2"}}`` -> ``[("options.metric", "l2")]``."""
    out: list[tuple[str, Any]] = []
    for name, value in values.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", value))
    return out


def map_section(
    rows: Rows | None,
    groups: Sequence[str],
    colour_of: Mapping[str, str],
    caption: str,
    seed: int,
    marker_of: Mapping[str, str] | None = None,
) -> str:
    """Scatter of the 2-D projections; ``groups[i]`` names the colour group of map row i
    (``marker_of``: groups drawn with a marker of their own)."""
    head = '<section id="map"><h2>Map of the embeddings</h2>'
    if rows is None or not rows.map_ids:
        return head + '<p class="note">No embeddings to draw.</p></section>'
    projected = projections(rows.map_matrix(), seed)
    if not projected:
        return head + '<p class="note">Too few embeddings to project.</p></section>'
    sampled = len(rows.map_ids) < rows.n_rows
    note = f" A random sample of {len(rows.map_ids)} of {rows.n_rows} rows." if sampled else ""
    figures = [
        figure(
            map_plot(xy, groups, colour_of, title, marker_of),
            caption + note,
            f"{title} map of the embeddings",
        )
        for title, xy in projected
    ]
    return head + '<div class="figures">' + "".join(figures) + "</div></section>"


__all__ = ["map_section", "settings_section", "verdict_box"]
