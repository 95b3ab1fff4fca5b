"""The report's matplotlib figures, each rendered to an inlined PNG data URI."""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctfp.report.html import png_uri

DPI = 100

#: The report's one palette: Okabe & Ito's eight colours (blue, orange, bluish green, reddish
#: purple, sky blue, vermillion, yellow, black), distinguishable with the common colour-vision
#: deficiencies (Wong, "Points of view: Color blindness", Nature Methods 2011).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: Markers that tell groups apart where colours repeat (more than eight groups).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Task 1's groups, the same colour in every figure of a report.
MEMBER, NON_MEMBER, GENERATED, TEST = PALETTE[5], PALETTE[0], PALETTE[3], "#777777"


def new_figure(width: float = 6.4, height: float = 4.0) -> tuple[Any, Any]:
    """A matplotlib ``Figure`` (no pyplot: no global state) with a constrained layout, and its
    one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def check_labels(fig: Any) -> None:
    """Raise a ValueError naming (by its title) an axes of ``fig`` without an x or y label: no
    figure of a report reads as bare numbers."""
    for ax in fig.get_axes():
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        twin = [o for o in fig.get_axes() if o is not ax and o.bbox.bounds == ax.bbox.bounds]
        x = ax.get_xlabel() or any(o.get_xlabel() for o in twin)
        y = ax.get_ylabel() or any(o.get_ylabel() for o in twin)
        if not (x and y):
            raise ValueError(
                f"report figure {ax.get_title() or '(untitled)'!r} has an axes without "
                f"{'an x' if not x else 'a y'} label"
            )


def to_uri(fig: Any) -> str:
    """``fig`` rendered as a PNG data URI (after :func:`check_labels`)."""
    check_labels(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return png_uri(buf.getvalue())


def _score_plot(
    size: tuple[float, float],
    groups: Sequence[tuple[np.ndarray, str, str, str]],
    bins: np.ndarray,
    threshold: float | None,
    line: str,
    labels: tuple[str, str],
    **style: Any,
) -> str:
    """Histograms of the ``(scores, name, colour, linestyle)`` groups over one set of ``bins``,
    with the threshold as a black ``line``."""
    fig, ax = new_figure(*size)
    for part, name, colour, linestyle in groups:
        label = f"{name} ({len(part)})"
        ax.hist(part, bins=bins, color=colour, linestyle=linestyle, label=label, **style)
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle=line, label=f"threshold {threshold:.4g}")
    ax.set(xlabel=labels[0], ylabel=labels[1])
    ax.legend(fontsize=8)
    return to_uri(fig)


def score_histogram(
    scores: np.ndarray, split: np.ndarray, names: tuple[str, str], threshold: float | None
) -> str:
    """Histogram of ``scores``, split by ``split`` (0 = ``names[0]``, 1 = ``names[1]``), with the
    threshold as a dashed line."""
    groups = [(scores[split == v], names[v], c, "-") for v, c in ((0, NON_MEMBER), (1, MEMBER))]
    bins = np.histogram_bin_edges(scores, bins=min(40, max(10, len(scores) // 4)))
    labels = ("score (higher = more likely used)", "test slices")
    return _score_plot((6.4, 4.0), groups, bins, threshold, "--", labels, alpha=0.6)


def score_distributions(
    test: np.ndarray, members: np.ndarray, non_members: np.ndarray, threshold: float | None
) -> str:
    """The chosen score of the known members, the known non-members (both out of fold) and
    the test slices, as overlaid outlines of their densities, with the threshold."""
    groups = [
        (non_members, "known non-members (train/not_used)", NON_MEMBER, "-"),
        (members, "known members (train/used)", MEMBER, "-"),
        (test, "test slices", TEST, "--"),
    ]
    everything = np.concatenate([test, members, non_members])
    bins = np.histogram_bin_edges(everything, bins=min(40, max(10, len(everything) // 6)))
    labels = (
        "score of the chosen scorer (higher = more likely used)",
        "density (each group sums to 1)",
    )
    style = {"density": True, "histtype": "step", "linewidth": 2}
    groups = [g for g in groups if len(g[0])]
    return _score_plot((6.8, 4.0), groups, bins, threshold, ":", labels, **style)


def roc_plot(y: np.ndarray, scores: np.ndarray, auc: float | None) -> str:
    """ROC curve of ``scores`` against the 0/1 truth ``y``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = new_figure(4.6, 4.2)
    ax.plot(fpr, tpr, color=MEMBER, label=f"ROC (AUC {auc:.3f})" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return to_uri(fig)


def confusion_plot(y: np.ndarray, pred: np.ndarray) -> str:
    """The 2x2 confusion matrix of the predictions ``pred`` against the truth ``y``."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=[0, 1])
    fig, ax = new_figure(4.2, 3.8)
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        colour = "white" if count > cm.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=14)
    ticks = ["not used (0)", "used (1)"]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks)
    ax.set(xlabel="predicted", ylabel="truth")
    return to_uri(fig)


def k_sweep_plot(
    ks: Sequence[int],
    used: Sequence[int | None],
    series: Mapping[str, Sequence[float]] | None = None,
    baseline: float | None = None,
) -> str:
    """Each k's metrics (``series``, with the baseline F1) or, without a truth, each k's count
    of test slices predicted used."""
    fig, ax = new_figure(6.4, 3.8)
    if series is not None:
        for name, values in series.items():
            ax.plot(ks, values, marker="o", label=name)
        ax.axhline(baseline, color="#999", linestyle=":", label="baseline F1")
        ax.set_ylabel("metric on the test truth")
    else:
        ax.plot(ks, [np.nan if u is None else u for u in used], marker="o", label="predicted used")
        ax.set_ylabel("test slices predicted used")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(kk) for kk in ks])
    ax.set_xlabel("k (clusters per class)")
    ax.legend(fontsize=8)
    return to_uri(fig)


def cluster_sizes_plot(names: Sequence[Any], sizes: Sequence[int], colours: Sequence[str]) -> str:
    """Bar chart of the test slices per cluster."""
    fig, ax = new_figure(5.0, 3.4)
    ax.bar([str(c) for c in names], sizes, color=list(colours))
    ax.set(xlabel="cluster", ylabel="test slices")
    return to_uri(fig)


def bic_plot(bic: dict[str, float], silhouette: dict[str, float] | None, chosen: Any) -> str:
    """The BIC of each k tried (keys are k as text), the chosen k and the silhouette."""
    ks = sorted(int(k) for k in bic)
    fig, ax = new_figure(5.8, 3.4)
    ax.plot(ks, [bic[str(k)] for k in ks], marker="o", color=PALETTE[0], label="BIC")
    ax.set_xlabel("components k")
    ax.set_ylabel("BIC (lower is better)", color=PALETTE[0])
    if isinstance(chosen, int):
        ax.axvline(chosen, color="k", linestyle="--", label=f"chosen k={chosen}")
    lines, labels = ax.get_legend_handles_labels()
    if silhouette:
        ax2 = ax.twinx()
        values = [silhouette.get(str(k), np.nan) for k in ks]
        ax2.plot(ks, values, marker="s", color=PALETTE[2], label="silhouette")
        ax2.set_ylabel("silhouette (higher is better)", color=PALETTE[2])
        more = ax2.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.set_xticks(ks)
    fig.legend(lines, labels, fontsize=8, loc="outside upper center", ncol=len(lines))
    return to_uri(fig)


def projections(x: np.ndarray, seed: int) -> list[tuple[str, np.ndarray]]:
    """2-D projections of ``x`` : (n, d): PCA, and UMAP when the ``umap`` package is installed."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    if len(x) < 3 or x.shape[1] < 2:
        return []
    pca = PCA(n_components=2, random_state=seed).fit(x)
    shown = pca.explained_variance_ratio_.sum()
    out = [(f"PCA ({shown:.0%} of the variance)", pca.transform(x))]
    if importlib.util.find_spec("umap") is not None and len(x) > 16:
        import umap  # optional; not a dependency

        out.append(("UMAP", umap.UMAP(random_state=seed).fit_transform(x)))
    return out


def map_plot(
    xy: np.ndarray,
    groups: Sequence[str],
    colour_of: Mapping[str, str],
    title: str,
    marker_of: Mapping[str, str] | None = None,
) -> str:
    """Scatter of the 2-D points ``xy``, coloured by their group (legend in ``colour_of``'s
    order). The largest group is drawn first, so that a few points are never hidden under
    many; dense groups are translucent; groups whose colour repeats, or in ``marker_of``, get
    another marker. ``title`` (a projection's name) names the axes too."""
    axis = "UMAP dimension" if title.startswith("UMAP") else "principal component"
    fig, ax = new_figure(6.4, 5.2)
    g = np.asarray(groups, dtype=object)
    present = [n for n in colour_of if n in set(groups)]
    sizes = {n: int((g == n).sum()) for n in present}
    handles = {}
    for z, name in enumerate(sorted(present, key=lambda n: -sizes[n])):  # stable: ties in order
        m = g == name
        handles[name] = ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=14,
            alpha=0.85 if sizes[name] <= 200 else 0.45,
            c=colour_of[name],
            marker=(marker_of or {}).get(
                name, MARKERS[(present.index(name) // len(PALETTE)) % len(MARKERS)]
            ),
            edgecolors="white",
            linewidths=0.3,
            label=f"{name} ({sizes[name]})",
            zorder=2 + z,
        )
    ax.set(title=title, xlabel=f"{axis} 1 (arbitrary units)", ylabel=f"{axis} 2 (arbitrary units)")
    ax.set(xticks=[], yticks=[])
    shown = [handles[n] for n in present]
    ax.legend(shown, [h.get_label() for h in shown], fontsize=8, loc="best", markerscale=1.5)
    return to_uri(fig)


__all__ = [
    "DPI",
    "GENERATED",
    "MARKERS",
    "MEMBER",
    "NON_MEMBER",
    "PALETTE",
    "TEST",
    "bic_plot",
    "check_labels",
    "cluster_sizes_plot",
    "confusion_plot",
    "k_sweep_plot",
    "map_plot",
    "new_figure",
    "projections",
    "roc_plot",
    "score_distributions",
    "score_histogram",
    "to_uri",
]
