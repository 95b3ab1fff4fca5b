"""Shared fixtures: the real CT data beside the clone and a cached small model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LUNG = SHARED / "lung-pet-ct-dx"
EDGE = SHARED / "dicom-edge"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def pytest_configure(config: pytest.Config) -> None:
    # CI and developers have the data; a device machine running only `-m gpu` may not.
    if not LUNG.is_dir() and not os.environ.get("CTFP_ALLOW_MISSING_DATA"):
        raise pytest.UsageError(f"the shared CT data is missing: expected {LUNG}")


@pytest.fixture(scope="session")
def lung_pngs() -> list[Path]:
    if not LUNG.is_dir():
        pytest.skip(f"shared CT data not found at {LUNG}")
    paths = sorted((LUNG / "png").glob("*.png"))
    assert len(paths) == 188
    return paths


@pytest.fixture(scope="session")
def random_backbone_64():
    """ResNet50 with seeded random weights at 64 px: fast enough for many tests on 2 cores."""
    from ctfp.embed.backbone import build_backbone

    backbone = build_backbone("random", seed=0, image_size=64)
    return lambda: backbone


def copy_pngs(paths: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, dest / p.name)
    return dest
