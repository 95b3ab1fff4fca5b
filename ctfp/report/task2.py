"""The task 2 page: the clusters, their evaluation against the truth and thumbnails per cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctfp.exceptions import InputError
from ctfp.io.fs import PathLike
from ctfp.report.figures import PALETTE, bic_plot, cluster_sizes_plot
from ctfp.report.html import Thumbnails, escape, figure, table, window_of
from ctfp.report.rows import Rows, read_rows
from ctfp.report.sections import NO_TRUTH, map_section
from ctfp.runs.folder import CLUSTERS_FILE, TEST_PREFIX

NAV = ("selection", "map", "clusters", "evaluation", "thumbnails", "settings")
GREYS = ("#444444", "#888888", "#bbbbbb", "#222222", "#666666", "#aaaaaa")
METRIC_ROWS = (
    ("adjusted Rand index", "ari"),
    ("normalised mutual information", "nmi"),
    ("clusters", "n_clusters"),
    ("true groups", "n_groups"),
    ("test slices", "n"),
)


def task2_body(
    run: Path,
    summary: dict[str, Any],
    shards: Path | None,
    truth: PathLike | None,
    max_items: int,
    seed: int,
) -> tuple[str, Rows | None]:
    """The task 2 sections between the method selection and the settings, and the rows read
    from the shards (None without embeddings)."""
    from ctfp.evaluate import evaluate_run, read_run, read_table

    path = run / CLUSTERS_FILE
    if not path.is_file():
        raise InputError(f"the run has no {str(path)!r} (written by `ctfp run task2`)")
    clusters = read_run(path, "task2")
    names = sorted(set(clusters.values()))
    rng = np.random.default_rng(seed)
    members = {c: sorted(i for i, v in clusters.items() if v == c) for c in names}
    shown = {
        c: sorted(rng.choice(ids, size=min(max_items, len(ids)), replace=False).tolist())
        for c, ids in members.items()
    }
    wanted = {TEST_PREFIX + i for ids in shown.values() for i in ids}
    rows = read_rows(shards, wanted, generated=False, vectors=False, seed=seed) if shards else None
    named = summary.get("cluster_groups") or {}
    # "cluster 2 (g2_vae)": the labelled group a cluster stands for, where known.
    title = {c: f"cluster {c}" + (f" ({named[str(c)]})" if str(c) in named else "") for c in names}
    # One colour of the palette per cluster, in order (beyond eight, markers tell them apart).
    colours = {title[c]: PALETTE[n % len(PALETTE)] for n, c in enumerate(names)}
    group_colour = {named[str(c)]: colours[title[c]] for c in names if str(c) in named}
    groups: list[str] = []
    if rows is not None:
        for row_id, label in zip(rows.map_ids, rows.map_labels, strict=True):
            test_id = row_id[len(TEST_PREFIX) :]
            if row_id.startswith(TEST_PREFIX) and test_id in clusters:
                groups.append(title[clusters[test_id]])
            else:
                groups.append(f"train/{label}" if label is not None else "other")
    # Labelled examples: their cluster's colour, crosses; groups no cluster stands for: grey.
    markers = {}
    for n, name in enumerate(sorted({g for g in groups if not g.startswith("cluster ")})):
        colours[name] = group_colour.get(name[len("train/") :], GREYS[n % len(GREYS)])
        markers[name] = "X"
    caption = (
        "Every embedded slice projected to 2-D: test slices (dots) coloured by their cluster, "
        "labelled training examples (crosses) in the colour of the cluster their group was "
        "matched to (grey: no cluster stands for it)."
    )
    sections = [map_section(rows, groups, colours, caption, seed, markers)]

    # Cluster sizes and the k sweep.
    sizes = [len(members[c]) for c in names]
    uri = cluster_sizes_plot(
        [title[c][len("cluster ") :] for c in names], sizes, [colours[title[c]] for c in names]
    )
    figures = [figure(uri, "Test slices per cluster.", "cluster sizes")]
    bic = summary.get("k_auto_bic")
    if bic:
        uri = bic_plot(bic, summary.get("k_auto_silhouette"), summary.get("k"))
        caption = "k chosen by the lowest BIC; the silhouette as a check."
        figures.append(figure(uri, caption, "BIC sweep"))
    parts = ['<section id="clusters"><h2>Clusters</h2>']
    parts.append(table(["cluster", "test slices"], [(title[c], len(members[c])) for c in names]))
    parts.append('<div class="figures">' + "".join(figures) + "</div>")
    check = summary.get("train_check")
    if check:
        note = (
            "How the final model attributes the train/&lt;group&gt;/ examples it was fitted on: "
            "in sample, so optimistic; the cross-validated figures above are the honest estimate."
            if summary.get("selection")
            else "How the fitted mixture clusters the train/&lt;group&gt;/ examples (not used "
            "for the fit)."
        )
        parts.append(f'<h3>Labelled training examples</h3><p class="note">{note}</p>')
        parts.append(table(["metric", "value"], list(check.items())))
    if truth is None:
        parts.append(f'<p class="note">{NO_TRUTH}</p>')
    parts.append("</section>")
    sections.append("".join(parts))

    if truth is not None:
        metrics = evaluate_run("task2", path, truth)
        truth_table = read_table(truth, "cluster")
        groups_t = sorted(set(truth_table.values()))
        contingency = [
            [title[c], *(sum(truth_table.get(i) == g for i in members[c]) for g in groups_t)]
            for c in names
        ]
        sections.append(
            '<section id="evaluation"><h2>Evaluation against the truth</h2>'
            + table(["metric", "value"], [(n, metrics[key]) for n, key in METRIC_ROWS])
            + "<h3>Clusters against the true groups (test slices)</h3>"
            + table(["cluster (matched group)", *(f"true {g}" for g in groups_t)], contingency)
            + "</section>"
        )

    # Thumbnails per cluster.
    parts = [
        '<section id="thumbnails"><h2>Slices per cluster</h2>',
        f'<p class="note">Up to {max_items} test slices of each cluster, drawn at random '
        f"(seed {seed}).</p>",
    ]
    if rows is None:
        parts.append('<p class="note">No embeddings: no thumbnails.</p>')
    else:
        thumbs = Thumbnails(window_of(rows.metadata))
        for c in names:
            parts.append(
                f"<h3>{escape('C' + title[c][1:])} ({len(members[c])} slices, "
                f"{len(shown[c])} shown)</h3>"
            )
            cells = [thumbs.html(rows.where.get(TEST_PREFIX + i), i) for i in shown[c]]
            parts.append('<div class="grid">' + "".join(cells) + "</div>")
    parts.append("</section>")
    sections.append("".join(parts))
    return "".join(sections), rows


__all__ = ["GREYS", "NAV", "task2_body"]
