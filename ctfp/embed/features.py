"""Feature extractors beside ResNet50: raw pixels, log power spectrum, noise residual, concat.

ResNet50 features mostly encode anatomy; a generator's fingerprint lives in high frequencies
(noise residuals, Marra et al. 2019; up-sampling spectra, Durall et al. 2020), memorisation often
in pixels. Each extractor has the backbone's interface: (b, 1, s, s) uint8 in, (b, dim) float
out, its own preprocessing and identity.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctfp.embed.backbone import Backbone, Identity, Preprocessing, build_backbone
from ctfp.embed.settings import (
    FEATURES,
    EmbedSettings,
    check_features,
    parse_feature,
    refuse_auto,
)
from ctfp.exceptions import CtfpError

GRAY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channels="gray")


def _full_precision(forward):
    """Run ``forward`` in float32 even under autocast: bf16 rounding would drown residuals."""

    def wrapped(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(self, x)

    return wrapped


def _describe(module: nn.Module, model: str, config: dict[str, Any], dim: int) -> None:
    """Give an extractor without learned weights its gray preprocessing at ``config["size"]``
    and its identity (its weights: its configuration)."""
    module.preprocessing = pre = Preprocessing(image_size=config["size"], **GRAY)
    digest = hashlib.sha256(json.dumps({model: config}, sort_keys=True).encode()).hexdigest()
    weights = f"none:{json.dumps(config, sort_keys=True)}"
    module.identity = Identity(model, weights, digest, dim, asdict(pre))


_SCRATCH = threading.local()
#: Largest work tensor kept for reuse (bytes): 16 slices of 512 x 512 float32.
SCRATCH_BYTES = 16 * 2**20


def _scratch(
    name: str, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """An uninitialised work tensor named ``name``, reused from batch to batch in this thread
    (on the CPU, up to ``SCRATCH_BYTES``): fresh tensors' page faults cost a third of the
    residual's time. The caller's result must never be a view of it."""
    n = math.prod(shape)
    if like.device.type != "cpu" or n * dtype.itemsize > SCRATCH_BYTES:
        return torch.empty(shape, dtype=dtype, device=like.device)
    store = _SCRATCH.__dict__.setdefault("tensors", {})
    buf = store.get(name)
    if buf is None or buf.numel() < n or buf.dtype != dtype:
        buf = store[name] = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)


class _Spectral(nn.Module):
    """Azimuthally averaged log power spectrum, the shared core of spectrum and residual.

    A subclass's :meth:`sums` reduces a few slices to (b, k) float32 sums, its :meth:`finish`
    turns the whole batch's sums into (b, dim) features.
    """

    #: Slices per :meth:`sums` on a CPU, so that their work tensors stay in cache (measured).
    cpu_slices = 4

    def __init__(self, s: int) -> None:
        super().__init__()
        # The radial bins of the half spectrum rfft2 keeps: each kept frequency's integer
        # radius, its weight (2 for a column that stands for its mirror image too, 1 for
        # columns 0 and s/2) and the full plane's count per radius. (In numpy: torch threads
        # made this 90 times slower.)
        self.n_bins = n_bins = s // 2
        f = np.rint(np.fft.fftfreq(s) * s)
        full = np.rint(np.hypot(f[:, None], f[None, :])).astype(np.int64)
        # Corners beyond Nyquist go to an overflow bin that is dropped.
        counts = np.bincount(np.minimum(full, n_bins).ravel(), minlength=n_bins + 1).clip(min=1)
        g = np.arange(s // 2 + 1)
        r = np.minimum(np.rint(np.hypot(f[:, None], g[None, :])), n_bins).astype(np.int64)
        weights = np.full(r.shape, 2.0, dtype=np.float32)
        weights[:, 0] = 1.0
        if s % 2 == 0:
            weights[:, -1] = 1.0
        window = torch.hann_window(s, periodic=False).numpy()
        tables = {
            "bins": r.ravel(),
            "weights": weights.ravel(),
            "counts": counts.astype(np.float32),
            "window": np.outer(window, window),
        }
        for name, table in tables.items():
            self.register_buffer(name, torch.from_numpy(table), persistent=False)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1, s, s) uint8 -> (b, dim) float32."""
        chunks = x.split(self.cpu_slices) if x.device.type == "cpu" else [x]
        return self.finish(torch.cat([self.sums(chunk) for chunk in chunks]))

    def power_sums(self, centred: torch.Tensor) -> torch.Tensor:
        """(b, s, s) float32 slices centred on their mean (overwritten) -> (b, s/2 + 1) power
        per radius, DC first (:meth:`log_power` of them is the spectrum)."""
        b = centred.shape[0]
        # Half of a real input's symmetric spectrum (rfft2), weighted, in a tenth of the time.
        parts = torch.view_as_real(torch.fft.rfft2(centred.mul_(self.window))).square_()
        power = _scratch("power", parts.shape[:-1], centred, torch.float32)
        power = torch.add(parts[..., 0], parts[..., 1], out=power).view(b, -1)
        sums = torch.zeros((b, self.n_bins + 1), dtype=power.dtype, device=power.device)
        return sums.index_add_(1, self.bins, power.mul_(self.weights))

    def log_power(self, sums: torch.Tensor) -> torch.Tensor:
        """(b, s/2 + 1) :meth:`power_sums` -> (b, s/2) log mean power per radius, DC left out."""
        return torch.log(sums[:, 1:] / self.counts[1:] + 1e-10)


class PixelFeatures(nn.Module):
    """Downsampled raw intensities in [0, 1]: (b, size*size)."""

    model = "pixels"

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        _describe(self, self.model, {"size": size}, size * size)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(torch.float32, copy=True).div_(255.0)


class SliceCache(PixelFeatures):
    """The identity "extractor" behind ``ctfp cache``: the padded, resized uint8 slice itself,
    flattened (b, size*size), stored as fixed-size binary so that embedding can skip decoding."""

    model = "slices"

    def __init__(self, size: int = 256) -> None:
        super().__init__(size)

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).float()


class SpectrumFeatures(_Spectral):
    """Azimuthally averaged log power spectrum of the (Hann-windowed) slice: (b, size/2)."""

    def __init__(self, size: int = 256) -> None:
        super().__init__(size)
        _describe(self, "spectrum", {"size": size}, self.n_bins)

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        gray = _scratch("gray", (x.shape[0], *x.shape[2:]), x, torch.float32)
        gray.copy_(x[:, 0]).div_(255.0)
        return self.power_sums(gray.sub_(gray.mean(dim=(-2, -1), keepdim=True)))

    def finish(self, sums: torch.Tensor) -> torch.Tensor:
        return self.log_power(sums)


class ResidualFeatures(_Spectral):
    """Noise residual (slice minus a Gaussian-denoised copy), summarised by its log power spectrum
    and its moments (std, mean |r|, skewness, excess kurtosis): (b, size/2 + 4)."""

    cpu_slices = 2  # its work tensors are four times the spectrum's

    def __init__(self, size: int = 256, sigma: float = 1.0) -> None:
        super().__init__(size)
        radius = max(1, math.ceil(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * sigma**2))
        # The taps as Python numbers (float32 values): the blur is a few shifted adds.
        self.taps = (g / g.sum()).tolist()
        self.radius = radius
        config = {"size": size, "sigma": sigma, "denoise": "gaussian"}
        _describe(self, "residual", config, self.n_bins + 4)

    def blur(self, p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The separable Gaussian blur of the (b, s, s) slices in the middle of ``p``
        (b, s + 2r, s + 2r) float32, edges reflected, into ``out``: shifted adds, as a
        1-channel ``conv2d`` runs 40x slower on a CPU (same products, same bits on the tests).
        """
        b, s, taps = out.shape[0], out.shape[-1], self.taps
        rows = _scratch("rows", (b, p.shape[1], s), p, p.dtype)
        torch.mul(p[..., 0:s], taps[0], out=rows)
        for j in range(1, len(taps)):
            rows.add_(p[..., j : j + s], alpha=taps[j])
        torch.mul(rows[:, 0:s], taps[0], out=out)
        for j in range(1, len(taps)):
            out.add_(rows[:, j : j + s], alpha=taps[j])
        return out

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        b, s, r = x.shape[0], x.shape[-1], self.radius
        # Padded in uint8 (a quarter of the bytes); r, r^2, r^3, r^4 side by side, summed at once.
        p = _scratch("pad", (b, s + 2 * r, s + 2 * r), x, torch.float32)
        p.copy_(F.pad(x, (r, r, r, r), mode="reflect")[:, 0]).div_(255.0)
        work = _scratch("residual", (b, 4, s * s), x, torch.float32)
        res = work[:, 0]
        blurred = self.blur(p, work[:, 1].view(b, s, s))
        torch.sub(p[:, r : r + s, r : r + s], blurred, out=res.view(b, s, s))
        abs_sum = torch.abs(res, out=work[:, 1]).sum(1, keepdim=True)
        res.sub_(res.mean(1, keepdim=True))  # centred, in place
        torch.mul(res, res, out=work[:, 1])
        torch.mul(work[:, 1:2], work[:, 0:2], out=work[:, 2:4])
        moments = torch.cat([abs_sum, work[:, 1:].sum(2)], 1)
        return torch.cat([self.power_sums(res.view(b, s, s)), moments], 1)

    def finish(self, sums: torch.Tensor) -> torch.Tensor:
        k, pixels = self.n_bins + 1, self.window.numel()
        mean_abs, m2, m3, m4 = (sums[:, k:] / pixels).unbind(1)
        std = m2.sqrt().clamp_min(1e-8)
        moments = [torch.log(std), torch.log(mean_abs + 1e-8), m3 / std**3, m4 / std**4 - 3.0]
        return torch.cat([self.log_power(sums[:, :k]), torch.stack(moments, 1)], 1)


def join(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """The joined embedding of several feature types: each (b, d_i) block L2-normalised per row
    so that none dominates, side by side: (b, sum d_i) float32."""
    return torch.cat([F.normalize(b.float(), dim=1) for b in blocks], 1)


class ConcatFeatures(nn.Module):
    """Several extractors side by side (:func:`join`). Its input is one uint8 batch per part,
    ``views[i]`` (b, 1, s_i, s_i) at ``parts[i].preprocessing`` (no preprocessing of its own).
    """

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        ids = [p.identity for p in parts]
        digest = hashlib.sha256("".join(i.weights_sha256 for i in ids).encode()).hexdigest()
        self.identity = Identity(
            "+".join(i.model for i in ids),
            "+".join(i.weights for i in ids),
            digest,
            sum(i.dim for i in ids),
            # "resize": each part from the decoded slice; keeps 0.3.0's joined shards (resized
            # from the largest part's side) from being mixed with these.
            {"parts": [i.preprocessing for i in ids], "block_norm": "l2", "resize": "per-part"},
        )

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        return join([part(x) for part, x in zip(self.parts, views, strict=True)])


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
        check_features(spec)
    except ValueError as exc:
        raise CtfpError(str(exc)) from None
    refuse_auto(spec)

    def one(name: str, size: int | None) -> nn.Module:
        if name == "resnet50":
            return build_backbone(weights, seed=seed, image_size=image_size)
        cls = {"pixels": PixelFeatures, "spectrum": SpectrumFeatures, "residual": ResidualFeatures}
        return (cls[name]() if size is None else cls[name](size)).eval()

    parts = [one(*parse_feature(s)) for s in spec.split("+")]
    return parts[0] if len(parts) == 1 else ConcatFeatures(parts).eval()


def features_factory(settings: EmbedSettings) -> Callable[[], nn.Module]:
    """The factory of ``settings.features`` with the weights and input side of ``settings``."""
    return functools.partial(
        build_features,
        settings.features,
        weights=settings.weights,
        seed=settings.weights_seed,
        image_size=settings.image_size,
    )


__all__ = [
    "FEATURES",
    "Backbone",
    "ConcatFeatures",
    "PixelFeatures",
    "ResidualFeatures",
    "SpectrumFeatures",
    "build_features",
    "features_factory",
    "join",
]
