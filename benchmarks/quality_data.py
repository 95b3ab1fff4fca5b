"""ImageCLEFmedical-GANs-style benchmark data from generators trained here, on the CPU.

The real slices are the 188 axial chest CT PNGs (256x256, 8-bit) of ``lung-pet-ct-dx``: patient
A0001 (series s2 and s3, 64 slices each) and A0002 (series s2 and s3, 30 slices each). Three
kinds of generator are trained on them from scratch, deterministically (fixed seeds, two CPU
threads); :func:`make_generator` names five settings of them (pca, vae, vae64, vae-up, gan):

- :class:`PCAGaussian`: PCA (numpy SVD) of the slices at 128x128, a diagonal Gaussian on the
  PCA coefficients; samples are mean + sum of components with Gaussian coefficients. Samples
  are blurry slices with faint "ghost" outlines of other slices superposed.
- :class:`ConvVAE`: a small convolutional VAE (stride-2 convs down, transposed convs up) at 128x128
  or 64x64, trained with Adam for a fixed number of epochs; samples decode ``z ~ N(0, I)``.
  Samples are blurry slices (body outline, table, lungs, heart or liver), some of them
  memorised training slices, some blends of two with mottled lungs. ``vae-up`` is the 64x64 one
  with a decoder of nearest-neighbour 2x upsampling + 3x3 convs instead of transposed convs.
- :class:`DCGAN`: a small DCGAN at 64x64 (transposed convs with BatchNorm up from 4x4, a
  spectral-norm conv discriminator), non-saturating loss, Adam, a fixed number of epochs.

All work at their internal size and upsample every output to 256x256 with PIL bilinear, so the
upsampling is part of each generator's fingerprint (128 -> 256 and 64 -> 256 leave different
ones). ``strength="strong"`` trains each to memorise more (twice the epochs; more PCA
components, full temperature). Two datasets are written:

- task 1 (membership): ``task1/train/used``, ``task1/train/not_used``, ``task1/generated``,
  ``task1/test`` and ``task1_truth.csv`` (``id,label``, 1 = used for training), with a 128x128
  ConvVAE trained on the used slices (see :func:`split_used` for the split);
- task 2 (attribution): ``task2/test``, ``task2/train/<generator>`` and ``task2_truth.csv``
  (``id,cluster``, the index of the generator that made the image), with the three generators
  of :data:`TASK2_GENERATORS`.

    python benchmarks/quality_data.py --out DIR [--seed 0] [--verbose]

prints one JSON line with the paths written and the training seconds of each generator. On two
CPU cores the whole build takes about 2-2.5 minutes (the task 1 VAE about 60 s, the task 2 VAEs
about 35 s and 25 s, the PCA under 1 s). The same seed gives byte-identical files on the same
machine and torch build (checked by building twice); other CPUs or torch versions may round
differently in the VAE training and so give different, equally valid, images.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-pet-ct-dx"
OUT_SIZE = 256
#: torch threads for training and sampling (results are reproducible for a fixed count).
THREADS = 2
#: task 1 defaults: samples in generated/, block length of the used / not-used interleave.
N_GENERATED = 300
BLOCK = 2
#: task 2 defaults: test and labelled training images per generator.
N_TEST_EACH = 80
N_TRAIN_EACH = 10

Log = Callable[[str], None]


def _no_log(message: str) -> None:
    """Default ``log``: drop the message."""


# -- real slices -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slice:
    """One real slice: where it comes from and its 256x256 uint8 pixels."""

    patient: str
    series: str
    instance: int
    pixels: np.ndarray

    @property
    def name(self) -> str:
        """``<patient>_<series>_<instance:03d>``, the PNG's stem in the source folder."""
        return f"{self.patient}_{self.series}_{self.instance:03d}"


def load_slices(data_root: Path | None = None) -> list[Slice]:
    """The real slices listed in ``slices.csv``, sorted by (patient, series, instance).

    Parameters
    ----------
    data_root : Path or None
        Folder with ``slices.csv`` and ``png/``; defaults to the shared ``lung-pet-ct-dx``.

    Returns
    -------
    list of Slice
    """
    root = Path(data_root) if data_root is not None else DEFAULT_DATA
    with open(root / "slices.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    slices = []
    for row in rows:
        with Image.open(root / row["png"]) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)
        if pixels.shape != (OUT_SIZE, OUT_SIZE):
            raise ValueError(f"{row['png']}: expected {OUT_SIZE}x{OUT_SIZE}, got {pixels.shape}")
        slices.append(Slice(row["patient"], row["series"], int(row["instance"]), pixels))
    slices.sort(key=lambda s: (s.patient, s.series, s.instance))
    return slices


def _stack(slices: Sequence[Slice]) -> np.ndarray:
    return np.stack([s.pixels for s in slices])


# -- resizing ----------------------------------------------------------------------------------
def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) uint8 or float in [0, 255] -> (n, size, size) float32, PIL bilinear each."""
    out = np.empty((len(images), size, size), dtype=np.float32)
    for i, img in enumerate(images):
        im = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
        out[i] = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _to_uint8_256(images: np.ndarray) -> np.ndarray:
    """(n, s, s) float in [0, 255] -> (n, 256, 256) uint8, upsampled with PIL bilinear."""
    up = images if images.shape[-1] == OUT_SIZE else _resize(images, OUT_SIZE)
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


# -- generators --------------------------------------------------------------------------------
class PCAGaussian:
    """PCA of downsampled slices with a diagonal Gaussian on the coefficients.

    ``fit`` downsamples to ``size`` x ``size`` (PIL bilinear), centres the flattened images and
    takes their SVD; it keeps the fewest leading components that explain ``variance`` of the
    total (at most ``n_train - 1``). ``sample`` draws each coefficient from ``N(0, t^2 s_k^2)``
    (``s_k^2`` the variance of component ``k`` over the training set, ``t`` the temperature),
    reconstructs, clips to [0, 255] and upsamples to 256x256 with PIL bilinear.

    Parameters
    ----------
    size : int
        Internal image side.
    variance : float
        Fraction of the variance the kept components explain.
    temperature : float
        Scale on the coefficients' standard deviations when sampling.
    """

    def __init__(self, size: int = 128, variance: float = 0.95, temperature: float = 0.8) -> None:
        self.size = size
        self.variance = variance
        self.temperature = temperature

    def fit(self, images: np.ndarray, seed: int = 0, log: Log = _no_log) -> PCAGaussian:
        """Fit on ``images``, (n, 256, 256) uint8; ``seed`` is unused (the fit is exact).

        Returns
        -------
        PCAGaussian
            ``self``, with ``mean_``, ``components_`` (k, size*size), ``std_`` (k,) and
            ``train_seconds_``.
        """
        start = time.perf_counter()
        x = _resize(images, self.size).reshape(len(images), -1).astype(np.float64)
        self.mean_ = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        var = s**2 / max(len(x) - 1, 1)
        ratio = np.cumsum(var) / var.sum()
        k = int(min(np.searchsorted(ratio, self.variance) + 1, max(len(x) - 1, 1)))
        self.components_ = vt[:k]
        self.std_ = np.sqrt(var[:k])
        self.train_seconds_ = time.perf_counter() - start
        log(f"  pca: {k} components, {ratio[k - 1]:.1%} of the variance")
        return self

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` samples, (n, 256, 256) uint8, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        coef = rng.standard_normal((n, len(self.std_))) * self.std_ * self.temperature
        x = np.clip(self.mean_ + coef @ self.components_, 0, 255)
        return _to_uint8_256(x.reshape(n, self.size, self.size).astype(np.float32))


def _up(decoder: str, c_in: int, c_out: int) -> nn.Module:
    """One 2x upsampling layer of a VAE decoder (see :class:`_VAENet`)."""
    if decoder == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    if decoder in ("nearest", "bilinear"):
        up = nn.Upsample(scale_factor=2, mode=decoder)
        return nn.Sequential(up, nn.Conv2d(c_in, c_out, 3, 1, 1))
    raise ValueError(f"unknown decoder {decoder!r}; choose transpose, nearest or bilinear")


class _VAENet(nn.Module):
    """Stride-2 4x4 convs down to a small map, a linear bottleneck, then up again.

    ``decoder="transpose"`` goes up with stride-2 4x4 transposed convs; ``"nearest"`` or
    ``"bilinear"`` with ``nn.Upsample(scale_factor=2)`` of that mode, each followed by a 3x3 conv.
    """

    def __init__(
        self, size: int, latent: int, channels: Sequence[int], decoder: str = "transpose"
    ) -> None:
        super().__init__()
        self.channels = list(channels)
        self.grid = size // 2 ** len(self.channels)
        enc: list[nn.Module] = []
        c_in = 1
        for c in self.channels:
            enc += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = c_in * self.grid * self.grid
        self.to_stats = nn.Linear(flat, 2 * latent)
        self.from_latent = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.2))
        dec: list[nn.Module] = []
        rev = self.channels[::-1]
        for c, c_out in zip(rev, [*rev[1:], 0], strict=True):
            dec.append(_up(decoder, c, c_out or 1))
            if c_out:
                dec.append(nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(len(z), self.channels[-1], self.grid, self.grid)
        return torch.sigmoid(self.decoder(h))


class ConvVAE:
    """A small convolutional VAE trained from scratch on the CPU.

    The encoder has one stride-2 4x4 conv (LeakyReLU) per entry of ``channels``, then a linear
    layer to the latent mean and log-variance; the decoder mirrors it with transposed convs (or,
    with ``decoder="nearest"`` / ``"bilinear"``, 2x ``nn.Upsample`` + 3x3 convs, which leave no
    transposed-conv checkerboard) and a sigmoid. Training minimises the pixel-summed squared
    error (images in [0, 1]) plus ``beta`` times the KL divergence, with Adam (one-cycle schedule
    peaking at ``lr``) and batches of ``batch``, for ``epochs`` epochs; it partly memorises a
    small training set (the reconstruction error of training slices is lower than that of their
    neighbours). ``sample`` decodes ``z ~ N(0, temperature^2 I)``, scales to [0, 255] and
    upsamples to 256x256 (PIL bilinear). ``beta=4`` gives smoother, more varied prior samples
    than ``beta=1``; ``temperature < 1`` was tried and gives blurrier blends (the training codes
    lie away from the prior's centre), so it defaults to 1.

    Parameters
    ----------
    size : int
        Internal image side (a multiple of ``2 ** len(channels)``).
    latent : int
        Latent dimension.
    channels : sequence of int
        Encoder widths, one per stride-2 layer.
    epochs, batch, lr, beta, temperature
        Training and sampling settings, see above.
    decoder : str
        ``"transpose"`` (transposed convs), ``"nearest"`` or ``"bilinear"`` (upsample + conv).
    """

    def __init__(
        self,
        size: int = 128,
        latent: int = 32,
        channels: Sequence[int] = (16, 32, 64, 128, 128),
        epochs: int = 150,
        batch: int = 16,
        lr: float = 2e-3,
        beta: float = 4.0,
        temperature: float = 1.0,
        decoder: str = "transpose",
    ) -> None:
        if size % 2 ** len(channels):
            raise ValueError(f"size {size} is not a multiple of 2**{len(channels)}")
        self.size = size
        self.latent = latent
        self.channels = tuple(channels)
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.beta = beta
        self.temperature = temperature
        self.decoder = decoder

    def fit(self, images: np.ndarray, seed: int = 0, log: Log = _no_log) -> ConvVAE:
        """Train on ``images``, (n, 256, 256) uint8, from weights and batches seeded by ``seed``.

        Returns
        -------
        ConvVAE
            ``self``, with ``net_``, ``losses_`` (mean loss per image, per epoch) and
            ``train_seconds_``.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            self._train(images, seed, log)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, images: np.ndarray, seed: int, log: Log) -> None:
        start = time.perf_counter()
        x = torch.from_numpy(_resize(images, self.size) / 255.0).unsqueeze(1)
        torch.manual_seed(seed)
        net = _VAENet(self.size, self.latent, self.channels, self.decoder)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        steps = self.epochs * -(-len(x) // self.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=steps)
        gen = torch.Generator().manual_seed(seed)
        self.losses_: list[float] = []
        net.train()
        for epoch in range(self.epochs):
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for i in range(0, len(x), self.batch):
                xb = x[order[i : i + self.batch]]
                mu, logvar = net.encode(xb)
                eps = torch.randn(mu.shape, generator=gen)
                recon = net.decode(mu + eps * torch.exp(0.5 * logvar))
                rec = (recon - xb).pow(2).sum(dim=(1, 2, 3))
                kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
                loss = (rec + self.beta * kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(xb)
            self.losses_.append(total / len(x))
            if (epoch + 1) % 10 == 0 or epoch + 1 == self.epochs:
                log(f"  vae epoch {epoch + 1}/{self.epochs} loss {self.losses_[-1]:.1f}")
        net.eval()
        self.net_ = net
        self.train_seconds_ = time.perf_counter() - start

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` samples, (n, 256, 256) uint8, reproducible from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn((n, self.latent), generator=gen) * self.temperature
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            out = torch.cat([self.net_.decode(zb) for zb in z.split(64)])
        finally:
            torch.set_num_threads(threads)
        return _to_uint8_256(out[:, 0].numpy() * 255.0)

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Decode the posterior means of ``images``, (n, 256, 256) uint8 -> same (a check)."""
        x = torch.from_numpy(_resize(images, self.size) / 255.0).unsqueeze(1)
        mu, _ = self.net_.encode(x)
        return _to_uint8_256(self.net_.decode(mu)[:, 0].numpy() * 255.0)


def spread(samples: np.ndarray) -> float:
    """Mean over pixels of the standard deviation over ``samples`` (n, h, w), in grey levels.

    0 when all samples are identical (full mode collapse); the 96 used real slices give about 45.
    """
    return float(np.asarray(samples, dtype=np.float64).std(0).mean())


class _DCGenerator(nn.Module):
    """DCGAN generator: linear to a 4x4 map, stride-2 transposed convs (BatchNorm, ReLU), tanh."""

    def __init__(self, latent: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.c0 = channels[0]
        self.project = nn.Sequential(
            nn.Linear(latent, self.c0 * 16, bias=False), nn.BatchNorm1d(self.c0 * 16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for c, c_out in zip(channels, [*channels[1:], 1], strict=True):
            layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1, bias=c_out == 1))
            layers += [nn.BatchNorm2d(c_out), nn.ReLU()] if c_out != 1 else [nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(len(z), self.c0, 4, 4))


class _DCDiscriminator(nn.Module):
    """DCGAN discriminator: stride-2 4x4 convs with LeakyReLU down to 4x4, a linear logit."""

    def __init__(self, size: int, channels: Sequence[int], spectral: bool) -> None:
        super().__init__()
        norm = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [norm(nn.Conv2d(c_in, c, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c
        grid = size // 2 ** len(channels)
        self.net = nn.Sequential(*layers, nn.Flatten(), norm(nn.Linear(c_in * grid * grid, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DCGAN:
    """A small DCGAN trained from scratch on the CPU.

    The generator maps ``z ~ N(0, I)`` by a linear layer to a 4x4 map of ``channels[0]``
    channels, then doubles the side with stride-2 4x4 transposed convs (BatchNorm, ReLU) through
    ``channels`` and a last one to one channel with tanh, so ``size = 4 * 2 ** len(channels)``.
    The discriminator mirrors it with stride-2 4x4 convs and LeakyReLU(0.2) (spectral norm on
    every layer if ``spectral``) and a linear logit. Both train with Adam (``lr``, betas 0.5,
    0.999) on the non-saturating loss (D: ``softplus(-D(x)) + softplus(D(G(z)))``, G:
    ``softplus(-D(G(z)))``), one D and one G step per batch of ``batch`` real slices (images in
    [-1, 1]), for ``epochs`` epochs. Batches of 8 rather than 16 (twice the steps for the same
    compute) bring the samples much closer to training slices in the same time. On a hundred
    slices it memorises and may partly mode-collapse. ``sample`` runs the generator in eval mode
    (BatchNorm running statistics, so a sample does not depend on its batch; train-mode samples
    were checked to look the same), scales to [0, 255] and upsamples to 256x256 (PIL bilinear).

    Parameters
    ----------
    size : int
        Internal image side, ``4 * 2 ** len(channels)``.
    latent : int
        Latent dimension.
    channels : sequence of int
        Generator widths from the 4x4 map up; the discriminator uses them reversed.
    epochs, batch, lr : int, int, float
        Training settings, see above.
    spectral : bool
        Spectral norm on the discriminator's layers.
    """

    def __init__(
        self,
        size: int = 64,
        latent: int = 64,
        channels: Sequence[int] = (128, 64, 32, 16),
        epochs: int = 300,
        batch: int = 8,
        lr: float = 2e-4,
        spectral: bool = True,
    ) -> None:
        if size != 4 * 2 ** len(channels):
            raise ValueError(f"size {size} != 4 * 2**{len(channels)}")
        self.size = size
        self.latent = latent
        self.channels = tuple(channels)
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.spectral = spectral

    def fit(self, images: np.ndarray, seed: int = 0, log: Log = _no_log) -> DCGAN:
        """Train on ``images``, (n, 256, 256) uint8, from weights and batches seeded by ``seed``.

        Returns
        -------
        DCGAN
            ``self``, with ``net_`` (the generator), ``d_losses_`` and ``g_losses_`` (mean per
            batch, per epoch), ``spread_`` (mean over pixels of the std over 16 samples, in
            grey levels) and ``train_seconds_``.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            self._train(images, seed, log)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, images: np.ndarray, seed: int, log: Log) -> None:
        start = time.perf_counter()
        x = torch.from_numpy(_resize(images, self.size) / 127.5 - 1.0).unsqueeze(1)
        torch.manual_seed(seed)
        g_net = _DCGenerator(self.latent, self.channels)
        d_net = _DCDiscriminator(self.size, self.channels[::-1], self.spectral)
        betas = (0.5, 0.999)
        g_opt = torch.optim.Adam(g_net.parameters(), lr=self.lr, betas=betas)
        d_opt = torch.optim.Adam(d_net.parameters(), lr=self.lr, betas=betas)
        gen = torch.Generator().manual_seed(seed)
        softplus = nn.functional.softplus
        self.d_losses_: list[float] = []
        self.g_losses_: list[float] = []
        g_net.train()
        d_net.train()
        for epoch in range(self.epochs):
            order = torch.randperm(len(x), generator=gen)
            d_total = g_total = 0.0
            n_batches = 0
            for i in range(0, len(x), self.batch):
                xb = x[order[i : i + self.batch]]
                if len(xb) < 2:  # BatchNorm needs two samples
                    continue
                z = torch.randn((len(xb), self.latent), generator=gen)
                fake = g_net(z)
                d_loss = softplus(-d_net(xb)).mean() + softplus(d_net(fake.detach())).mean()
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                g_loss = softplus(-d_net(fake)).mean()
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                d_total += float(d_loss.detach())
                g_total += float(g_loss.detach())
                n_batches += 1
            self.d_losses_.append(d_total / max(n_batches, 1))
            self.g_losses_.append(g_total / max(n_batches, 1))
            if (epoch + 1) % 25 == 0 or epoch + 1 == self.epochs:
                log(
                    f"  gan epoch {epoch + 1}/{self.epochs} d {self.d_losses_[-1]:.3f}"
                    f" g {self.g_losses_[-1]:.3f}"
                )
        g_net.eval()
        self.net_ = g_net
        self.train_seconds_ = time.perf_counter() - start
        self.spread_ = spread(self._decode(torch.randn((16, self.latent), generator=gen)).numpy())
        log(f"  gan: mean pixel std over 16 samples {self.spread_:.1f} grey levels")

    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Generator outputs for ``z`` in eval mode, (n, size, size) in [0, 255]."""
        return torch.cat([(self.net_(zb)[:, 0] + 1.0) * 127.5 for zb in z.split(64)])

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` samples, (n, 256, 256) uint8, reproducible from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn((n, self.latent), generator=gen)
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            out = self._decode(z)
        finally:
            torch.set_num_threads(threads)
        return _to_uint8_256(out.numpy())


GenerativeModel = PCAGaussian | ConvVAE | DCGAN


#: memorisation strengths of :func:`make_generator`.
STRENGTHS = ("normal", "strong")
GENERATORS = ("pca", "vae", "vae64", "vae-up", "gan")


def make_generator(name: str, strength: str = "normal") -> GenerativeModel:
    """A generator by name.

    ``"pca"``: :class:`PCAGaussian` at 128x128, 95% of the variance, temperature 0.8.
    ``"vae"``: :class:`ConvVAE` at 128x128, five stride-2 layers (16, 32, 64, 128, 128 channels,
    down to 4x4), latent 32, beta 4, 150 epochs (about 1M parameters).
    ``"vae64"``: :class:`ConvVAE` at 64x64, four stride-2 layers (32, 64, 128, 128 channels, down
    to 4x4), latent 16, beta 2, 150 epochs.
    ``"vae-up"``: :class:`ConvVAE` as ``"vae64"`` (64x64, same encoder, latent, beta and epochs)
    but whose decoder upsamples with 2x nearest ``nn.Upsample`` + 3x3 convs ("resize-conv")
    instead of transposed convs. (At 128x128 that decoder costs about 2.5 times the transposed
    one, over two minutes for 150 epochs on two cores.)
    ``"gan"``: :class:`DCGAN` at 64x64 (generator 128, 64, 32, 16 channels from 4x4, latent 64;
    discriminator 16, 32, 64, 128 with spectral norm), batches of 8, 300 epochs.

    On two idle CPU cores (96 used slices) ``"vae-up"`` trains in about 56 s and ``"gan"`` in
    about 77 s; with other work on the cores, two torch threads slow down far more than the load
    suggests (the GAN took over ten minutes at a load of 5).

    ``strength="strong"`` makes each memorise more: twice the epochs (so twice the time) for the
    VAEs and the GAN; 99% of the variance and temperature 1.0 for the PCA.

    Returns
    -------
    PCAGaussian, ConvVAE or DCGAN
        Unfitted.
    """
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose {' or '.join(STRENGTHS)}")
    strong = strength == "strong"
    epochs = 2 if strong else 1
    if name == "pca":
        return PCAGaussian(variance=0.99, temperature=1.0) if strong else PCAGaussian()
    if name == "vae":
        return ConvVAE(epochs=150 * epochs)
    if name == "vae64":
        return ConvVAE(
            size=64, latent=16, channels=(32, 64, 128, 128), epochs=150 * epochs, beta=2.0
        )
    if name == "vae-up":
        return ConvVAE(
            size=64,
            latent=16,
            channels=(32, 64, 128, 128),
            epochs=150 * epochs,
            beta=2.0,
            decoder="nearest",
        )
    if name == "gan":
        return DCGAN(epochs=300 * epochs)
    raise ValueError(f"unknown generator {name!r}; choose {', '.join(GENERATORS)}")


# -- writing -----------------------------------------------------------------------------------
def _save_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(path)


def _write_images(folder: Path, images: np.ndarray, names: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names, strict=True):
        _save_png(folder / f"{name}.png", img)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _write_truth(path: Path, column: str, rows: Sequence[tuple[str, int]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", column])
        w.writerows(sorted(rows))


def save_preview(path: Path, rows: dict[str, np.ndarray], tile: int = 128) -> Path:
    """A grid PNG, one labelled row per entry of ``rows`` ((n, 256, 256) uint8 each).

    Images are shrunk to ``tile`` pixels (PIL bilinear); the label is drawn at the left of each
    row. Rows may have different lengths.

    Returns
    -------
    Path
        ``path``.
    """
    from PIL import ImageDraw

    label_w, gap = 150, 4
    cols = max(len(v) for v in rows.values())
    width = label_w + cols * (tile + gap)
    height = len(rows) * (tile + gap)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows.items()):
        y = r * (tile + gap)
        draw.text((4, y + tile // 2 - 6), label, fill=0)
        for c, img in enumerate(images):
            im = Image.fromarray(np.asarray(img, dtype=np.uint8), mode="L")
            canvas.paste(
                im.resize((tile, tile), Image.Resampling.BILINEAR), (label_w + c * (tile + gap), y)
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# -- task 1 ------------------------------------------------------------------------------------
def split_used(slices: Sequence[Slice], block: int = 2) -> np.ndarray:
    """(n,) bool, True = "used": alternating blocks of ``block`` slices within each series.

    Slices ``0..block-1`` of each (patient, series) are used, the next ``block`` are not, and so
    on (in z order), so both halves cover the same anatomy from apex to abdomen, in every series
    and with every reconstruction kernel. With ``block=2`` (10 mm for A0001, 16 mm for A0002)
    each used slice has a used neighbour, so the generator sees each level twice and can
    memorise it, while each not-used slice still has a used neighbour one slice away: the task
    stays hard, as with same-patient members and non-members. Strict parity (``block=1``) makes
    every not-used slice the midpoint of two used ones, nearly indistinguishable from them;
    larger blocks leave whole levels out of the training set and make membership a question of
    anatomy rather than of memorisation.
    """
    used = np.zeros(len(slices), dtype=bool)
    position: dict[tuple[str, str], int] = {}
    for i, s in enumerate(slices):
        k = position.get((s.patient, s.series), 0)
        position[(s.patient, s.series)] = k + 1
        used[i] = (k // block) % 2 == 0
    return used


def build_task1(
    out: Path,
    data_root: Path | None = None,
    seed: int = 0,
    generator: str = "vae",
    log: Log = _no_log,
    n_generated: int = N_GENERATED,
    block: int = BLOCK,
    strength: str = "normal",
) -> Path:
    """Write ``out/task1`` (membership) and ``out/task1_truth.csv``.

    The slices are split into used / not used by :func:`split_used`; the generator named by
    ``generator`` (see :func:`make_generator`) is trained on all used slices. A balanced test
    set, about half of each series' used and half of its not-used slices drawn with the seed
    (the same number of each in all), goes to ``test/`` under shuffled anonymous names
    ``t000.png``...; the remaining used and not-used slices go to
    ``train/used`` and ``train/not_used`` under their source names, ``n_generated`` samples to
    ``generated/g000.png``...

    Parameters
    ----------
    out : Path
        Output folder; ``out/task1`` is replaced if it exists.
    data_root : Path or None
        Folder with ``slices.csv`` and ``png/``; defaults to the shared ``lung-pet-ct-dx``.
    seed : int
        Seeds the generator's training, its samples and the test draw.
    generator : str
        ``"vae"``, ``"vae64"``, ``"vae-up"``, ``"gan"`` or ``"pca"``.
    log : callable
        Receives progress lines.
    n_generated : int
        Samples written to ``generated/``.
    block : int
        Block length of the used / not-used interleave.
    strength : str
        ``"normal"`` or ``"strong"`` (the generator memorises more, see :func:`make_generator`).

    Returns
    -------
    Path
        ``out/task1``.
    """
    return _task1(out, data_root, seed, generator, log, n_generated, block, strength)[0]


def _task1(
    out: Path,
    data_root: Path | None,
    seed: int,
    generator: str,
    log: Log,
    n_generated: int,
    block: int,
    strength: str = "normal",
) -> tuple[Path, dict[str, Any]]:
    """:func:`build_task1`, also returning the training seconds, counts and preview rows."""
    out = Path(out)
    root = _fresh(out / "task1")
    slices = load_slices(data_root)
    used = split_used(slices, block)
    used_idx, not_idx = np.flatnonzero(used), np.flatnonzero(~used)
    rng = np.random.default_rng(seed)
    test_used, test_not = _pick_test(slices, used, rng)
    n_test = len(test_used)

    label = generator if strength == "normal" else f"{generator} ({strength})"
    log(f"task1: training {label} on {len(used_idx)} used slices")
    model = make_generator(generator, strength)
    gen = model.fit(_stack([slices[i] for i in used_idx]), seed, log)
    log(f"task1: {label} trained in {gen.train_seconds_:.1f} s")
    samples = gen.sample(n_generated, seed + 1)
    _write_images(root / "generated", samples, [f"g{i:03d}" for i in range(n_generated)])

    in_test = set(test_used.tolist()) | set(test_not.tolist())
    for folder, idx in (("used", used_idx), ("not_used", not_idx)):
        keep = [i for i in idx if i not in in_test]
        _write_images(
            root / "train" / folder,
            _stack([slices[i] for i in keep]),
            [slices[i].name for i in keep],
        )
    test_idx = np.concatenate([test_used, test_not])
    order = test_idx[rng.permutation(len(test_idx))]
    names = [f"t{i:03d}" for i in range(len(order))]
    _write_images(root / "test", _stack([slices[i] for i in order]), names)
    _write_truth(
        out / "task1_truth.csv",
        "label",
        [(n, int(used[i])) for n, i in zip(names, order, strict=True)],
    )
    info = {
        "generator": generator,
        "strength": strength,
        "train_seconds": round(gen.train_seconds_, 2),
        "n_used_train": len(used_idx) - n_test,
        "n_not_used_train": len(not_idx) - n_test,
        "n_test": 2 * n_test,
        "n_generated": n_generated,
        "preview": {
            "real (used)": _stack([slices[i] for i in used_idx[:: max(len(used_idx) // 8, 1)][:8]]),
            f"task1 {label}": samples[:8],
        },
    }
    return root, info


def _pick_test(
    slices: Sequence[Slice], used: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the used and the not-used test slices, as many of each.

    Half (rounded down) of each series' used slices and of its not-used slices, drawn at random;
    then random picks are dropped from the larger side until both have the same size.
    """
    picks: dict[bool, list[int]] = {True: [], False: []}
    series = sorted({(s.patient, s.series) for s in slices})
    for key in series:
        idx = [i for i, s in enumerate(slices) if (s.patient, s.series) == key]
        for label in (True, False):
            group = np.array([i for i in idx if used[i] == label], dtype=int)
            picks[label] += rng.choice(group, len(group) // 2, replace=False).tolist()
    n = min(len(picks[True]), len(picks[False]))
    a, b = (
        np.sort(rng.choice(np.array(picks[label], dtype=int), n, replace=False))
        for label in (True, False)
    )
    return a, b


# -- task 2 ------------------------------------------------------------------------------------
#: (name, generator, training subset (patient, series or None)) in cluster order.
TASK2_GENERATORS: tuple[tuple[str, str, tuple[str, str | None]], ...] = (
    ("pca_A0001", "pca", ("A0001", None)),
    ("vae128_A0002", "vae", ("A0002", None)),
    ("vae64_A0001_s3", "vae64", ("A0001", "s3")),
)


def build_task2(
    out: Path,
    data_root: Path | None = None,
    seed: int = 0,
    log: Log = _no_log,
    n_test_each: int = N_TEST_EACH,
    n_train_each: int = N_TRAIN_EACH,
) -> Path:
    """Write ``out/task2`` (attribution) and ``out/task2_truth.csv``.

    Each generator of :data:`TASK2_GENERATORS` is trained on its own subset of the real slices:
    a :class:`PCAGaussian` on patient A0001, a 128x128 :class:`ConvVAE` on patient A0002 and a
    64x64 :class:`ConvVAE` on A0001 series s3. Each makes ``n_test_each`` test images, pooled
    and shuffled with the seed into ``test/s000.png``..., and ``n_train_each`` other labelled
    examples in ``train/<name>/``. ``task2_truth.csv`` maps each test id to the generator's
    index in :data:`TASK2_GENERATORS`.

    Parameters
    ----------
    out : Path
        Output folder; ``out/task2`` is replaced if it exists.
    data_root : Path or None
        Folder with ``slices.csv`` and ``png/``; defaults to the shared ``lung-pet-ct-dx``.
    seed : int
        Seeds the training, the samples and the shuffle.
    log : callable
        Receives progress lines.
    n_test_each, n_train_each : int
        Test and labelled training images per generator.

    Returns
    -------
    Path
        ``out/task2``.
    """
    return _task2(out, data_root, seed, log, n_test_each, n_train_each)[0]


def _task2(
    out: Path,
    data_root: Path | None,
    seed: int,
    log: Log,
    n_test_each: int,
    n_train_each: int,
) -> tuple[Path, dict[str, Any]]:
    """:func:`build_task2`, also returning the training seconds and preview rows."""
    out = Path(out)
    root = _fresh(out / "task2")
    slices = load_slices(data_root)
    tests, labels, seconds, preview = [], [], {}, {}
    for g, (name, kind, (patient, series)) in enumerate(TASK2_GENERATORS):
        subset = [s for s in slices if s.patient == patient and series in (None, s.series)]
        log(f"task2: training {name} ({kind}) on {len(subset)} slices")
        gen = make_generator(kind).fit(_stack(subset), seed + 10 * (g + 1), log)
        seconds[name] = round(gen.train_seconds_, 2)
        log(f"task2: {name} trained in {gen.train_seconds_:.1f} s")
        samples = gen.sample(n_test_each + n_train_each, seed + 10 * (g + 1) + 1)
        _write_images(
            root / "train" / name,
            samples[n_test_each:],
            [f"{name}_{i:03d}" for i in range(n_train_each)],
        )
        tests.append(samples[:n_test_each])
        labels += [g] * n_test_each
        preview[f"task2 {name}"] = samples[:8]
    images = np.concatenate(tests)
    order = np.random.default_rng(seed).permutation(len(images))
    names = [f"s{i:03d}" for i in range(len(order))]
    _write_images(root / "test", images[order], names)
    _write_truth(
        out / "task2_truth.csv",
        "cluster",
        [(n, labels[i]) for n, i in zip(names, order, strict=True)],
    )
    return root, {"train_seconds": seconds, "preview": preview}


# -- task 2 benchmark sets ---------------------------------------------------------------------
#: The attribution benchmark's sets: (generator kind, training subset) per generator.
#: ``architectures``: four architectures, each trained on the same real slices (every other
#: block of two, as task 1's used half), so only the architecture tells them apart.
#: ``same-arch``: the 64x64 VAE three times, same settings, other seeds, trained on disjoint
#: thirds of the slices (every third block of two): which training subset made an image (the
#: 2025 edition of the challenge).
TASK2_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    "architectures": (
        ("pca", "half"),
        ("vae", "half"),
        ("vae-up", "half"),
        ("gan", "half"),
    ),
    "same-arch": (("vae64", "third0"), ("vae64", "third1"), ("vae64", "third2")),
}


def _subset(slices: Sequence[Slice], name: str) -> list[Slice]:
    """``half``: task 1's used half; ``thirdK``: blocks of two slices dealt to three subsets
    in turn within each series, subset K."""
    if name == "half":
        return [s for s, u in zip(slices, split_used(slices), strict=True) if u]
    k = int(name.removeprefix("third"))
    position: dict[tuple[str, str], int] = {}
    out = []
    for s in slices:
        i = position.get((s.patient, s.series), 0)
        position[(s.patient, s.series)] = i + 1
        if (i // 2) % 3 == k:
            out.append(s)
    return out


def build_task2_set(
    out: Path,
    name: str,
    seed: int = 0,
    data_root: Path | None = None,
    log: Log = _no_log,
    n_test_each: int = 150,
    n_train_each: int = 60,
) -> dict[str, Any]:
    """Write ``out/task2`` and ``out/task2_truth.csv`` for the set ``name`` of
    :data:`TASK2_SETS`: each generator trained (seeded by ``seed`` and its place) on its
    subset, ``n_test_each`` test images and ``n_train_each`` labelled ones in
    ``train/g<index>_<kind>/``; test images pooled and shuffled. Returns the training seconds."""
    out = Path(out)
    root = _fresh(out / "task2")
    slices = load_slices(data_root)
    tests, labels, seconds = [], [], {}
    for g, (kind, subset_name) in enumerate(TASK2_SETS[name]):
        subset = _subset(slices, subset_name)
        group = f"g{g}_{kind}"
        log(f"{name}: training {group} on {len(subset)} slices ({subset_name})")
        gen = make_generator(kind).fit(_stack(subset), seed * 1000 + 10 * (g + 1), log)
        seconds[group] = round(gen.train_seconds_, 2)
        samples = gen.sample(n_test_each + n_train_each, seed * 1000 + 10 * (g + 1) + 1)
        _write_images(
            root / "train" / group,
            samples[n_test_each:],
            [f"{group}_{i:03d}" for i in range(n_train_each)],
        )
        tests.append(samples[:n_test_each])
        labels += [g] * n_test_each
    images = np.concatenate(tests)
    order = np.random.default_rng(seed).permutation(len(images))
    names = [f"s{i:04d}" for i in range(len(order))]
    _write_images(root / "test", images[order], names)
    _write_truth(
        out / "task2_truth.csv",
        "cluster",
        [(n, labels[i]) for n, i in zip(names, order, strict=True)],
    )
    return {"train_seconds": seconds}


def degrade(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a data lake does to an image (uint8 (h, w)), seeded: a gamma change in
    [0.9, 1.1], a rescale by [0.75, 1.25] and back (bilinear), JPEG re-encoding at quality
    70-95, decoded again."""
    import io

    gamma = rng.uniform(0.9, 1.1)
    scale = rng.uniform(0.75, 1.25)
    quality = int(rng.integers(70, 96))
    x = 255.0 * (pixels.astype(np.float64) / 255.0) ** gamma
    im = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), mode="L")
    h, w = pixels.shape
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as back:
        return np.asarray(back.convert("L"), dtype=np.uint8)


def degrade_task2(source: Path, out: Path, seed: int = 0) -> Path:
    """A degraded copy of a task 2 folder ``source`` (``task2/`` and ``task2_truth.csv``) in
    ``out``: every image (labelled and test) through :func:`degrade` with its own seeded draw,
    saved as PNG under the same name; the truth copied."""
    source, out = Path(source), Path(out)
    root = _fresh(out / "task2")
    rng = np.random.default_rng(seed + 7919)
    for path in sorted((source / "task2").rglob("*.png")):
        target = root / path.relative_to(source / "task2")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)
        _save_png(target, degrade(pixels, rng))
    shutil.copyfile(source / "task2_truth.csv", out / "task2_truth.csv")
    return root


# -- all ---------------------------------------------------------------------------------------
def build_all(
    out: Path, data_root: Path | None = None, seed: int = 0, log: Log = _no_log
) -> dict[str, Any]:
    """Build task 1 (ConvVAE), task 2 and ``out/preview.png``.

    Returns
    -------
    dict
        ``task1``, ``task1_truth``, ``task2``, ``task2_truth``, ``preview`` (paths as str),
        ``train_seconds`` (per generator), ``seconds`` (the whole build) and ``seed``.
    """
    start = time.perf_counter()
    out = Path(out)
    t1, info1 = _task1(out, data_root, seed, "vae", log, N_GENERATED, BLOCK)
    t2, info2 = _task2(out, data_root, seed, log, N_TEST_EACH, N_TRAIN_EACH)
    preview = save_preview(out / "preview.png", {**info1["preview"], **info2["preview"]})
    return {
        "task1": str(t1),
        "task1_truth": str(out / "task1_truth.csv"),
        "task2": str(t2),
        "task2_truth": str(out / "task2_truth.csv"),
        "preview": str(preview),
        "train_seconds": {
            f"task1_{info1['generator']}": info1["train_seconds"],
            **info2["train_seconds"],
        },
        "seconds": round(time.perf_counter() - start, 2),
        "seed": seed,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: build everything into ``--out`` and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="lung-pet-ct-dx folder")
    parser.add_argument("--verbose", action="store_true", help="progress lines on stderr")
    args = parser.parse_args(argv)
    log = _stderr if args.verbose else _no_log
    print(json.dumps(build_all(args.out, args.data, args.seed, log)))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
