"""Pixel, spectrum, residual and concatenated features: shapes, identities, what they respond to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from ctfp.embed import features, settings
from ctfp.embed.features import build_features
from ctfp.embed.runner import embed
from ctfp.exceptions import CtfpError, ShardMismatchError
from ctfp.store.reader import read_embeddings
from tests.conftest import LUNG, copy_pngs

SLICE = np.asarray(Image.open(LUNG / "png" / "A0001_s2_030.png"))


def run(spec: str, images: list[np.ndarray]) -> torch.Tensor:
    f = build_features(spec, weights="random", image_size=64)
    s = f.preprocessing.image_size
    x = torch.stack([torch.from_numpy(f.preprocessing.resize(i)) for i in images])[:, None]
    assert x.shape[-1] == s
    with torch.inference_mode():
        return f(x)


@pytest.mark.parametrize(
    ("spec", "dim"),
    [("pixels", 4096), ("spectrum", 128), ("residual", 132), ("pixels+spectrum", 4224)],
)
def test_shapes_and_identity(spec: str, dim: int) -> None:
    f = build_features(spec)
    assert f.identity.dim == dim and f.identity.model == spec
    y = run(spec, [SLICE, SLICE[::-1]])
    assert y.shape == (2, dim) and torch.isfinite(y).all()


def test_pixels_are_the_downsampled_slice() -> None:
    y = run("pixels", [SLICE])[0].reshape(64, 64).numpy()
    expected = np.asarray(Image.fromarray(SLICE).resize((64, 64), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_spectrum_sees_blur_and_periodic_upsampling() -> None:
    blurred = np.asarray(Image.fromarray(SLICE).filter(ImageFilter.GaussianBlur(2)))
    a, b = run("spectrum", [SLICE, blurred])
    assert (a[-32:] - b[-32:]).mean() > 2.0  # blur removes high-frequency power
    # Nearest-neighbour 2x up-sampling leaves the checkerboard/replication peaks of GAN decoders.
    small = np.asarray(Image.fromarray(SLICE).resize((128, 128), Image.BILINEAR))
    nearest = np.kron(small, np.ones((2, 2), dtype=np.uint8))
    smooth = np.asarray(Image.fromarray(small).resize((256, 256), Image.BICUBIC))
    r_near, r_smooth = run("residual", [nearest, smooth])
    assert not torch.allclose(r_near, r_smooth, atol=0.5)


def test_residual_ignores_anatomy_more_than_pixels_do() -> None:
    other = np.asarray(Image.open(LUNG / "png" / "A0002_s3_015.png"))
    rng = np.random.default_rng(0)
    noisy = np.clip(SLICE + rng.normal(0, 8, SLICE.shape), 0, 255).astype(np.uint8)
    noisy_other = np.clip(other + rng.normal(0, 8, other.shape), 0, 255).astype(np.uint8)

    def ratio(spec: str) -> float:
        # distance between two "same generator" slices of different anatomy, relative to the
        # distance between one anatomy with and without the generator's noise
        f = torch.nn.functional.normalize(run(spec, [SLICE, noisy, noisy_other]), dim=1)
        return float(torch.dist(f[1], f[2]) / torch.dist(f[0], f[1]))

    assert ratio("residual") < 0.5 * ratio("pixels")


def test_shards_carry_their_own_identity(tmp_path: Path, lung_pngs) -> None:
    src = copy_pngs(lung_pngs[:3], tmp_path / "src")
    embed(src, tmp_path / "px", features="pixels", progress=False)
    data = read_embeddings(tmp_path / "px")
    assert data.matrix.shape == (3, 4096) and data.metadata["model"] == "pixels"
    embed(src, tmp_path / "sp", features="spectrum", progress=False)
    with pytest.raises(ShardMismatchError):
        read_embeddings([tmp_path / "px", tmp_path / "sp"])
    with pytest.raises(ShardMismatchError):
        embed(src, tmp_path / "px", features="residual", progress=False)


def test_unknown_features() -> None:
    with pytest.raises(CtfpError, match="unknown features"):
        build_features("sift")
    # One list of valid names, the settings' (what the command line offers too).
    assert features.FEATURES is settings.FEATURES
