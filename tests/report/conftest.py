"""Report fixtures: real runs over the small ImageCLEF folders of tests/conftest.py (task 1:
every third slice, enough for a report's every section and its 12 evidence rows)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

EMBED = ["--weights", "random", "--image-size", "32", "--quiet"]  # 32 px: fast, and enough here


def _run(args: list[str]) -> None:
    from ctfp.cli import main

    assert main([*args, *EMBED]) == 0


@pytest.fixture(scope="session")
def task1_sweep(task1_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A centroid run over k = 1, 4 that wrote its report through `ctfp run ... --report`."""
    out = tmp_path_factory.mktemp("report") / "t1"
    args = [
        "run",
        "task1",
        str(task1_small),
        "--out",
        str(out),
        "--method",
        "centroid",
        "--k",
        "1,4",
    ]
    args += ["--report"]
    _run(args)
    return out


@pytest.fixture(scope="session")
def task1_proximity(
    task1_small: Path, task1_sweep: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A proximity run (one k, cosine) reusing the sweep's embeddings: only the fit runs again."""
    out = tmp_path_factory.mktemp("report") / "t1p"
    shutil.copytree(task1_sweep / "embeddings", out / "embeddings")
    args = ["run", "task1", str(task1_small), "--out", str(out), "--method", "proximity"]
    _run(args)
    return out


@pytest.fixture(scope="session")
def task2_auto(task2_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Gaussian-mixture run with k chosen by BIC in 2-4."""
    out = tmp_path_factory.mktemp("report") / "t2"
    args = ["run", "task2", str(task2_data), "--out", str(out)]
    args += ["--method", "gmm", "--k", "auto", "--k-range", "2-4", "--pca", "8"]
    _run(args)
    return out


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for outside in ('src="http', "src='http", "<script src", '<link rel="stylesheet"', "url("):
        assert outside not in page, outside
    # Every src is an inlined PNG.
    assert set(re.findall(r'src="([a-z]+:[^;,]*)', page)) == {"data:image/png"}


@pytest.fixture
def assert_self_contained() -> Callable[[str], None]:
    """Checks that a page is one whole HTML document loading nothing from outside."""
    return _assert_self_contained
