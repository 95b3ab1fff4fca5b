"""Feature extractors beside ResNet50: raw pixels, log power spectrum, noise residual, concat.

ImageNet ResNet50 features mostly encode anatomy. A generator's fingerprint lives in high
frequencies: noise residuals (Marra et al. 2019, "Do GANs leave artificial fingerprints?") and
spectral distortions of up-sampling (Durall et al. 2020). Memorisation is often visible in pixels
before features. Each extractor here has the backbone's interface — (b, 1, s, s) uint8 in,
(b, dim) float out, its own preprocessing and identity — so it is stored in the same shard format
and never mixed with another.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctfp.embed.backbone import Backbone, Identity, Preprocessing, build_backbone
from ctfp.embed.settings import FEATURES, check_features, parse_feature
from ctfp.exceptions import CtfpError

GRAY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channels="gray")


def _full_precision(forward):
    """Run ``forward`` in float32 even under autocast: residuals are small differences that
    bf16/fp16 rounding would drown."""

    def wrapped(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(self, x)

    return wrapped


def _identity(model: str, config: dict[str, Any], dim: int, pre: Preprocessing) -> Identity:
    # No learned weights: the configuration is the identity.
    digest = hashlib.sha256(json.dumps({model: config}, sort_keys=True).encode()).hexdigest()
    return Identity(model, f"none:{json.dumps(config, sort_keys=True)}", digest, dim, asdict(pre))


def _radial_bins(s: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integer radius of every FFT frequency of an s x s image, and the count per radius."""
    f = torch.fft.fftfreq(s) * s
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long()
    n_bins = s // 2
    r = r.clamp(max=n_bins)  # corners beyond Nyquist go to an overflow bin that is dropped
    counts = torch.bincount(r.flatten(), minlength=n_bins + 1).clamp(min=1)
    return r.flatten(), counts, n_bins


class _Spectral(nn.Module):
    """Azimuthally averaged log power spectrum, the shared core of spectrum and residual."""

    def __init__(self, s: int) -> None:
        super().__init__()
        bins, counts, self.n_bins = _radial_bins(s)
        self.register_buffer("bins", bins, persistent=False)
        self.register_buffer("counts", counts.float(), persistent=False)
        window = torch.hann_window(s, periodic=False)
        self.register_buffer("window", window[:, None] * window[None, :], persistent=False)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(b, s, s) float -> (b, s/2) log power per radius (DC excluded)."""
        x = (x - x.mean(dim=(-2, -1), keepdim=True)) * self.window
        power = torch.fft.fft2(x).abs().square().flatten(1)
        sums = torch.zeros((x.shape[0], self.n_bins + 1), dtype=power.dtype, device=x.device)
        sums.index_add_(1, self.bins, power)
        return torch.log(sums / self.counts + 1e-10)[:, 1 : self.n_bins + 1]


class PixelFeatures(nn.Module):
    """Downsampled raw intensities in [0, 1]: (b, size*size)."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.preprocessing = Preprocessing(image_size=size, **GRAY)
        self.identity = _identity("pixels", {"size": size}, size * size, self.preprocessing)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).flatten(1)


class SpectrumFeatures(_Spectral):
    """Azimuthally averaged log power spectrum of the (Hann-windowed) slice: (b, size/2)."""

    def __init__(self, size: int = 256) -> None:
        super().__init__(size)
        self.preprocessing = Preprocessing(image_size=size, **GRAY)
        self.identity = _identity("spectrum", {"size": size}, self.n_bins, self.preprocessing)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrum(x.float()[:, 0] / 255.0)


class ResidualFeatures(_Spectral):
    """Noise residual (slice minus a Gaussian-denoised copy), summarised by its log power spectrum
    and its moments (std, mean |r|, skewness, excess kurtosis): (b, size/2 + 4)."""

    def __init__(self, size: int = 256, sigma: float = 1.0) -> None:
        super().__init__(size)
        radius = max(1, math.ceil(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * sigma**2))
        self.register_buffer("kernel", (g / g.sum()), persistent=False)
        self.radius = radius
        self.preprocessing = Preprocessing(image_size=size, **GRAY)
        config = {"size": size, "sigma": sigma, "denoise": "gaussian"}
        self.identity = _identity("residual", config, self.n_bins + 4, self.preprocessing)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        k = self.kernel.to(x.dtype)
        pad = (self.radius,) * 4
        blurred = F.conv2d(F.pad(x, pad, mode="reflect"), k.view(1, 1, 1, -1))
        blurred = F.conv2d(blurred, k.view(1, 1, -1, 1))
        r = (x - blurred)[:, 0]
        flat = r.flatten(1)
        mean = flat.mean(1, keepdim=True)
        centred = flat - mean
        std = centred.square().mean(1).sqrt().clamp_min(1e-8)
        skew = (centred**3).mean(1) / std**3
        kurt = (centred**4).mean(1) / std**4 - 3.0
        moments = torch.stack([torch.log(std), torch.log(flat.abs().mean(1) + 1e-8), skew, kurt], 1)
        return torch.cat([self.spectrum(r), moments], 1)


class SliceCache(nn.Module):
    """The identity "extractor" behind ``ctfp cache``: the padded, resized uint8 slice itself,
    flattened (b, size*size), stored as fixed-size binary so that embedding can skip decoding."""

    def __init__(self, size: int = 256) -> None:
        super().__init__()
        self.preprocessing = Preprocessing(image_size=size, **GRAY)
        self.identity = _identity("slices", {"size": size}, size * size, self.preprocessing)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).float()


class ConcatFeatures(nn.Module):
    """Several extractors side by side; each block is L2-normalised per row so none dominates."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        size = max(p.preprocessing.image_size for p in parts)
        self.preprocessing = Preprocessing(image_size=size, **GRAY)
        ids = [p.identity for p in parts]
        digest = hashlib.sha256("".join(i.weights_sha256 for i in ids).encode()).hexdigest()
        self.identity = Identity(
            "+".join(i.model for i in ids),
            "+".join(i.weights for i in ids),
            digest,
            sum(i.dim for i in ids),
            {"parts": [i.preprocessing for i in ids], "block_norm": "l2"},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for part in self.parts:
            s = part.preprocessing.image_size
            xi = x
            if x.shape[-1] != s:
                xi = F.interpolate(x.float(), size=(s, s), mode="bilinear", antialias=True)
                xi = xi.round_().clamp_(0, 255).to(torch.uint8)
            out.append(F.normalize(part(xi).float(), dim=1))
        return torch.cat(out, 1)


def build_features(
    spec: str = "resnet50",
    *,
    weights: str = "imagenet",
    seed: int = 0,
    image_size: int = 224,
) -> nn.Module:
    """Build the feature extractor named by ``spec``: one of resnet50, pixels, spectrum, residual,
    or several joined by ``+`` (``pixels+residual``). ``weights``, ``seed`` and ``image_size``
    apply to resnet50."""
    try:
        check_features(spec)  # the one list of valid names: ctfp.embed.settings.FEATURES
    except ValueError as exc:
        raise CtfpError(str(exc)) from None
    if spec.strip() == "auto":
        raise CtfpError(
            "features 'auto' choose among several feature types in `ctfp run`; embedding needs "
            f"one: {', '.join(FEATURES)}"
        )
    names = [parse_feature(s) for s in spec.split("+")]

    def one(name: str, size: int | None) -> nn.Module:
        if name == "resnet50":
            return build_backbone(weights, seed=seed, image_size=image_size)
        cls = {"pixels": PixelFeatures, "spectrum": SpectrumFeatures, "residual": ResidualFeatures}
        return (cls[name]() if size is None else cls[name](size)).eval()

    parts = [one(n, size) for n, size in names]
    return parts[0] if len(parts) == 1 else ConcatFeatures(parts).eval()


__all__ = [
    "FEATURES",
    "Backbone",
    "ConcatFeatures",
    "PixelFeatures",
    "ResidualFeatures",
    "SpectrumFeatures",
    "build_features",
]
