"""The HTML report of a run: settings, embedding map, scores, metrics and thumbnails, one file."""

from __future__ import annotations

import base64
import csv
import html
import importlib.util
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.exceptions import CtfpError, InputError
from ctfp.progress import logger

PathLike = str | os.PathLike[str]
TEST_PREFIX = "test/"
# A scatter of more points says nothing more and makes the PNG heavy: the map is a sample.
MAP_POINTS = 5000
THUMB_SIDE = 112
DPI = 100
TASK1_COLOURS = {
    "used": "#d62728",
    "not_used": "#1f77b4",
    "generated": "#ff7f0e",
    "test": "#7f7f7f",
}
# Sets data-* attributes on <body> once the page has loaded; a headless browser reading the DOM
# back sees whether the script ran and whether every inlined image decoded.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
  }
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken-images", String(broken));
  document.body.setAttribute("data-rendered", "1");
});
"""
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle;
         overflow-wrap: anywhere; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
              word-break: break-all; }
.warning { background: #fff4e5; border: 1px solid #f0a020; padding: 10px 14px; margin: 12px 0; }
.note { color: #555; font-size: 14px; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 640px; }
img.plot { max-width: 100%; height: auto; }
.wide { flex: 1 1 480px; min-width: 0; }
img.thumb { display: block; width: 112px; height: auto; background: #000; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 18px; }
.grid figure figcaption { max-width: 112px; font-size: 11px; overflow-wrap: anywhere; }
.missing { width: 112px; height: 112px; background: #eee; font-size: 11px; color: #a00;
           display: flex; align-items: center; justify-content: center; text-align: center;
           overflow: hidden; }
"""


# -- reading the run ---------------------------------------------------------------------------
def load_summary(run_dir: PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a ``ctfp run`` output folder; InputError when it is not one."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"run folder {str(run)!r} does not exist")
    path = run / "summary.json"
    if not path.is_file():
        raise InputError(
            f"{str(run)!r} is not a ctfp run folder: it has no summary.json (written by "
            "`ctfp run task1|task2 DATA --out OUT`)"
        )
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(summary, dict) or summary.get("task") not in ("task1", "task2"):
        raise InputError(f"{str(path)!r} does not name a task (task1 or task2)")
    return summary


def find_shards(run_dir: PathLike, summary: dict[str, Any]) -> Path | None:
    """The run's embeddings folder (``embeddings/`` or ``embeddings-<features>/``), or None.

    With several, the one whose model identity matches the summary's.
    """
    import pyarrow.parquet as pq

    from ctfp.store.schema import SHARD_GLOB, read_metadata

    run = Path(run_dir)
    folders = [run / "embeddings", *sorted(run.glob("embeddings-*"))]
    found = [f for f in folders if f.is_dir() and any(f.glob(SHARD_GLOB))]
    if len(found) <= 1:
        return found[0] if found else None
    model = summary.get("model") or {}
    for folder in found:
        meta = read_metadata(pq.read_schema(sorted(folder.glob(SHARD_GLOB))[0])) or {}
        if all(meta.get(k) == model.get(k) for k in ("model", "weights_sha256")):
            return folder
    return found[0]


@dataclass
class _Rows:
    """What the report needs from the shards, gathered in one streamed pass."""

    metadata: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0
    map_ids: list[str] = field(default_factory=list)
    map_labels: list[str | None] = field(default_factory=list)
    map_x: list[np.ndarray] = field(default_factory=list)
    generated_ids: list[str] = field(default_factory=list)
    generated_where: list[tuple[str, int]] = field(default_factory=list)
    generated_x: list[np.ndarray] = field(default_factory=list)
    where: dict[str, tuple[str, int]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def map_matrix(self) -> np.ndarray:
        return np.concatenate(self.map_x) if self.map_x else np.zeros((0, 0), np.float32)

    def generated_matrix(self) -> np.ndarray:
        return np.concatenate(self.generated_x) if self.generated_x else np.zeros((0, 0))


def _read_rows(
    folder: Path, wanted: set[str], *, generated: bool, vectors: bool, seed: int
) -> _Rows:
    """Stream the shards once: a random sample for the map, the generated rows (for the nearest
    neighbour search) and the source, frame and (``vectors``) embedding of the ``wanted`` ids."""

    from ctfp.store.reader import count_rows, iter_embeddings, shard_paths

    files = shard_paths(folder)
    total = count_rows(files)
    keep = min(1.0, MAP_POINTS / max(total, 1))
    rng = np.random.default_rng(seed)
    rows = _Rows(n_rows=total)
    for batch in iter_embeddings(files):
        rows.metadata = batch.metadata
        ids = batch.ids.tolist()
        sources = batch.table.column("source").to_pylist()
        frames = batch.table.column("frame").to_pylist()
        labels = batch.labels.tolist()
        sample = np.flatnonzero(rng.random(len(ids)) < keep)
        rows.map_ids += [ids[i] for i in sample]
        rows.map_labels += [labels[i] for i in sample]
        rows.map_x.append(batch.matrix[sample])
        if generated:
            g = np.flatnonzero(np.asarray([lab == "generated" for lab in labels], dtype=bool))
            rows.generated_ids += [ids[i] for i in g]
            rows.generated_where += [(sources[i], frames[i]) for i in g]
            rows.generated_x.append(batch.matrix[g])
        for i, row_id in enumerate(ids):
            if row_id in wanted:
                rows.where[row_id] = (sources[i], frames[i])
                if vectors:
                    rows.vectors[row_id] = batch.matrix[i].copy()
    return rows


def _read_scores(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``scores.csv`` (``id,score,label``) as ids, (n,) float scores, (n,) int predictions."""
    if not path.is_file():
        raise InputError(f"the run has no {str(path)!r} (written by `ctfp run task1`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "score", "label"} <= set(reader.fieldnames):
            raise InputError(f"{str(path)!r} is not a scores file with columns id,score,label")
        rows = list(reader)
    ids = [r["id"] for r in rows]
    scores = np.array([float(r["score"]) for r in rows], dtype=float)
    pred = np.array([int(r["label"]) for r in rows], dtype=int)
    return ids, scores, pred


# -- HTML pieces -------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A value as short text: floats to 4 significant digits, also inside dicts and lists."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = cell if raw and isinstance(cell, str) else _e(_fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_html(fig: Any, caption: str, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    uri = _png_uri(buf.getvalue())
    return (
        f'<figure><img class="plot" src="{uri}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _new_figure(width: float = 6.4, height: float = 4.0) -> Any:
    # Figure without pyplot: no global backend switch, nothing left open; savefig renders with Agg.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _window_of(metadata: dict[str, Any]) -> Any:
    """The decoding window the shards were embedded with."""
    from ctfp.io.decode import Window

    return Window.from_description(str((metadata.get("decode") or {}).get("window", "auto")))


class _Thumbnails:
    """Slices decoded from their source files, shrunk to PNG thumbnails; the last few files are
    kept decoded, since a volume gives many slices."""

    def __init__(self, window: Any, side: int = THUMB_SIDE, keep: int = 4) -> None:
        self.window = window
        self.side = side
        self.keep = keep
        self._frames: dict[str, np.ndarray] = {}

    def _decode(self, source: str) -> np.ndarray:
        from ctfp.io.decode import decode_file

        if source not in self._frames:
            if len(self._frames) >= self.keep:
                self._frames.pop(next(iter(self._frames)))
            self._frames[source] = decode_file(source, self.window)
        return self._frames[source]

    def html(self, where: tuple[str, int] | None, caption: str, title: str = "") -> str:
        """A ``<figure>`` with the thumbnail, or a grey box saying why there is none."""
        from PIL import Image

        tip = _e(title or caption)
        cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        if where is None:
            return (
                f'<figure><div class="missing" title="{tip}">no embedding row</div>{cap}</figure>'
            )
        source, frame = where
        try:
            frames = self._decode(source)
            if not 0 <= frame < len(frames):
                raise InputError(f"it has {len(frames)} frames, not frame {frame}")
            img = Image.fromarray(frames[frame])
        except (CtfpError, OSError) as exc:
            why = _e(f"cannot show frame {frame} of {source}: {exc}")
            return (
                f'<figure><div class="missing" title="{why}">source not readable</div>{cap}'
                "</figure>"
            )
        img.thumbnail((self.side, self.side))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        uri = _png_uri(buf.getvalue())
        return f'<figure><img class="thumb" src="{uri}" alt="{tip}" title="{tip}">{cap}</figure>'


# -- sections shared by both tasks ------------------------------------------------------------
def _settings_section(
    run: Path, summary: dict[str, Any], rows: _Rows | None, shards: Path | None
) -> str:
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
            f"({_e(weights)}): its embeddings carry no learned features, so these results only "
            "show that the pipeline runs. They are meaningless for auditing a real generator.</div>"
        )
    if shards is None:
        parts.append(
            '<div class="warning">The run folder has no embeddings (embeddings/part-*.parquet): '
            "the map and the thumbnails are left out.</div>"
        )
    skip = {"model", "runs"}
    settings = [(k, v) for k, v in summary.items() if k not in skip]
    parts.append('<div class="figures"><div><h3>Settings (summary.json)</h3>')
    parts.append(_table(["setting", "value"], [(k, _fmt(v)) for k, v in settings]))
    parts.append('</div><div class="wide"><h3>Model identity (shard metadata)</h3>')
    parts.append(_table(["field", "value"], [(k, _fmt(v)) for k, v in identity.items()]))
    parts.append("</div></div>")
    parts.append(f'<p class="note">Run folder: <code>{_e(run.resolve())}</code></p></section>')
    return "".join(parts)


def _projections(x: np.ndarray, seed: int) -> list[tuple[str, np.ndarray]]:
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


def _map_section(
    rows: _Rows | None, groups: list[str], colour_of: dict[str, str], caption: str, seed: int
) -> str:
    """Scatter of the 2-D projections; ``groups[i]`` names the colour group of map row i."""
    parts = ['<section id="map"><h2>Map of the embeddings</h2>']
    if rows is None or not rows.map_ids:
        return parts[0] + '<p class="note">No embeddings to draw.</p></section>'
    projections = _projections(rows.map_matrix(), seed)
    if not projections:
        return parts[0] + '<p class="note">Too few embeddings to project.</p></section>'
    sampled = len(rows.map_ids) < rows.n_rows
    note = f" A random sample of {len(rows.map_ids)} of {rows.n_rows} rows." if sampled else ""
    figures = []
    present = set(groups)
    names = [n for n in colour_of if n in present]  # legend in the colours' order
    for title, xy in projections:
        fig = _new_figure(6.4, 5.2)
        ax = fig.subplots()
        g = np.asarray(groups, dtype=object)
        for name in names:
            m = g == name
            ax.scatter(
                xy[m, 0], xy[m, 1], s=12, alpha=0.75, c=colour_of[name], label=f"{name} ({m.sum()})"
            )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, loc="best", markerscale=1.5)
        figures.append(_figure_html(fig, caption + note, f"{title} map of the embeddings"))
    parts.append('<div class="figures">' + "".join(figures) + "</div></section>")
    return "".join(parts)


# -- task 1 ------------------------------------------------------------------------------------
def _task1_paths(run: Path, ks: list[int], k: int) -> tuple[Path, Path]:
    dest = run if len(ks) == 1 else run / f"k{k}"
    return dest / "run.csv", dest / "scores.csv"


def _score_histogram(
    scores: np.ndarray,
    split: np.ndarray,
    names: tuple[str, str],
    threshold: float | None,
) -> Any:
    fig = _new_figure()
    ax = fig.subplots()
    bins = np.histogram_bin_edges(scores, bins=min(40, max(10, len(scores) // 4)))
    for value, name, colour in ((0, names[0], "#1f77b4"), (1, names[1], "#d62728")):
        part = scores[split == value]
        ax.hist(part, bins=bins, alpha=0.6, color=colour, label=f"{name} ({len(part)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("score (higher = more likely used)")
    ax.set_ylabel("test slices")
    ax.legend(fontsize=8)
    return fig


def _roc_figure(y: np.ndarray, scores: np.ndarray, auc: float | None) -> Any:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    fig = _new_figure(4.6, 4.2)
    ax = fig.subplots()
    ax.plot(fpr, tpr, color="#d62728", label=f"ROC (AUC {auc:.3f})" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _confusion_figure(y: np.ndarray, pred: np.ndarray) -> Any:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=[0, 1])
    fig = _new_figure(4.2, 3.8)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        colour = "white" if count > cm.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=14)
    ticks = ["not used (0)", "used (1)"]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    return fig


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


def _nearest_generated(
    rows: _Rows, query: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Distance to and row of the nearest generated slice of each ``query`` : (n, d) row.

    An exact FAISS flat index on the CPU (FAISS directly rather than ``FlatIndex``, whose device
    handling imports torch: seconds a report does not need).
    """
    import faiss

    g = np.ascontiguousarray(rows.generated_matrix(), dtype=np.float32)
    if len(g) == 0 or len(query) == 0:
        return None
    q = np.ascontiguousarray(query, dtype=np.float32)
    if metric == "cosine":
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    kind = {"cosine": faiss.METRIC_INNER_PRODUCT, "l1": faiss.METRIC_L1, "l2": faiss.METRIC_L2}
    index = faiss.IndexFlat(g.shape[1], kind[metric])
    index.add(g)
    D, I = index.search(q, 1)  # noqa: E741 - FAISS's names
    if metric == "cosine":
        return 1.0 - D[:, 0], I[:, 0]
    return (np.sqrt(np.maximum(D[:, 0], 0)) if metric == "l2" else D[:, 0]), I[:, 0]


def _task1_report(
    run: Path,
    summary: dict[str, Any],
    shards: Path | None,
    truth: PathLike | None,
    k: int | None,
    max_items: int,
    seed: int,
) -> tuple[str, _Rows | None]:
    from ctfp.evaluate import evaluate_run, read_table

    ks = [int(v) for v in summary.get("k") or []]
    if not ks:
        raise InputError("summary.json lists no k for this task1 run")
    if k is None:
        k = ks[0]
    elif k not in ks:
        raise InputError(f"k={k} is not one of this run's k: {', '.join(map(str, ks))}")
    run_csv, scores_csv = _task1_paths(run, ks, k)
    ids, scores, pred = _read_scores(scores_csv)
    run_info = (summary.get("runs") or {}).get(str(k)) or {}
    threshold = run_info.get("threshold")
    method = summary.get("method", "centroid")
    metric = summary.get("metric") if method != "centroid" else "cosine"
    metric = metric if metric in ("cosine", "l1", "l2") else "cosine"

    order = np.argsort(-scores, kind="stable")[:max_items]
    top = [ids[i] for i in order]
    rows = None
    if shards is not None:
        rows = _read_rows(
            shards, {TEST_PREFIX + i for i in top}, generated=True, vectors=True, seed=seed
        )

    truth_table = None
    metrics = None
    y = None
    if truth is not None:
        metrics = evaluate_run("task1", run_csv, truth, scores_csv)
        truth_table = read_table(truth, "label")
        y = np.array([int(truth_table[i]) for i in ids], dtype=int)

    sections = []
    # The map: train used / not used, generated and test rows.
    groups = []
    if rows is not None:
        groups = [
            "test" if i.startswith(TEST_PREFIX) or label not in TASK1_COLOURS else label
            for i, label in zip(rows.map_ids, rows.map_labels, strict=True)
        ]
    sections.append(
        _map_section(
            rows,
            groups,
            TASK1_COLOURS,
            "Every embedded slice projected to 2-D, coloured by its folder: train/used, "
            "train/not_used, generated and test.",
            seed,
        )
    )

    # Scores.
    chosen = f" for k={k}" if len(ks) > 1 else ""
    parts = [f'<section id="scores"><h2>Test scores{_e(chosen)}</h2>']
    if y is not None:
        fig = _score_histogram(scores, y, ("truly not used", "truly used"), threshold)
        split = "by the truth"
    else:
        fig = _score_histogram(scores, pred, ("predicted not used", "predicted used"), threshold)
        split = "by the predicted label"
    caption = (
        f"Scores of the {len(ids)} test slices ({method}), split {split}; the dashed line is the "
        f"threshold chosen on the training slices ({summary.get('calibrate', '-')}). The run does "
        "not store the training slices' scores."
    )
    parts.append(_figure_html(fig, caption, "histogram of the test scores"))
    parts.append(
        f'<p class="note">{int(pred.sum())} of {len(ids)} test slices predicted used.</p></section>'
    )
    sections.append("".join(parts))

    # Evaluation against the truth.
    if metrics is not None and y is not None:
        parts = ['<section id="evaluation"><h2>Evaluation against the truth</h2>']
        parts.append(
            '<p class="note">F1 alone flatters: labelling every slice "used" scores the baseline '
            "below. Read it with accuracy, kappa and ROC-AUC.</p>"
        )
        parts.append(_table(["metric", "value"], [(n, metrics.get(key)) for n, key in METRIC_ROWS]))
        figures = []
        if len(np.unique(y)) == 2:
            figures.append(
                _figure_html(
                    _roc_figure(y, scores, metrics.get("roc_auc")),
                    "ROC curve of the test scores against the truth.",
                    "ROC curve",
                )
            )
        else:
            parts.append('<p class="note">The truth has one class only: no ROC curve.</p>')
        figures.append(
            _figure_html(
                _confusion_figure(y, pred), "Confusion matrix of the run file.", "confusion matrix"
            )
        )
        parts.append('<div class="figures">' + "".join(figures) + "</div></section>")
        sections.append("".join(parts))

    # The k sweep.
    if len(ks) > 1:
        sections.append(_k_sweep_section(run, summary, ks, truth))

    # Evidence: highest scores next to their nearest generated slice.
    sections.append(
        _evidence_section(rows, top, scores[order], pred[order], truth_table, metric, max_items)
    )
    return "".join(sections), rows


def _k_sweep_section(
    run: Path, summary: dict[str, Any], ks: list[int], truth: PathLike | None
) -> str:
    from ctfp.evaluate import evaluate_run

    runs = summary.get("runs") or {}
    header = ["k", "predicted used", "threshold"]
    if truth is not None:
        header += ["F1", "accuracy", "kappa", "ROC-AUC", "baseline F1"]
    table = []
    series: dict[str, list[float]] = {"F1": [], "kappa": [], "ROC-AUC": []}
    used = []
    baseline = None
    for kk in ks:
        info = runs.get(str(kk)) or {}
        row: list[Any] = [kk, info.get("predicted_used"), info.get("threshold")]
        used.append(info.get("predicted_used"))
        if truth is not None:
            run_csv, scores_csv = _task1_paths(run, ks, kk)
            m = evaluate_run("task1", run_csv, truth, scores_csv)
            row += [m["f1"], m["accuracy"], m["kappa"], m["roc_auc"], m["baseline_all_used_f1"]]
            baseline = m["baseline_all_used_f1"]
            series["F1"].append(m["f1"])
            series["kappa"].append(m["kappa"])
            series["ROC-AUC"].append(np.nan if m["roc_auc"] is None else m["roc_auc"])
        table.append(row)
    fig = _new_figure(6.4, 3.8)
    ax = fig.subplots()
    if truth is not None:
        for name, values in series.items():
            ax.plot(ks, values, marker="o", label=name)
        ax.axhline(baseline, color="#999", linestyle=":", label="baseline F1")
        ax.set_ylabel("metric on the test truth")
        caption = "Metrics of each k against the truth."
    else:
        ax.plot(ks, [np.nan if u is None else u for u in used], marker="o", label="predicted used")
        ax.set_ylabel("test slices predicted used")
        caption = "Test slices predicted used for each k."
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(kk) for kk in ks])
    ax.set_xlabel("k (clusters per class)")
    ax.legend(fontsize=8)
    return (
        '<section id="k-sweep"><h2>k sweep</h2>'
        + _table(header, table)
        + _figure_html(fig, caption, "k sweep plot")
        + "</section>"
    )


def _evidence_section(
    rows: _Rows | None,
    top: list[str],
    top_scores: np.ndarray,
    top_pred: np.ndarray,
    truth: dict[str, str] | None,
    metric: str,
    max_items: int,
) -> str:
    parts = [
        '<section id="evidence"><h2>Evidence: the highest-scoring test slices</h2>',
        f'<p class="note">The {len(top)} test slices the run rates most likely used (at most '
        f"{max_items}), each next to its nearest generated slice by {_e(metric)} distance "
        "(exact FAISS search over every generated embedding of the run).</p>",
    ]
    if rows is None:
        return "".join(parts) + '<p class="note">No embeddings: no thumbnails.</p></section>'
    thumbs = _Thumbnails(_window_of(rows.metadata))
    keys = [TEST_PREFIX + i for i in top]
    have = [key for key in keys if key in rows.vectors]
    nearest = None
    if have:
        nearest = _nearest_generated(rows, np.stack([rows.vectors[key] for key in have]), metric)
    if nearest is None:
        parts.append('<p class="note">The run has no generated slices to compare with.</p>')
    found = {key: n for n, key in enumerate(have)}
    header = ["rank", "test slice", "score", "predicted"]
    header += ["truth"] if truth is not None else []
    header += ["nearest generated slice", f"{metric} distance"]
    table = []
    for rank, (run_id, key) in enumerate(zip(top, keys, strict=True)):
        cells: list[Any] = [
            str(rank + 1),
            thumbs.html(rows.where.get(key), run_id),
            _e(f"{top_scores[rank]:.4g}"),
            "used" if top_pred[rank] else "not used",
        ]
        if truth is not None:
            t = truth.get(run_id)
            cells.append("-" if t is None else ("used" if t == "1" else "not used"))
        if nearest is not None and key in found:
            j = int(nearest[1][found[key]])
            gid = rows.generated_ids[j]
            cells.append(thumbs.html(rows.generated_where[j], gid))
            cells.append(_e(f"{float(nearest[0][found[key]]):.4g}"))
        else:
            cells += ["-", "-"]
        table.append(cells)
    parts.append(_table(header, table, raw=True))
    return "".join(parts) + "</section>"


# -- task 2 ------------------------------------------------------------------------------------
def _cluster_colours(clusters: Sequence[int]) -> dict[str, str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if len(clusters) <= 10 else "tab20"]
    return {f"cluster {c}": to_hex(cmap(n % cmap.N)) for n, c in enumerate(clusters)}


def _task2_report(
    run: Path,
    summary: dict[str, Any],
    shards: Path | None,
    truth: PathLike | None,
    max_items: int,
    seed: int,
) -> tuple[str, _Rows | None]:
    from ctfp.evaluate import evaluate_run, read_run, read_table

    path = run / "clusters.csv"
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
    rows = None
    if shards is not None:
        rows = _read_rows(shards, wanted, generated=False, vectors=False, seed=seed)
    sections = []

    colours = _cluster_colours(names)
    groups: list[str] = []
    if rows is not None:
        for row_id, label in zip(rows.map_ids, rows.map_labels, strict=True):
            test_id = row_id[len(TEST_PREFIX) :] if row_id.startswith(TEST_PREFIX) else None
            if test_id is not None and test_id in clusters:
                groups.append(f"cluster {clusters[test_id]}")
            else:
                groups.append(f"train: {label}" if label is not None else "other")
    grey = ["#444444", "#888888", "#bbbbbb", "#222222", "#666666", "#aaaaaa"]
    for n, name in enumerate(sorted({g for g in groups if not g.startswith("cluster ")})):
        colours[name] = grey[n % len(grey)]
    sections.append(
        _map_section(
            rows,
            groups,
            colours,
            "Every embedded slice projected to 2-D: test slices coloured by their cluster, "
            "labelled training examples in grey.",
            seed,
        )
    )

    # Cluster sizes and the k sweep.
    sizes = [len(members[c]) for c in names]
    fig = _new_figure(5.0, 3.4)
    ax = fig.subplots()
    ax.bar([str(c) for c in names], sizes, color=[colours[f"cluster {c}"] for c in names])
    ax.set_xlabel("cluster")
    ax.set_ylabel("test slices")
    figures = [_figure_html(fig, "Test slices per cluster.", "cluster sizes")]
    bic = summary.get("k_auto_bic")
    silhouette = summary.get("k_auto_silhouette")
    if bic:
        figures.append(_bic_figure(bic, silhouette, summary.get("k")))
    parts = ['<section id="clusters"><h2>Clusters</h2>']
    parts.append(_table(["cluster", "test slices"], list(zip(names, sizes, strict=True))))
    parts.append('<div class="figures">' + "".join(figures) + "</div>")
    check = summary.get("train_check")
    if check:
        parts.append(
            '<h3>Labelled training examples</h3><p class="note">How the fitted mixture clusters '
            "the train/&lt;group&gt;/ examples (they were not used for the fit unless "
            "semi-supervised).</p>"
        )
        parts.append(_table(["metric", "value"], list(check.items())))
    parts.append("</section>")
    sections.append("".join(parts))

    if truth is not None:
        metrics = evaluate_run("task2", path, truth)
        table = read_table(truth, "cluster")
        groups_t = sorted(set(table.values()))
        contingency = [
            [f"cluster {c}", *(sum(table.get(i) == g for i in members[c]) for g in groups_t)]
            for c in names
        ]
        sections.append(
            '<section id="evaluation"><h2>Evaluation against the truth</h2>'
            + _table(
                ["metric", "value"],
                [
                    ("adjusted Rand index", metrics["ari"]),
                    ("normalised mutual information", metrics["nmi"]),
                    ("clusters", metrics["n_clusters"]),
                    ("true groups", metrics["n_groups"]),
                    ("test slices", metrics["n"]),
                ],
            )
            + "<h3>Clusters against the true groups (test slices)</h3>"
            + _table(["", *(f"group {g}" for g in groups_t)], contingency)
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
        thumbs = _Thumbnails(_window_of(rows.metadata), side=THUMB_SIDE)
        for c in names:
            parts.append(
                f"<h3>Cluster {_e(c)} ({len(members[c])} slices, {len(shown[c])} shown)</h3>"
            )
            cells = [thumbs.html(rows.where.get(TEST_PREFIX + i), i) for i in shown[c]]
            parts.append('<div class="grid">' + "".join(cells) + "</div>")
    parts.append("</section>")
    sections.append("".join(parts))
    return "".join(sections), rows


def _bic_figure(bic: dict[str, float], silhouette: dict[str, float] | None, chosen: Any) -> str:
    ks = sorted(int(k) for k in bic)
    fig = _new_figure(5.8, 3.4)
    ax = fig.subplots()
    ax.plot(ks, [bic[str(k)] for k in ks], marker="o", color="#1f77b4", label="BIC")
    ax.set_xlabel("components k")
    ax.set_ylabel("BIC (lower is better)", color="#1f77b4")
    if isinstance(chosen, int):
        ax.axvline(chosen, color="k", linestyle="--", label=f"chosen k={chosen}")
    lines, labels = ax.get_legend_handles_labels()
    if silhouette:
        ax2 = ax.twinx()
        ax2.plot(
            ks,
            [silhouette.get(str(k), np.nan) for k in ks],
            marker="s",
            color="#2ca02c",
            label="silhouette",
        )
        ax2.set_ylabel("silhouette (higher is better)", color="#2ca02c")
        more = ax2.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.set_xticks(ks)
    fig.legend(lines, labels, fontsize=8, loc="outside upper center", ncol=len(lines))
    return _figure_html(fig, "k chosen by the lowest BIC; the silhouette as a check.", "BIC sweep")


# -- the report --------------------------------------------------------------------------------
def write_report(
    run_dir: PathLike,
    out_html: PathLike | None = None,
    *,
    truth: PathLike | None = None,
    max_items: int = 12,
    k: int | None = None,
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML report of a ``ctfp run`` output folder.

    Every figure and thumbnail is inlined as a base64 PNG; the page loads nothing else. It shows
    the run's settings and model identity, a 2-D map of the embeddings and, for task 1, the test
    score histogram with the threshold, the highest-scoring test slices next to their nearest
    generated slice and the k sweep; for task 2, the cluster sizes, the BIC/silhouette sweep and
    thumbnails per cluster. With ``truth`` (the CSV ``ctfp evaluate`` takes) it adds the
    metrics, and for task 1 the ROC curve and the confusion matrix.

    Parameters
    ----------
    run_dir
        The ``--out`` folder of ``ctfp run task1|task2``.
    out_html
        Where to write; default ``run_dir/report.html``.
    truth
        ``id,label`` (task 1) or ``id,cluster`` (task 2) CSV.
    max_items
        Evidence rows (task 1) or thumbnails per cluster (task 2).
    k
        Task 1 with a k sweep: the k shown in detail (default: the first).
    seed
        Seed of the random samples (map points, thumbnails per cluster).

    Raises
    ------
    InputError
        ``run_dir`` is not a run folder (no summary.json), a run file is missing, or the truth
        does not cover the run's ids.
    """
    if max_items < 1:
        raise InputError(f"max_items must be positive, got {max_items}")
    run = Path(run_dir)
    summary = load_summary(run)
    task = summary["task"]
    if task == "task2" and k is not None:
        raise InputError("k chooses one k of a task 1 k sweep; this is a task2 run")
    shards = find_shards(run, summary)
    if task == "task1":
        body, rows = _task1_report(run, summary, shards, truth, k, max_items, seed)
        nav = ["settings", "map", "scores", "evaluation", "k-sweep", "evidence"]
    else:
        body, rows = _task2_report(run, summary, shards, truth, max_items, seed)
        nav = ["settings", "map", "clusters", "evaluation", "thumbnails"]
    body = _settings_section(run, summary, rows, shards) + body
    links = " ".join(f'<a href="#{n}">{_e(n)}</a>' for n in nav if f'id="{n}"' in body)
    title = f"ctfp {task} report: {run.resolve().name}"
    page = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head>\n"
        f'<body data-task="{_e(task)}"><h1>{_e(title)}</h1><nav>{links}</nav>\n'
        f"{body}\n"
        f'<p class="note">Written by ctfp {_e(_version())}.</p>'
        f"<script>{CHECK_SCRIPT}</script></body></html>\n"
    )
    dest = Path(out_html) if out_html is not None else run / "report.html"
    from ctfp.store.writer import write_text_atomic

    write_text_atomic(dest, page)
    logger.info(f"report -> {dest}")
    return dest


def _version() -> str:
    from ctfp._version import __version__

    return __version__
