"""``write_report`` as a whole: what it refuses, and its pages rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctfp.cli import main
from ctfp.exceptions import InputError
from ctfp.report import write_report

PNG = "data:image/png;base64,"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_not_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match=r"no summary\.json"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "nope")
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_bad_arguments(task2_auto: Path) -> None:
    with pytest.raises(InputError, match="max_items must be positive"):
        write_report(task2_auto, max_items=0)
    with pytest.raises(InputError, match="this is a task2 run"):
        write_report(task2_auto, k=2)


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


@pytest.mark.slow
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
    # A blank or unstyled page is nearly all white (no dark pixels, std near 0); this one
    # carries tables, plots and text: about 4 % of the first screen is dark.
    assert gray.std() > 25 and (gray < 200).mean() > 0.02


def screenshot(page: Path, tmp: Path, height: int = 900) -> np.ndarray:
    """The first ``height`` pixels of ``page`` at 1200 px wide, as an RGB array."""
    from PIL import Image

    shot = tmp / f"{page.parent.name}-{page.stem}.png"
    chromium(
        f"--screenshot={shot}",
        f"--window-size=1200,{height}",
        "--hide-scrollbars",
        page.resolve().as_uri(),
        tmp=tmp,
    )
    return np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_reports_open_with_the_verdict_above_the_fold(
    task1_data: Path, task2_data: Path, tmp_path: Path
) -> None:
    """Task 1 (auto) and task 2 (with train/<group>/) reports as a reader first sees them: the
    verdict box is on the first screen, before the evidence and the settings, and the clusters
    carry the names of the labelled groups."""
    import json

    from ctfp.report.figures import check_labels, new_figure

    embed = ["--weights", "random", "--image-size", "32", "--quiet", "--report"]
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    task1 = ["run", "task1", str(task1_data), "--out", str(t1), "--features", "pixels:16"]
    assert main([*task1, *embed]) == 0
    task2 = ["run", "task2", str(task2_data), "--out", str(t2), "--features", "residual"]
    assert main([*task2, *embed]) == 0
    for run in (t1, t2):
        page = run / "report.html"
        dom = chromium("--dump-dom", page.resolve().as_uri(), tmp=tmp_path).stdout
        summary = json.loads((run / "summary.json").read_text())
        # The verdict, then the method's candidates, then the evidence, the settings last.
        order = [dom.index(f'id="{s}"') for s in ("verdict", "selection", "map", "settings")]
        assert order == sorted(order), order
        box = dom.split('id="verdict"')[1].split("</section>")[0]
        assert summary["verdict"].split(":")[0] in box.replace("&amp;", "&")
        assert summary["selection"]["chosen"]["label"] in box.replace("&amp;", "&")
        # Above the fold: the box's border colour (#0072B2) is drawn on the first 900 px, and
        # nowhere in the figures (they use it for lines only, never as wide as the box).
        rgb = screenshot(page, tmp_path)
        border = (np.abs(rgb - np.array([0, 114, 178])).sum(axis=2) < 30).sum(axis=1)
        rows = np.flatnonzero(border > 600)  # a horizontal edge of the box, >= 600 px wide
        assert len(rows) >= 2 and rows.max() < 900, rows
    dom = chromium("--dump-dom", (t2 / "report.html").resolve().as_uri(), tmp=tmp_path).stdout
    for j, group in json.loads((t2 / "summary.json").read_text())["cluster_groups"].items():
        assert f"cluster {j} ({group})" in dom
    # Figures without axis labels are refused, so every figure on these pages has them.
    fig = new_figure()
    fig.subplots().plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="without an x label"):
        check_labels(fig)
