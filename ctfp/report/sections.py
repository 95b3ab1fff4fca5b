"""The sections both task pages share: the Answer box, the method selection, the run settings
and model, and the embedding map."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.report.audit_md import SCORERS, WAYS, Answer, criterion_meaning, features_plain
from ctfp.report.figures import map_plot, projections
from ctfp.report.html import Html, escape, figure, fmt, table
from ctfp.report.rows import Rows


def answer_box(answer: Answer) -> str:
    """The top of every page: what the run found in the plain words of audit.md, warnings
    first."""
    parts = ['<section id="verdict" class="verdict-box"><h2>Answer</h2>']
    if answer.warnings:
        items = "".join(f"<li>{_words(w)}</li>" for w in answer.warnings)
        parts.append(f'<div class="warning"><ul>{items}</ul></div>')
    parts.append(f'<p class="verdict">{_words(answer.finding)}</p><dl class="answer">')
    for heading, lines in answer.sections():
        if lines:
            items = "".join(f"<li>{_words(line)}</li>" for line in lines)
            parts.append(f"<dt>{escape(heading)}</dt><dd><ul>{items}</ul></dd>")
    parts.append(
        '</dl><p class="why">How the method was chosen, with its technical names: '
        '<a href="#selection">method selection</a>.</p></section>'
    )
    return "".join(parts)


def _words(text: str) -> str:
    """Plain text as HTML, its `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


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


#: What a page without the truth says where the evaluation would be (HTML).
NO_TRUTH = (
    "No truth file was given: the ROC curve, the confusion matrix and the test metrics appear "
    "with <code>ctfp report RUN --truth FILE</code>."
)
#: What each selection metric is, said once on the page.
METRIC_MEANINGS = {
    "roc_auc": "how often a used slice scores above a not-used one (0.5 is guessing, 1 perfect)",
    "ari": "the agreement of two groupings beyond chance (0 is a random grouping, 1 the same)",
}


def method_names(summary: dict[str, Any]) -> str:
    """The method's technical names, each explained once (HTML): the chosen candidate, its
    threshold criterion, its metric and the run's own verdict."""
    task1 = summary.get("task") == "task1"
    selection = summary.get("selection") or {}
    method, features = str(summary.get("method")), summary.get("features")
    label = (selection.get("chosen") or {}).get("label") or f"{features} / {method}"
    plain = (SCORERS if task1 else WAYS).get(method, method)
    names = [
        f"<li><b>Chosen:</b> <code>{escape(label)}</code>, read as features / method "
        f"(settings): <code>{escape(features)}</code> is {escape(features_plain(features))}; "
        f"<code>{escape(method)}</code> is {escape(plain)}.</li>"
    ]
    if task1:
        calibrate = summary.get("calibrate")
        named = f" <code>{escape(calibrate)}</code>" if calibrate else ""
        names.append(
            f"<li><b>Threshold{named}:</b> set {escape(criterion_meaning(calibrate))}.</li>"
        )
    metric = selection.get("metric") or ("roc_auc" if task1 else "ari")
    names.append(
        f"<li><b>{escape(METRIC_LABELS.get(metric, metric))}:</b> "
        f"{escape(METRIC_MEANINGS.get(metric, ''))}.</li>"
    )
    verdict = summary.get("verdict")
    if verdict:
        names.append(f"<li><b>The run's verdict</b> (summary.json, log): {escape(verdict)}</li>")
    return f"<ul>{''.join(names)}</ul>"


def selection_section(summary: dict[str, Any]) -> str:
    """The method's names explained (:func:`method_names`); with a selection, what was chosen
    and why, and every candidate's cross-validated score (collapsed)."""
    parts = ['<section id="selection"><h2>Method selection</h2>', method_names(summary)]
    selection = summary.get("selection")
    choice = summary.get("choice_without_members")
    if choice:  # no known members: ranked by the test slices against held-out non-members
        rows = [
            [c["label"], c.get("test_vs_non_members_auc"), c.get("gap_se"), c.get("error") or ""]
            for c in choice["candidates"]
        ]
        rows.sort(key=lambda r: -(r[1] if r[1] is not None else -1))
        parts.append(
            f'<p class="note">No known members: nothing to cross-validate on. Chosen: '
            f"{escape(choice['chosen'])}, by the rule: {escape(choice['rule'])}. The measure is "
            f"how far the {choice['n_test']} test slices stand above the "
            f"{choice['n_not_used']} known non-members, each scored by a fit on the others: it "
            "ranks the scores (the more members a score finds, the higher) and is not an "
            "accuracy; it assumes the test's non-members are like the known ones. No test label "
            "was used.</p>"
            f"<details><summary>All {len(rows)} scores</summary>"
        )
        header = ["candidate", "ROC-AUC, test vs held-out non-members", "SE of gap to best"]
        return "".join(parts) + table([*header, "error"], rows) + "</details></section>"
    if not selection:
        return "".join(parts) + '<p class="note">The method was given, not chosen.</p></section>'
    metric = selection.get("metric") or ("roc_auc" if summary.get("task") == "task1" else "ari")
    name = METRIC_LABELS.get(metric, metric)
    cv = selection.get("settings") or {}
    n = selection.get("n_labelled", selection.get("n_train"))
    rule = RULES.get(
        str(selection.get("rule")),
        "the best, simplified within its family (same features and method) by the "
        "one-standard-error rule",
    )
    parts.append(
        f'<p class="note">Why: {escape(selection.get("reason", ""))}. Each candidate was scored '
        f"out of fold on the {n} labelled slices ({cv.get('folds')}-fold cross-validation "
        f"stratified by class, {cv.get('repeats')} repeats; methods that learn nothing from the "
        f"labels fitted once), by its {escape(name)}. Candidates within one standard error of "
        "the best (on the paired gap: the same bootstrap resamples for both) are tied with it. "
        f"Chosen: {escape(rule)}. The winner's estimate is optimistic (it is the best of many); "
        "the test truth was never looked at.</p>"
    )
    open_set = summary.get("open_set") or {}
    if open_set:  # how many test slices fit no labelled generator
        extra = "More than chance explains: likely a generator that train/ does not hold."
        parts.append(
            f'<p class="note">Open set: {open_set.get("unknown")} of {summary.get("n_test")} test '
            "slices fit no labelled generator (cross-conformal p-value at most "
            f"{open_set.get('reject')}; about {open_set.get('expected_by_chance')} expected by "
            f"chance). {extra if open_set.get('extra_group') else ''} They are -1 in "
            "open_set.csv.</p>"
        )
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
    return "".join(parts) + table([*header, "", "error"], rows) + "</details></section>"


def settings_section(
    run: Path, summary: dict[str, Any], rows: Rows | None, shards: Path | None
) -> str:
    """``summary.json`` (nested values folded) and the model identity of the shards."""
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
    if shards is None:
        parts.append(
            '<div class="warning">The run folder has no embeddings (embeddings/part-*.parquet): '
            "the map and the thumbnails are left out.</div>"
        )
    elsewhere = {"model", "settings", "warnings", "files", "verdict"}
    outcome = [(k, _folded(k, v)) for k, v in summary.items() if k not in elsewhere]
    parts.append('<div class="figures"><div class="wide kv"><h3>The run (summary.json)</h3>')
    parts.append(table(["field", "value"], outcome))
    parts.append('</div><div class="wide kv"><h3>Model identity (shard metadata)</h3>')
    parts.append(table(["field", "value"], list(identity.items())))
    parts.append("</div></div>")
    recorded = summary.get("settings") or {}
    if recorded:
        stages = [
            (stage, ", ".join(f"{name}={fmt(value)}" for name, value in _flat(values or {})))
            for stage, values in recorded.items()
        ]
        parts.append("<h3>Settings that ran (one object per stage)</h3>")
        parts.append(table(["stage", "settings"], stages))
    parts.append(f'<p class="note">Run folder: <code>{escape(run.resolve())}</code></p></section>')
    return "".join(parts)


def _folded(key: str, value: Any) -> Any:
    """A summary value as a table cell: the selection as a link to its section, a mapping of
    more than three values folded."""
    if key == "selection" and value:
        n = len(value.get("candidates") or [])
        return Html(f'{n} candidates: see <a href="#selection">method selection</a>')
    flat = _flat(value) if isinstance(value, Mapping) else []
    if len(flat) <= 3:
        return value
    return Html(
        f"<details><summary>{len(flat)} values</summary>{table(['field', 'value'], flat)}</details>"
    )


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
    """Scatter of the 2-D projections; ``groups[i]`` names the colour group of map row i."""
    head = '<section id="map"><h2>Map of the embeddings</h2>'
    if rows is None or not rows.map_ids:
        return head + '<p class="note">No embeddings to draw.</p></section>'
    projected = projections(np.concatenate(rows.map_x), seed)
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


__all__ = ["answer_box", "map_section", "method_names", "selection_section", "settings_section"]
