"""The task 1 page: a k sweep, a proximity run against the truth, missing files, distances."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ctfp.evaluate import evaluate_run, read_table
from ctfp.exceptions import InputError
from ctfp.index.distance import nearest
from ctfp.report import write_report
from ctfp.report.audit_md import RANDOM_WARNING
from ctfp.report.rows import Rows
from ctfp.report.task1 import DISTANCE_LABELS, nearest_generated
from ctfp.store.reader import read_embeddings

PNG = "data:image/png;base64,"


def evidence_rows(page: str) -> list[tuple[str, str, float]]:
    """(test id, nearest generated id, distance) of each evidence row, in page order."""
    section = page.split('id="evidence"')[1].split("</section>")[0]
    row = re.compile(
        r"<tr><td>\d+</td><td><figure>.*?<figcaption>([^<]*)</figcaption></figure></td>"
        r".*?<figcaption>([^<]*)</figcaption></figure></td>"
        r'<td><figure><img class="thumb" [^>]*></figure></td><td>([^<]*)</td></tr>'  # difference
    )
    return [(html.unescape(a), html.unescape(b), float(c)) for a, b, c in row.findall(section)]


def top_scores(scores_csv: Path, n: int) -> list[str]:
    lines = [line.split(",") for line in scores_csv.read_text().splitlines()[1:]]
    order = np.argsort([-float(r[1]) for r in lines], kind="stable")[:n]
    return [lines[i][0] for i in order]


def test_run_report_flag_writes_a_self_contained_task1_report(
    task1_sweep: Path, assert_self_contained: Callable[[str], None]
) -> None:
    page = (task1_sweep / "report.html").read_text()
    assert_self_contained(page)
    summary = json.loads((task1_sweep / "summary.json").read_text())
    n_test = summary["n_test"]
    for section in ("settings", "map", "scores", "k-sweep", "evidence"):
        assert f'<section id="{section}">' in page
    assert 'id="evaluation"' not in page  # no truth given: one line says how to add it
    assert "appear with <code>ctfp report RUN --truth FILE</code>" in page
    box = page.split('id="verdict"')[1].split("</section>")[0]
    assert RANDOM_WARNING in box and summary["model"]["weights_sha256"] in page
    assert "bilinear-antialias" in page  # the preprocessing, from the shard metadata
    # map + score histogram + k sweep plot, then per evidence row a test and a generated
    # thumbnail and their difference image.
    # ... and the out-of-fold score distributions of the shown k.
    assert page.count(PNG) == 4 + 3 * min(12, n_test)
    # The detail is the k chosen on the training reals (cross-validated, the smallest within
    # one paired SE of the best); the evidence rows are its highest scores, best first.
    chosen = summary["selection"]["chosen"]["params"]["k"]
    cv = {str(c["params"]["k"]): c for c in summary["selection"]["candidates"]}
    assert set(cv) == {"1", "4"} and cv[str(chosen)]["within_one_se"]
    best = max(cv, key=lambda k: cv[k]["roc_auc"])
    assert cv[best]["within_one_se"]  # the best is always tied with itself
    assert chosen == min(int(k) for k, c in cv.items() if c["within_one_se"])
    assert f"Test scores for k={chosen}" in page and "is shown in detail above" in page
    rows = evidence_rows(page)
    assert [r[0] for r in rows] == top_scores(task1_sweep / f"k{chosen}" / "scores.csv", 12)
    # The k sweep table lists each k's predicted-used count.
    sweep = page.split('id="k-sweep"')[1].split("</table>")[0]
    for k in (1, 4):
        used = summary["runs"][str(k)]["predicted_used"]
        assert f'<td class="num">{k}</td><td class="num">{used}</td>' in sweep


def test_task1_report_with_truth(
    task1_small: Path,
    task1_proximity: Path,
    assert_self_contained: Callable[[str], None],
) -> None:
    truth = task1_small / "truth.csv"
    dest = write_report(task1_proximity, task1_proximity / "r.html", truth=truth, max_items=5)
    page = dest.read_text()
    assert_self_contained(page)
    assert 'alt="ROC curve"' in page and 'alt="confusion matrix"' in page
    # map, distributions, histogram, ROC, confusion matrix, 5 evidence rows of three images.
    assert page.count(PNG) == 5 + 3 * 5 and 'id="k-sweep"' not in page
    metrics = evaluate_run("task1", task1_proximity / "run.csv", truth)
    section = page.split('id="evaluation"')[1].split("</section>")[0]
    for key in ("f1", "accuracy", "kappa", "roc_auc", "baseline_all_used_f1"):
        assert f'<td class="num">{metrics[key]:.4g}</td>' in section, key
    # The confusion counts behind the figure agree with the run file.
    labels = read_table(truth, "label")
    assert sum(v == "1" for v in labels.values()) == metrics["n_used"]

    # Evidence: each nearest generated slice and its cosine distance (the L2 distance of the
    # unit vectors, sqrt(2 - 2 cos)), against brute force; the column says which number it is.
    evidence = page.split('id="evidence"')[1].split("</section>")[0]
    assert f"<th>{html.escape(DISTANCE_LABELS['cosine'])}</th>" in evidence
    assert "A black difference image means" in evidence and "--truth FILE" not in page
    rows = evidence_rows(page)
    assert [r[0] for r in rows] == top_scores(task1_proximity / "scores.csv", 5)
    emb = read_embeddings(task1_proximity / "embeddings")
    gen = emb.labels == "generated"
    g = emb.matrix[gen].astype(np.float64)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    position = {i: n for n, i in enumerate(emb.ids)}
    for test_id, generated_id, distance in rows:
        q = emb.matrix[position["test/" + test_id]].astype(np.float64)
        cosine = g @ (q / np.linalg.norm(q))
        assert generated_id == emb.ids[gen][int(np.argmax(cosine))]
        # In float64: sqrt(2 - 2 cos) loses digits in float32 when the slices are this close.
        expected = float(np.sqrt(max(2 - 2 * cosine.max(), 0)))
        assert distance == pytest.approx(expected, rel=1e-3)


def test_nearest_generated_is_the_projects_distance() -> None:
    rng = np.random.default_rng(0)
    generated = rng.normal(size=(7, 5)).astype(np.float32)
    rows = Rows(
        generated_ids=[f"g{i}" for i in range(7)], generated_x=[generated[:3], generated[3:]]
    )
    query = rng.normal(size=(4, 5)).astype(np.float32)
    found = nearest_generated(rows, query, "cosine")
    assert found is not None
    distances, rows_found = found
    expected_d, expected_i = nearest(query, generated, "cosine", k=1)
    np.testing.assert_array_equal(rows_found, expected_i[:, 0])
    np.testing.assert_allclose(distances, expected_d[:, 0], rtol=1e-6)
    # cosine distance = L2 distance of unit vectors = sqrt(2 - 2 cos), not 1 - cos.
    unit = generated / np.linalg.norm(generated, axis=1, keepdims=True)
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(rows_found, cos.argmax(axis=1))
    np.testing.assert_allclose(distances, np.sqrt(2 - 2 * cos.max(axis=1)), rtol=1e-5, atol=1e-6)
    for metric in ("l1", "l2"):
        d, i = nearest_generated(rows, query, metric) or (None, None)
        expected_d, expected_i = nearest(query, generated, metric, k=1)
        np.testing.assert_array_equal(i, expected_i[:, 0])
        np.testing.assert_allclose(d, expected_d[:, 0], rtol=1e-6)
    assert nearest_generated(Rows(), query, "cosine") is None


def test_missing_files_and_escaping(task1_proximity: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    summary = json.loads((task1_proximity / "summary.json").read_text())
    summary["note"] = "<script>alert(1)</script>"
    # A summary without its commit fingerprints (as before 0.2): the report still names what
    # is missing. With them, read_summary names the first listed file that is gone.
    listed = summary.pop("files")
    assert "run.csv" in listed and "scores.csv" in listed
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=r"scores\.csv"):
        write_report(run)
    for name in ("run.csv", "scores.csv"):
        shutil.copy(task1_proximity / name, run / name)
    page = write_report(run).read_text()  # no embeddings: said so, no map or thumbnails
    # The score histogram only (train_scores.csv not copied: no distributions either).
    assert "has no embeddings" in page and page.count(PNG) == 1
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    with pytest.raises(InputError, match="k=3 is not one of"):
        write_report(run, k=3)
