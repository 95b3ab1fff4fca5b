"""The mapper: feature extractors on their device, uint8 slices in, float32 embeddings out."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ctfp.device import autocast, resolve_precision
from ctfp.embed.backbone import Backbone, Identity, Preprocessing
from ctfp.embed.features import ConcatFeatures, join
from ctfp.embed.job import ModelFactory


def default_batch_size(device: torch.device, *, decode_bound: bool = False) -> int:
    """Slices per forward pass: 128 on a GPU; on a CPU, 16 for a network (larger batches fall
    out of cache), 64 for models lighter than decoding (``decode_bound``: each batch's fixed
    costs spread over more slices).
    """
    if device.type == "cuda":
        return 128
    return 64 if decode_bound else 16


def view_key(preprocessing: Preprocessing) -> tuple[int, str, str]:
    """What :meth:`Preprocessing.resize` depends on: models that agree on it share one resized
    batch."""
    return (preprocessing.image_size, preprocessing.pad, preprocessing.interpolation)


def forward(
    model: torch.nn.Module,
    frames: torch.Tensor,
    device: torch.device,
    amp: Callable[[], Any],
    batch_size: int,
) -> np.ndarray:
    """Run ``model`` (on ``device``, with ``.identity``) over ``frames``, (n, 1, s, s) uint8 on
    the host, in chunks of ``batch_size`` under ``amp``: (n, d) float32, (0, d) for none."""
    return _forward(model, frames, device, amp, batch_size).cpu().numpy()


def _forward(
    model: torch.nn.Module,
    frames: torch.Tensor,
    device: torch.device,
    amp: Callable[[], Any],
    batch_size: int,
) -> torch.Tensor:
    """:func:`forward`, leaving the result on ``device``."""
    outputs = []
    for chunk in frames.split(batch_size):
        with amp():
            outputs.append(model(chunk.to(device, non_blocking=True)).float())
    if not outputs:
        return torch.empty((0, model.identity.dim), dtype=torch.float32, device=device)
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


class Mapper:
    """Models on a device with its precision; ``mapper(views)`` embeds a batch for each of them.

    One model per output of a job. A joined model (``residual+spectrum``) is split into its
    parts, a part that several outputs use runs once per batch, and the joined output is
    :func:`~ctfp.embed.features.join` of its parts. The reader resizes each slice once per
    distinct input side (:attr:`views`). Both engines run this same object.
    """

    def __init__(
        self,
        models: torch.nn.Module | Sequence[torch.nn.Module],
        device: torch.device,
        precision: str,
        batch_size: int | None = None,
    ) -> None:
        self.models = [models] if isinstance(models, torch.nn.Module) else list(models)
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.amp = autocast(self.precision, device)
        #: The distinct extractors the models are made of, each run once per batch.
        self.parts: list[torch.nn.Module] = []
        self._part_view: list[int] = []  # per part, the view it takes
        self._uses: list[list[int]] = []  # per model, the parts it is made of
        seen: dict[str, int] = {}
        views: dict[tuple[int, str, str], Preprocessing] = {}
        for model in self.models:
            uses = []
            for part in model.parts if isinstance(model, ConcatFeatures) else [model]:
                key = json.dumps(part.identity.to_dict(), sort_keys=True)
                if key not in seen:
                    seen[key] = len(self.parts)
                    self.parts.append(part)
                    view = view_key(part.preprocessing)
                    views.setdefault(view, part.preprocessing)
                    self._part_view.append(list(views).index(view))
                uses.append(seen[key])
            self._uses.append(uses)
        #: The preprocessing of each distinct resize the parts need, in first-use order.
        self.views = tuple(views.values())
        #: Slices per forward pass (None: :func:`default_batch_size` for these models).
        self.batch_size = batch_size or default_batch_size(device, decode_bound=self.decode_bound)

    @classmethod
    def build(
        cls,
        factory: ModelFactory | Sequence[ModelFactory],
        device: torch.device,
        precision: str,
        batch_size: int | None = None,
        *,
        compile: bool = False,
    ) -> Mapper:
        """Build the model of each factory on ``device`` (``compile``: each part through
        ``torch.compile``)."""
        factories = [factory] if callable(factory) else list(factory)
        mapper = cls([f().to(device) for f in factories], device, precision, batch_size)
        if compile:
            mapper.parts = [torch.compile(p) for p in mapper.parts]
        return mapper

    def __getstate__(self) -> dict[str, Any]:
        # The autocast factory may be a lambda: rebuilt where unpickled.
        return {k: v for k, v in self.__dict__.items() if k != "amp"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.amp = autocast(self.precision, self.device)

    @property
    def model(self) -> torch.nn.Module:
        """The first (for a one-output job, the only) model."""
        return self.models[0]

    @property
    def identity(self) -> Identity:
        """The identity of the first (for a one-output job, the only) model."""
        return self.models[0].identity

    @property
    def identities(self) -> list[Identity]:
        """The identity of each model, in output order."""
        return [m.identity for m in self.models]

    @property
    def decode_bound(self) -> bool:
        """Whether decoding costs more than the models (no network among the parts): on a CPU
        they then run in the loader workers."""
        return not any(isinstance(p, Backbone) for p in self.parts)

    def __call__(
        self,
        views: torch.Tensor | Sequence[torch.Tensor],
        outputs: Sequence[int] | None = None,
    ) -> list[np.ndarray | None]:
        """Embed one batch for each model in ``outputs`` (default all): ``views`` are the same
        n slices, (n, 1, s_v, s_v) uint8 on the host, per entry of :attr:`views` (a tensor for
        one view). Returns per model its (n, d) float32 embeddings, None if not in ``outputs``."""
        views = [views] if isinstance(views, torch.Tensor) else list(views)
        wanted = range(len(self.models)) if outputs is None else outputs
        with torch.inference_mode():
            got: dict[int, torch.Tensor] = {}
            found: list[np.ndarray | None] = [None] * len(self.models)
            for o in wanted:
                for p in self._uses[o]:
                    if p not in got:
                        x = views[self._part_view[p]]
                        got[p] = _forward(self.parts[p], x, self.device, self.amp, self.batch_size)
                blocks = [got[p] for p in self._uses[o]]
                y = join(blocks) if isinstance(self.models[o], ConcatFeatures) else blocks[0]
                found[o] = y.cpu().numpy()
        if self.device.type == "cuda":  # so that timings charge the work to the model
            torch.cuda.synchronize(self.device)
        return found


__all__ = ["Mapper", "default_batch_size", "forward", "view_key"]
