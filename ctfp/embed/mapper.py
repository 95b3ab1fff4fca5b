"""The mapper: a feature extractor on its device, uint8 slices in, float32 embeddings out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ctfp.device import autocast, resolve_precision
from ctfp.embed.backbone import Identity, Preprocessing
from ctfp.embed.job import ModelFactory


def default_batch_size(device: torch.device) -> int:
    """Slices per forward pass: large on a GPU; 16 on a CPU, where bigger batches fall out of cache.

    Measured on 2 cores (bf16, 224 px): batch 8-16 gives 46-55 img/s, batch 64 gives 36 img/s.
    """
    return 128 if device.type == "cuda" else 16


def forward(
    model: torch.nn.Module,
    frames: torch.Tensor,
    device: torch.device,
    amp: Callable[[], Any],
    batch_size: int,
) -> np.ndarray:
    """Run ``model`` over ``frames`` in chunks of ``batch_size``.

    Parameters
    ----------
    model
        A feature extractor on ``device``: (b, 1, s, s) uint8 -> (b, d), with ``.identity``.
    frames
        (n, 1, s, s) uint8 on the host (pinned for asynchronous copies to a GPU).
    amp
        The autocast context of the run's precision (:func:`ctfp.device.autocast`).

    Returns
    -------
    np.ndarray
        (n, d) float32; (0, d) for no frames.
    """
    outputs = []
    for chunk in frames.split(batch_size):
        x = chunk.to(device, non_blocking=True)
        with amp():
            y = model(x)
        outputs.append(y.float())
    if not outputs:
        return np.empty((0, model.identity.dim), dtype=np.float32)
    return torch.cat(outputs).cpu().numpy()


class Mapper:
    """A model on its device with its precision; ``mapper(frames)`` embeds a batch.

    The same object runs in the local engine's process and in every Ray actor, so both compute
    rows the same way.
    """

    def __init__(
        self, model: torch.nn.Module, device: torch.device, precision: str, batch_size: int
    ) -> None:
        self.model = model
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.amp = autocast(self.precision, device)
        self.batch_size = batch_size

    @classmethod
    def build(
        cls,
        factory: ModelFactory,
        device: torch.device,
        precision: str,
        batch_size: int,
        *,
        compile: bool = False,
    ) -> Mapper:
        """Build the model with ``factory`` and move it to ``device`` (``compile``: through
        ``torch.compile``, which forwards ``preprocessing`` and ``identity`` to the model)."""
        model = factory().to(device)
        if compile:
            model = torch.compile(model)
        return cls(model, device, precision, batch_size)

    @property
    def identity(self) -> Identity:
        return self.model.identity

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        """(n, 1, s, s) uint8 on the host -> (n, d) float32 numpy, finished on the device."""
        with torch.inference_mode():
            embeddings = forward(self.model, frames, self.device, self.amp, self.batch_size)
        if self.device.type == "cuda":  # so that timings charge the work to the model
            torch.cuda.synchronize(self.device)
        return embeddings


__all__ = ["Mapper", "default_batch_size", "forward"]
