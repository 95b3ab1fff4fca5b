"""The task 2 page, written through `ctfp report` with the truth."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ctfp.cli import main
from ctfp.evaluate import evaluate_run

PNG = "data:image/png;base64,"


def test_task2_report_through_the_cli(
    task2_data: Path,
    task2_auto: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    assert_self_contained: Callable[[str], None],
) -> None:
    dest = tmp_path / "sub" / "t2.html"
    truth = task2_data / "truth.csv"
    args = ["report", str(task2_auto), "--out", str(dest), "--truth", str(truth)]
    assert main([*args, "--max-items", "3", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(dest) and printed["bytes"] == dest.stat().st_size
    page = dest.read_text()
    assert_self_contained(page)
    assert '<body data-task="task2">' in page
    for section in ("settings", "map", "clusters", "evaluation", "thumbnails"):
        assert f'<section id="{section}">' in page and f'<a href="#{section}">' in page
    summary = json.loads((task2_auto / "summary.json").read_text())
    sizes = summary["cluster_sizes"]
    # map, cluster sizes, BIC sweep, then up to 3 thumbnails per cluster.
    assert page.count(PNG) == 3 + sum(min(3, s) for s in sizes)
    assert 'alt="BIC sweep"' in page and page.count('<div class="grid">') == len(sizes)
    metrics = evaluate_run("task2", task2_auto / "clusters.csv", truth)
    assert f'<td class="num">{metrics["ari"]:.4g}</td>' in page
    assert f'<td class="num">{metrics["nmi"]:.4g}</td>' in page
    # The contingency table: one row per cluster, summing to the cluster's size.
    table = page.split("Clusters against the true groups")[1].split("</table>")[0]
    for c, size in enumerate(sizes):
        cells = re.search(rf"<td>cluster {c}</td>((?:<td[^>]*>\d+</td>)+)", table)
        assert cells is not None
        assert sum(map(int, re.findall(r">(\d+)<", cells.group(1)))) == size


def test_task2_report_of_a_run_that_used_the_labels(
    task2_data: Path, tmp_path: Path, assert_self_contained: Callable[[str], None]
) -> None:
    """With train/<group>/ the page opens with the verdict and the selection table, and the
    clusters carry the names of the groups they stand for."""
    out = tmp_path / "labels"
    run = ["run", "task2", str(task2_data), "--out", str(out), "--features", "residual"]
    assert main([*run, "--quiet", "--report"]) == 0
    page = (out / "report.html").read_text()
    assert_self_contained(page)
    summary = json.loads((out / "summary.json").read_text())
    assert '<section id="verdict" class="verdict-box">' in page
    for section in ("selection", "settings", "clusters", "thumbnails"):
        assert f'<section id="{section}">' in page
    order = [page.index(f'id="{s}"') for s in ("verdict", "selection", "clusters", "settings")]
    assert order == sorted(order)  # the answer first, the settings last
    n = len(summary["selection"]["candidates"])
    assert "cross-validated ARI" in page and f"All {n} candidates" in page and n >= 3
    for j, group in summary["cluster_groups"].items():
        assert f"<td>cluster {j} ({group})</td>" in page and f"Cluster {j} ({group})" in page
