"""Pixel, spectrum, residual and concatenated features: shapes, identities, what they respond to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from ctfp.embed import features, settings
from ctfp.embed.features import ConcatFeatures, build_features, join
from ctfp.embed.runner import embed
from ctfp.exceptions import CtfpError, ShardMismatchError
from ctfp.store.reader import read_embeddings
from tests.conftest import LUNG, copy_pngs

SLICE = np.asarray(Image.open(LUNG / "png" / "A0001_s2_030.png"))


def run(spec: str, images: list[np.ndarray]) -> torch.Tensor:
    """The features of ``spec`` for ``images``: each part fed the slices resized to its own side."""
    f = build_features(spec, weights="random", image_size=64)
    parts = f.parts if isinstance(f, ConcatFeatures) else [f]
    views = [
        torch.stack([torch.from_numpy(p.preprocessing.resize(i).copy()) for i in images])[:, None]
        for p in parts
    ]
    assert all(v.shape[-1] == p.preprocessing.image_size for v, p in zip(views, parts, strict=True))
    with torch.inference_mode():
        return f(views) if isinstance(f, ConcatFeatures) else f(views[0])


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


def test_a_joined_type_joins_its_parts_each_from_the_decoded_slice() -> None:
    images = [SLICE, SLICE[::-1]]
    joined = run("pixels:16+residual:64", images)
    parts = [run("pixels:16", images), run("residual:64", images)]
    np.testing.assert_array_equal(joined.numpy(), join(parts).numpy())
    expected = torch.cat([F.normalize(p, dim=1) for p in parts], 1)
    np.testing.assert_allclose(joined.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    # Joined shards made the older way (every part from the largest part's side) have another
    # identity: they are never mixed with these.
    identity = build_features("pixels:16+residual:64").identity
    assert identity.preprocessing["resize"] == "per-part"
    assert [p["image_size"] for p in identity.preprocessing["parts"]] == [16, 64]


def _textbook(x: torch.Tensor, model: torch.nn.Module, residual: bool) -> torch.Tensor:
    """The spectrum / residual features as first written: a 2-D convolution for the blur, the
    full complex FFT and every frequency added into its radial bin (float32)."""
    x = x.float() / 255.0
    if residual:
        k = torch.tensor(model.taps)
        pad = (model.radius,) * 4
        blurred = F.conv2d(F.pad(x, pad, mode="reflect"), k.view(1, 1, 1, -1))
        x = x - F.conv2d(blurred, k.view(1, 1, -1, 1))
    r = x[:, 0]
    s = r.shape[-1]
    f = torch.fft.fftfreq(s) * s
    bins = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long().clamp(max=s // 2)
    counts = torch.bincount(bins.flatten(), minlength=s // 2 + 1).clamp(min=1)
    centred = (r - r.mean(dim=(-2, -1), keepdim=True)) * model.window
    power = torch.fft.fft2(centred).abs().square().flatten(1)
    sums = torch.zeros((len(r), s // 2 + 1)).index_add_(1, bins.flatten(), power)
    spectrum = torch.log(sums / counts + 1e-10)[:, 1:]
    if not residual:
        return spectrum
    flat = r.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    std = centred.square().mean(1).sqrt().clamp_min(1e-8)
    skew = (centred**3).mean(1) / std**3
    kurt = (centred**4).mean(1) / std**4 - 3.0
    moments = torch.stack([torch.log(std), torch.log(flat.abs().mean(1) + 1e-8), skew, kurt], 1)
    return torch.cat([spectrum, moments], 1)


@pytest.mark.parametrize("spec", ["spectrum", "residual", "spectrum:33", "residual:64"])
def test_the_fast_paths_equal_the_textbook_definitions(spec: str, lung_pngs) -> None:
    """Half the spectrum (rfft2) weighted by its mirror, the blur as shifted adds: the same
    features as the full FFT and the convolution, to float32 rounding (odd sides too)."""
    model = build_features(spec)
    size = model.preprocessing.image_size
    x = torch.stack(
        [
            torch.from_numpy(model.preprocessing.resize(np.asarray(Image.open(p))).copy())
            for p in lung_pngs[:24]
        ]
    )[:, None]
    assert x.shape[-1] == size
    with torch.inference_mode():
        got, expected = model(x), _textbook(x, model, spec.startswith("residual"))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=2e-5)


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
