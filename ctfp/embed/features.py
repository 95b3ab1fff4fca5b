"""Feature extractors beside ResNet50: raw pixels, log power spectrum, noise residual, concat.

ImageNet ResNet50 features mostly encode anatomy. A generator's fingerprint lives in high
frequencies: noise residuals (Marra et al. 2019, "Do GANs leave artificial fingerprints?") and
spectral distortions of up-sampling (Durall et al. 2020). Memorisation is often visible in pixels
before features. Each extractor here has the backbone's interface — (b, 1, s, s) uint8 in,
(b, dim) float out, its own preprocessing and identity — so it is stored in the same shard format
and never mixed with another.
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
    """Run ``forward`` in float32 even under autocast: residuals are small differences that
    bf16/fp16 rounding would drown."""

    def wrapped(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(self, x)

    return wrapped


def _describe(module: nn.Module, model: str, config: dict[str, Any], dim: int) -> None:
    """Give an extractor without learned weights its gray preprocessing at ``config["size"]``
    and its identity, whose weights are its configuration."""
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
    (on the CPU, up to ``SCRATCH_BYTES``). A fresh 4 MiB tensor costs about a thousand page
    faults, which took a third of the residual's time on a 2-core VM; CUDA's caching
    allocator already reuses memory. The caller's result must never be a view of it."""
    n = math.prod(shape)
    if like.device.type != "cpu" or n * dtype.itemsize > SCRATCH_BYTES:
        return torch.empty(shape, dtype=dtype, device=like.device)
    store = _SCRATCH.__dict__.setdefault("tensors", {})
    buf = store.get(name)
    if buf is None or buf.numel() < n or buf.dtype != dtype:
        buf = store[name] = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)


class _Spectral(nn.Module):
    """Azimuthally averaged log power spectrum, the shared core of spectrum and residual."""

    def __init__(self, s: int) -> None:
        super().__init__()
        # The radial bins over the half of an s x s spectrum that a real FFT keeps (rfft2:
        # s x (s//2 + 1); the other half mirrors it, with the same radii): the integer radius of
        # each kept frequency, its weight (2 for a column that also stands for its mirror image,
        # 1 for columns 0 and s/2, their own) and the full plane's frequencies per radius.
        self.n_bins = n_bins = s // 2
        f = torch.fft.fftfreq(s) * s
        full = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long()
        # Corners beyond Nyquist go to an overflow bin that is dropped.
        counts = torch.bincount(full.clamp(max=n_bins).flatten(), minlength=n_bins + 1).clamp(min=1)
        g = torch.fft.rfftfreq(s) * s
        r = torch.sqrt(f[:, None] ** 2 + g[None, :] ** 2).round().long().clamp(max=n_bins)
        weights = torch.full(r.shape, 2.0)
        weights[:, 0] = 1.0
        if s % 2 == 0:
            weights[:, -1] = 1.0
        self.register_buffer("bins", r.flatten(), persistent=False)
        self.register_buffer("weights", weights.flatten(), persistent=False)
        self.register_buffer("counts", counts.float(), persistent=False)
        window = torch.hann_window(s, periodic=False)
        self.register_buffer("window", window[:, None] * window[None, :], persistent=False)

    def log_power(self, centred: torch.Tensor) -> torch.Tensor:
        """(b, s, s) float32 slices centred on their mean (overwritten) -> (b, s/2) log power
        per radius (DC excluded)."""
        b, s = centred.shape[0], centred.shape[-1]
        # A real input's spectrum is symmetric: half of it (rfft2), each column weighted by the
        # columns it stands for, sums to what the full complex FFT gives, in a tenth of the time.
        f = _scratch("fft", (b, s, s // 2 + 1), centred, torch.complex64)
        torch.fft.rfft2(centred.mul_(self.window), out=f)
        power = _scratch("power", f.shape, centred, torch.float32)
        torch.mul(f.real, f.real, out=power).addcmul_(f.imag, f.imag)
        power = power.view(b, -1).mul_(self.weights)
        sums = torch.zeros((b, self.n_bins + 1), dtype=power.dtype, device=power.device)
        sums.index_add_(1, self.bins, power)
        return torch.log(sums.div_(self.counts).add_(1e-10))[:, 1 : self.n_bins + 1]


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

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _scratch("gray", (x.shape[0], *x.shape[2:]), x, torch.float32).copy_(x[:, 0])
        x = x.div_(255.0)
        return self.log_power(x.sub_(x.mean(dim=(-2, -1), keepdim=True)))


class ResidualFeatures(_Spectral):
    """Noise residual (slice minus a Gaussian-denoised copy), summarised by its log power spectrum
    and its moments (std, mean |r|, skewness, excess kurtosis): (b, size/2 + 4)."""

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

    def blur(self, p: torch.Tensor, s: int) -> torch.Tensor:
        """The separable Gaussian blur, edges reflected, of the (b, s, s) slices in the middle
        of ``p`` (b, s + 2r, s + 2r) float32, whose border it fills: (b, s, s), a work tensor
        (overwritten by the next call).

        Shifted adds rather than ``conv2d``: a 1-channel convolution runs 40x slower on a CPU
        (mkldnn is built for many channels); these add the same products tap by tap (on the
        CT slices of the tests, the convolution's result to the last bit).
        """
        b, r, taps = p.shape[0], self.radius, self.taps
        for j in range(1, r + 1):  # reflect: the edge pixel itself is not repeated
            p[:, r : r + s, r - j] = p[:, r : r + s, r + j]
            p[:, r : r + s, r + s - 1 + j] = p[:, r : r + s, r + s - 1 - j]
        for j in range(1, r + 1):
            p[:, r - j] = p[:, r + j]
            p[:, r + s - 1 + j] = p[:, r + s - 1 - j]
        rows = torch.mul(p[..., 0:s], taps[0], out=_scratch("rows", (b, s + 2 * r, s), p, p.dtype))
        for j in range(1, len(taps)):
            rows.add_(p[..., j : j + s], alpha=taps[j])
        out = torch.mul(rows[:, 0:s], taps[0], out=_scratch("blur", (b, s, s), p, p.dtype))
        for j in range(1, len(taps)):
            out.add_(rows[:, j : j + s], alpha=taps[j])
        return out

    @_full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, r = x.shape[0], x.shape[-1], self.radius
        # The gray slices straight into the middle of the blur's padded work tensor.
        p = _scratch("pad", (b, s + 2 * r, s + 2 * r), x, torch.float32)
        gray = p[:, r : r + s, r : r + s]
        gray.copy_(x[:, 0]).div_(255.0)
        blurred = self.blur(p, s)
        res = torch.sub(gray, blurred, out=blurred)  # the residual, over the blur
        flat = res.view(b, -1)
        work = _scratch("moments", flat.shape, res, torch.float32)
        mean_abs = torch.abs(flat, out=work).mean(1)
        flat.sub_(flat.mean(1, keepdim=True))  # centred, in place
        square = _scratch("square", flat.shape, res, torch.float32)
        std = torch.mul(flat, flat, out=square).mean(1).sqrt().clamp_min(1e-8)
        skew = torch.mul(square, flat, out=work).mean(1) / std**3
        kurt = square.square_().mean(1) / std**4 - 3.0
        moments = torch.stack([torch.log(std), torch.log(mean_abs + 1e-8), skew, kurt], 1)
        return torch.cat([self.log_power(res), moments], 1)


def join(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """The joined embedding of several feature types: each (b, d_i) block L2-normalised per row
    so that none dominates, side by side: (b, sum d_i) float32. The one definition, used by
    :class:`ConcatFeatures` and by the mapper when it joins parts it computed once for several
    outputs."""
    return torch.cat([F.normalize(b.float(), dim=1) for b in blocks], 1)


class ConcatFeatures(nn.Module):
    """Several extractors side by side (:func:`join`), each fed the decoded slice resized to its
    own input side (its own preprocessing), exactly what it is fed alone.

    Its input is one uint8 batch per part, ``views[i]`` (b, 1, s_i, s_i) at
    ``parts[i].preprocessing``; it has no single preprocessing of its own.
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
            # "resize": each part from the decoded slice. Joined shards of ctfp 0.3.0 resized
            # every part from the largest part's side (other pixels): this field keeps the two
            # from being mixed (readers and resumed writers refuse differing preprocessing).
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
        check_features(spec)  # the one list of valid names: ctfp.embed.settings.FEATURES
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
