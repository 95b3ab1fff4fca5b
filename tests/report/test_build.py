"""``write_report`` as a whole: what it refuses, and its pages rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctfp.cli import main
from ctfp.exceptions import InputError
from ctfp.report import write_report
from ctfp.report.audit_md import RANDOM_WARNING, plain_answer

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


#: Where CI collects files for a person to look at: the full-page screenshots go there.
ARTIFACTS = "CTFP_ARTIFACTS"
OFFLINE = "<urlopen error [Errno -2] Name or service not known>"


def page_check(
    path: Path, tmp: Path, shot: Path | None = None
) -> tuple[dict[str, str], list[str], str]:
    """The data-* attributes the page's script set on <body>, the page's console lines and its
    DOM, the page laid out in a 1280 px window (and, with ``shot``, a screenshot of it)."""
    size = ["--window-size=1280,8000", "--hide-scrollbars"]
    size += [f"--screenshot={shot}"] if shot is not None else []
    run = chromium("--dump-dom", *size, path.resolve().as_uri(), tmp=tmp)
    body = re.search(r"<body([^>]*)>", run.stdout)
    assert body is not None, run.stdout[:500]
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return attributes, console, run.stdout


def stressed(run: Path, dest: Path) -> Path:
    """A copy of ``run`` whose summary holds what once broke the page: 60 more candidates with
    long labels, a feature type left out with its exception text, and unread inputs."""
    shutil.copytree(run, dest)
    summary = json.loads((dest / "summary.json").read_text())
    selection = summary["selection"]
    first = {**selection["candidates"][0], "chosen": False}
    label = "pixels:{}+residual+spectrum / density (bandwidth=0.5, estimator=kde)"
    selection["candidates"] += [{**first, "label": label.format(n)} for n in range(60)]
    selection["skipped"] = {"resnet50": f"ImageNet weights could not be loaded: {OFFLINE}"}
    summary["n_unreadable"] = 2
    summary["warnings"] = [
        "2 input(s) of /data could not be read and are left out of the run and its counts: "
        "test/a.png (truncated file); test/b.dcm (no pixel data)"
    ]
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_reports_render_and_hold_their_layout_in_headless_chromium(
    task1_sweep: Path, task1_proximity: Path, task2_auto: Path, tmp_path: Path
) -> None:
    """The task 1, task 2 and demo-like (random weights, the seed method) reports at 1280 px:
    the page's script runs, every image decodes, the console is empty; and by the page's own
    measures no table cell is narrower than about 8 characters, nothing is wider than the
    window, no table row is taller than a row of thumbnails, and the page is no taller than its
    images plus a line per shown table row and a screenful of prose. The warnings are in the
    Answer box, in words (no exception text). Full-page screenshots are kept, under
    $CTFP_ARTIFACTS where set, for a person to look at."""
    shots = Path(os.environ.get(ARTIFACTS) or tmp_path) / "report-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = {
        "task1": write_report(stressed(task1_proximity, tmp_path / "t1"), tmp_path / "t1.html"),
        "task2": write_report(task2_auto, tmp_path / "t2.html"),
        "demo": task1_sweep / "report.html",
    }
    boxes = {}
    for name, report in pages.items():
        a, console, dom = page_check(report, tmp_path, shots / f"{name}.png")
        assert a.get("rendered") == "1", a  # the inline script ran
        assert a["images"] == str(report.read_text().count(PNG)) and a["broken-images"] == "0"
        assert console == []  # no script errors, nothing logged
        assert float(a["narrowest-cell-em"]) >= 4, (name, a)  # 4 em: about 8 characters
        assert int(a["width"]) <= 1280 and int(a["tallest-row"]) <= 250, (name, a)
        bound = int(a["image-height"]) + 40 * int(a["rows"]) + 2000
        assert int(a["height"]) <= bound, (name, a)
        text = html.unescape(dom)
        assert "urlopen" not in text and "(None)" not in text, name
        boxes[name] = text.split('id="verdict"')[1].split("</section>")[0]
    assert "ImageNet weights could not be downloaded (offline)" in boxes["task1"]
    assert "2 input(s) of /data could not be read" in boxes["task1"]
    assert RANDOM_WARNING in boxes["demo"]

    # A corrupted image is caught: the check above can fail.
    page = (task1_sweep / "report.html").read_text()
    start = page.index(PNG) + len(PNG)
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + "AAAA" + page[start + 4 :])
    assert page_check(broken, tmp_path)[0]["broken-images"] == "1"

    from PIL import Image

    gray = np.asarray(Image.open(shots / "demo.png").convert("L"), dtype=np.float32)[:2000]
    assert gray.shape == (2000, 1280)
    # A blank or unstyled page is nearly all white (no dark pixels, std near 0); this one
    # carries tables, plots and text: a few % of the first screen is dark.
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
    task1_small: Path, task2_data: Path, tmp_path: Path
) -> None:
    """Task 1 (auto) and task 2 (with train/<group>/) reports as a reader first sees them: the
    verdict box is on the first screen, before the evidence and the settings, and the clusters
    carry the names of the labelled groups."""
    from ctfp.report.figures import check_labels, new_figure

    embed = ["--weights", "random", "--image-size", "32", "--quiet", "--report"]
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    task1 = ["run", "task1", str(task1_small), "--out", str(t1), "--features", "pixels:16"]
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
        # The box says the finding in plain words (audit.md's); the technical names (the
        # chosen candidate's label, the verdict as recorded) are in the method section.
        box = html.unescape(dom.split('id="verdict"')[1].split("</section>")[0])
        method = html.unescape(dom.split('id="selection"')[1].split("</section>")[0])
        record = json.loads((run / "audit.json").read_text())
        assert plain_answer(record).finding in box and "Next steps" in box
        label = summary["selection"]["chosen"]["label"]
        assert label not in box and label in method and summary["verdict"] in method
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
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="without an x label"):
        check_labels(fig)
