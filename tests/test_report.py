"""The HTML report: real task runs on small ImageCLEF folders, then the page, also in Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctfp.cli import main
from ctfp.evaluate import evaluate_run, read_table
from ctfp.exceptions import InputError
from ctfp.report import write_report
from ctfp.store.reader import read_embeddings
from tests.tasks.conftest import task1_data, task2_data  # noqa: F401 - fixtures

EMBED = ["--weights", "random", "--image-size", "32", "--quiet"]  # 32 px: fast, and enough here
PNG = "data:image/png;base64,"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def task1_sweep(task1_data: Path, tmp_path_factory) -> Path:  # noqa: F811
    """A centroid run over k = 1, 4 that wrote its report through `ctfp run ... --report`."""
    out = tmp_path_factory.mktemp("report") / "t1"
    args = ["run", "task1", str(task1_data), "--out", str(out), "--k", "1,4", "--report"]
    assert main([*args, *EMBED]) == 0
    return out


@pytest.fixture(scope="module")
def task1_proximity(task1_data: Path, task1_sweep: Path, tmp_path_factory) -> Path:  # noqa: F811
    """A proximity run (one k) reusing the sweep's embeddings: only the fit runs again."""
    out = tmp_path_factory.mktemp("report") / "t1p"
    shutil.copytree(task1_sweep / "embeddings", out / "embeddings")
    args = ["run", "task1", str(task1_data), "--out", str(out), "--method", "proximity"]
    assert main([*args, *EMBED]) == 0
    return out


@pytest.fixture(scope="module")
def task2_auto(task2_data: Path, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("report") / "t2"
    args = ["run", "task2", str(task2_data), "--out", str(out), "--k", "auto", "--k-range", "2-4"]
    assert main([*args, "--pca", "8", *EMBED]) == 0
    return out


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for outside in ('src="http', "src='http", "<script src", '<link rel="stylesheet"', "url("):
        assert outside not in page, outside
    # Every src is an inlined PNG.
    assert set(re.findall(r'src="([a-z]+:[^;,]*)', page)) == {"data:image/png"}


def evidence_rows(page: str) -> list[tuple[str, str, float]]:
    """(test id, nearest generated id, distance) of each evidence row, in page order."""
    section = page.split('id="evidence"')[1].split("</section>")[0]
    row = re.compile(
        r"<tr><td>\d+</td><td><figure>.*?<figcaption>([^<]*)</figcaption></figure></td>"
        r".*?<figcaption>([^<]*)</figcaption></figure></td><td>([^<]*)</td></tr>"
    )
    return [(html.unescape(a), html.unescape(b), float(c)) for a, b, c in row.findall(section)]


def top_scores(scores_csv: Path, n: int) -> list[str]:
    lines = [line.split(",") for line in scores_csv.read_text().splitlines()[1:]]
    order = np.argsort([-float(r[1]) for r in lines], kind="stable")[:n]
    return [lines[i][0] for i in order]


def test_run_report_flag_writes_a_self_contained_task1_report(task1_sweep: Path) -> None:
    page = (task1_sweep / "report.html").read_text()
    assert_self_contained(page)
    summary = json.loads((task1_sweep / "summary.json").read_text())
    n_test = summary["n_test"]
    for section in ("settings", "map", "scores", "k-sweep", "evidence"):
        assert f'<section id="{section}">' in page
    assert 'id="evaluation"' not in page  # no truth given
    assert "Random weights" in page and summary["model"]["weights_sha256"] in page
    assert "bilinear-antialias" in page  # the preprocessing, from the shard metadata
    # map + score histogram + k sweep plot, then a test and a generated thumbnail per evidence row.
    assert page.count(PNG) == 3 + 2 * min(12, n_test)
    # The detail is the first k; the evidence rows are its highest scores, best first.
    assert "Test scores for k=1" in page
    rows = evidence_rows(page)
    assert [r[0] for r in rows] == top_scores(task1_sweep / "k1" / "scores.csv", 12)
    # The k sweep table lists each k's predicted-used count.
    sweep = page.split('id="k-sweep"')[1].split("</table>")[0]
    for k in (1, 4):
        used = summary["runs"][str(k)]["predicted_used"]
        assert f'<td class="num">{k}</td><td class="num">{used}</td>' in sweep


def test_task1_report_with_truth(task1_data: Path, task1_proximity: Path) -> None:  # noqa: F811
    truth = task1_data / "truth.csv"
    dest = write_report(task1_proximity, task1_proximity / "r.html", truth=truth, max_items=5)
    page = dest.read_text()
    assert_self_contained(page)
    assert 'alt="ROC curve"' in page and 'alt="confusion matrix"' in page
    # map, histogram, ROC, confusion matrix, 5 evidence rows of two thumbnails; no k sweep.
    assert page.count(PNG) == 4 + 2 * 5 and 'id="k-sweep"' not in page
    metrics = evaluate_run("task1", task1_proximity / "run.csv", truth)
    section = page.split('id="evaluation"')[1].split("</section>")[0]
    for key in ("f1", "accuracy", "kappa", "roc_auc", "baseline_all_used_f1"):
        assert f'<td class="num">{metrics[key]:.4g}</td>' in section, key
    # The confusion counts behind the figure agree with the run file.
    labels = read_table(truth, "label")
    assert sum(v == "1" for v in labels.values()) == metrics["n_used"]

    # Evidence: each nearest generated slice and its cosine distance, against brute force.
    rows = evidence_rows(page)
    assert [r[0] for r in rows] == top_scores(task1_proximity / "scores.csv", 5)
    emb = read_embeddings(task1_proximity / "embeddings")
    gen = emb.labels == "generated"
    g = emb.matrix[gen] / np.linalg.norm(emb.matrix[gen], axis=1, keepdims=True)
    position = {i: n for n, i in enumerate(emb.ids)}
    for test_id, generated_id, distance in rows:
        q = emb.matrix[position["test/" + test_id]]
        cosine = 1 - g @ (q / np.linalg.norm(q))
        assert generated_id == emb.ids[gen][int(np.argmin(cosine))]
        assert distance == pytest.approx(float(cosine.min()), rel=1e-3, abs=1e-5)


def test_task2_report_through_the_cli(
    task2_data: Path,  # noqa: F811
    task2_auto: Path,
    tmp_path: Path,
    capsys,
) -> None:
    dest = tmp_path / "sub" / "t2.html"
    truth = task2_data / "truth.csv"
    args = ["report", str(task2_auto), "--out", str(dest), "--truth", str(truth)]
    assert main([*args, "--max-items", "3", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(dest) and printed["bytes"] == dest.stat().st_size
    page = dest.read_text()
    assert_self_contained(page)
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


def test_not_a_run_folder(tmp_path: Path, capsys) -> None:
    with pytest.raises(InputError, match=r"no summary\.json"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "nope")
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_missing_files_and_escaping(task1_proximity: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    summary = json.loads((task1_proximity / "summary.json").read_text())
    summary["calibrate"] = "<script>alert(1)</script>"
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=r"scores\.csv"):
        write_report(run)
    for name in ("run.csv", "scores.csv"):
        shutil.copy(task1_proximity / name, run / name)
    page = write_report(run).read_text()  # no embeddings: said so, no map or thumbnails
    assert "has no embeddings" in page and page.count(PNG) == 1  # the score histogram
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    with pytest.raises(InputError, match="k=3 is not one of"):
        write_report(run, k=3)


def test_thumbnails_say_why_a_slice_cannot_be_shown(tmp_path: Path) -> None:
    from PIL import Image

    from ctfp.io.decode import Window
    from ctfp.report import _Thumbnails

    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(
        tmp_path / "a.png"
    )
    thumbs = _Thumbnails(Window(), side=32)
    shown = thumbs.html((str(tmp_path / "a.png"), 0), "a & b")
    assert shown.count(PNG) == 1 and "<figcaption>a &amp; b</figcaption>" in shown
    thumb = re.search(r'src="data:image/png;base64,([^"]+)"', shown)
    assert thumb is not None
    assert Image.open(io.BytesIO(base64.b64decode(thumb.group(1)))).size == (32, 24)
    for where, reason in (
        ((str(tmp_path / "gone.png"), 0), "does not exist|cannot read"),
        ((str(tmp_path / "a.png"), 3), "it has 1 frames, not frame 3"),
    ):
        missing = thumbs.html(where, "x")
        assert PNG not in missing and "source not readable" in missing
        assert re.search(reason, missing), missing
    assert "no embedding row" in thumbs.html(None, "x")


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def page_check(path: Path, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """The data-* attributes the page's script set on <body>, and the page's console lines."""
    run = chromium("--dump-dom", path.resolve().as_uri(), tmp=tmp)
    body = re.search(r"<body([^>]*)>", run.stdout)
    assert body is not None, run.stdout[:500]
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return attributes, console


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_reports_render_in_headless_chromium(
    task1_sweep: Path, task2_auto: Path, tmp_path: Path
) -> None:
    for report in (task1_sweep / "report.html", write_report(task2_auto, tmp_path / "t2.html")):
        images = report.read_text().count(PNG)
        attributes, console = page_check(report, tmp_path)
        assert attributes.get("rendered") == "1", attributes  # the inline script ran
        assert attributes["images"] == str(images) and attributes["broken-images"] == "0"
        assert console == []  # no script errors, nothing logged

    # A corrupted image is caught: the check above can fail.
    page = (task1_sweep / "report.html").read_text()
    start = page.index(PNG) + len(PNG)
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + "AAAA" + page[start + 4 :])
    attributes, _ = page_check(broken, tmp_path)
    assert attributes["broken-images"] == "1"

    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        "--hide-scrollbars",
        (task1_sweep / "report.html").resolve().as_uri(),
        tmp=tmp_path,
    )
    from PIL import Image

    gray = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert gray.shape == (2000, 1200)
    # A blank or unstyled page is nearly all white; this one carries tables, plots and text.
    assert gray.std() > 30 and (gray < 200).mean() > 0.05
