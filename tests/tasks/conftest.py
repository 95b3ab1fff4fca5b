"""Small ImageCLEF-style datasets built from the shared CT PNGs, with their truth files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import LUNG


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture(scope="session")
def task1_data(tmp_path_factory) -> Path:
    """Used / not used interleaved by slice position; "generated" = near-copies of used slices."""
    root = tmp_path_factory.mktemp("task1")
    pngs = sorted((LUNG / "png").glob("*.png"))
    rng = np.random.default_rng(0)
    truth = []
    for n, path in enumerate(pngs):
        used = n % 2 == 0
        label = "used" if used else "not_used"
        img = Image.open(path)
        if n % 6 in (4, 5):  # a third of each class goes to the test set
            _save(img, root / "test" / f"{path.stem}.png")
            truth.append(f"{path.stem},{int(used)}")
        else:
            _save(img, root / "train" / label / f"{path.stem}.png")
        if used:  # the "generator" memorised used slices: noisy copies
            a = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (256, 256))
            _save(
                Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)),
                root / "generated" / f"g{n}.png",
            )
    (root / "truth.csv").write_text("id,label\n" + "\n".join(truth) + "\n")
    return root


GENERATORS = {
    "blur": lambda img, rng: img.filter(ImageFilter.GaussianBlur(3)),
    "noise": lambda img, rng: Image.fromarray(
        np.clip(np.asarray(img, np.float32) + rng.normal(0, 25, (256, 256)), 0, 255).astype(
            np.uint8
        )
    ),
    "poster": lambda img, rng: Image.fromarray((np.asarray(img) // 64 * 64).astype(np.uint8)),
}


@pytest.fixture(scope="session")
def task2_data(tmp_path_factory) -> Path:
    """Three "generators" with distinct fingerprints (blur, noise, posterisation)."""
    root = tmp_path_factory.mktemp("task2")
    pngs = sorted((LUNG / "png").glob("*.png"))[::3]
    rng = np.random.default_rng(0)
    truth = []
    for n, path in enumerate(pngs):
        g = list(GENERATORS)[n % 3]
        img = GENERATORS[g](Image.open(path), rng)
        if n < 12:
            _save(img, root / "train" / g / f"{path.stem}.png")
        else:
            _save(img, root / "test" / f"{path.stem}.png")
            truth.append(f"{path.stem},{n % 3}")
    (root / "truth.csv").write_text("id,cluster\n" + "\n".join(truth) + "\n")
    return root
