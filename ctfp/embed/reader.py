"""The reader: inputs found, decoded and resized (in worker processes), uint8 batches out."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ctfp.embed.backbone import Preprocessing
from ctfp.embed.settings import InputSettings
from ctfp.io.decode import decode_file
from ctfp.io.fs import PathLike
from ctfp.io.sources import InputFile, Unreadable, discover
from ctfp.io.window import MAX_PIXELS, Window
from ctfp.store.cache import cache_rows


def find_inputs(
    sources: Sequence[PathLike] | PathLike,
    settings: InputSettings,
    unreadable: list[Unreadable] | None = None,
) -> list[InputFile]:
    """The inputs behind ``sources``: the rows of decoded-slice caches if they are caches, else
    the image files :func:`ctfp.io.sources.discover` finds (with ``settings``' layout and
    labels; what could not be searched goes to ``unreadable``)."""
    cached = cache_rows(sources)
    if cached is not None:
        return cached
    return discover(
        sources,
        label_from_dirs=settings.label_from_dirs,
        layout=settings.layout,
        unreadable=unreadable,
    )


def default_workers(device: torch.device, *, decode_bound: bool = False, files: int = 0) -> int:
    """Loader processes: on a GPU, enough to feed it. On a CPU, none behind ResNet50 (a worker
    only takes a core from the network); one per core behind models lighter than decoding
    (``decode_bound``), from ``MIN_FILES_FOR_WORKERS`` ``files`` on (below, starting them costs
    what they save).
    """
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    if not decode_bound or files < MIN_FILES_FOR_WORKERS:
        return 0
    return cores


#: Fewest files for which decode-bound CPU jobs start loader workers.
MIN_FILES_FOR_WORKERS = 256


def as_views(preprocessing: Preprocessing | Sequence[Preprocessing]) -> tuple[Preprocessing, ...]:
    """The preprocessings a reader resizes each slice for (a single one: a one-entry tuple)."""
    if isinstance(preprocessing, Preprocessing):
        return (preprocessing,)
    return tuple(preprocessing)


@dataclass
class Decoded:
    """One input file decoded: its frames, (n, 1, s_v, s_v) uint8 per view, or why it failed."""

    index: int
    views: tuple[torch.Tensor, ...] | None
    error: str | None = None

    @property
    def count(self) -> int:
        """Its slices (frames): 0 for a failure."""
        return 0 if self.views is None else int(self.views[0].shape[0])


@dataclass
class Batch:
    """Several decoded files; ``views[v]`` holds all their slices back to back at view ``v``."""

    indices: list[int]
    counts: list[int]
    views: tuple[torch.Tensor, ...]
    errors: list[tuple[int, str]] = field(default_factory=list)
    #: Per output, these slices' embeddings (None: not needed) when the models ran where the
    #: batch was made (``make_loader``'s ``then``); else None.
    embeddings: list[np.ndarray | None] | None = None
    #: Seconds the models took on this batch, wherever they ran.
    seconds: float = 0.0

    @property
    def frames(self) -> torch.Tensor:
        """The slices at the first view (all of them for a one-view job)."""
        return self.views[0]

    def pin_memory(self) -> Batch:
        # The DataLoader's pin thread: page-locked memory for async copies to the GPU.
        self.views = tuple(v.pin_memory() for v in self.views)
        return self


class SliceDataset(Dataset[Decoded]):
    """Map-style dataset: item ``i`` is file ``i`` decoded once and resized for each view; a
    failure is returned as ``Decoded.error``, never raised, so one bad file never stops a run.
    """

    def __init__(
        self,
        files: Sequence[InputFile],
        window: Window,
        views: Preprocessing | Sequence[Preprocessing],
        *,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.files = list(files)
        self.window = window
        self.views = as_views(views)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        try:
            frames = decode_file(self.files[index].path, self.window, max_pixels=self.max_pixels)
            resized = tuple(
                torch.from_numpy(np.stack([view.resize(f) for f in frames])[:, None])
                for view in self.views
            )
        except Exception as exc:  # corrupt input of any kind: record it, never stop the run
            return Decoded(index, None, str(exc) or type(exc).__name__)
        return Decoded(index, resized)


class CacheDataset(Dataset[list[Decoded]]):
    """Rows of a decoded-slice cache: item ``g`` is one Parquet row group's pending rows as
    ``Decoded`` (one frame each), from the fixed-size binary column; slices cached at another
    size than a view's are resized (bilinear, antialiased).
    """

    def __init__(
        self, files: Sequence[InputFile], views: Preprocessing | Sequence[Preprocessing]
    ) -> None:
        groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for index, f in enumerate(files):
            assert f.cache is not None
            shard, group, row = f.cache
            groups.setdefault((shard, group), []).append((index, row))
        self.groups = list(groups.items())
        self.sizes = [v.image_size for v in as_views(views)]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, g: int) -> list[Decoded]:
        from ctfp.store.reader import open_shard

        (shard, group), rows = self.groups[g]
        with open_shard(shard) as f:
            column = f.read_row_group(group, columns=["pixels"]).column(0).combine_chunks()
        width = column.type.byte_width
        side = math.isqrt(width)
        pixels = np.frombuffer(
            column.buffers()[1],
            dtype=np.uint8,
            count=len(column) * width,
            offset=column.offset * width,
        )
        frames = torch.from_numpy(pixels.reshape(-1, 1, side, side)[[r for _, r in rows]])
        views = [frames if size == side else _resized(frames, size) for size in self.sizes]
        return [
            Decoded(index, tuple(v[k : k + 1] for v in views)) for k, (index, _) in enumerate(rows)
        ]


def _resized(frames: torch.Tensor, size: int) -> torch.Tensor:
    x = torch.nn.functional.interpolate(
        frames.float(), size=(size, size), mode="bilinear", antialias=True
    )
    return x.round_().clamp_(0, 255).to(torch.uint8)


def make_dataset(
    files: Sequence[InputFile],
    window: Window,
    views: Preprocessing | Sequence[Preprocessing],
    *,
    max_pixels: int = MAX_PIXELS,
) -> SliceDataset | CacheDataset:
    """The dataset of ``files``: cache rows or image files (never a mix)."""
    if files and files[0].cache is not None:
        return CacheDataset(files, views)
    return SliceDataset(files, window, views, max_pixels=max_pixels)


def decode_all(
    files: Sequence[InputFile],
    window: Window,
    views: Preprocessing | Sequence[Preprocessing],
    *,
    max_pixels: int = MAX_PIXELS,
) -> list[Decoded]:
    """Every item of ``files`` decoded in this process, in input order (``Decoded.index``: the
    position in ``files``)."""
    dataset = make_dataset(files, window, views, max_pixels=max_pixels)
    if isinstance(dataset, CacheDataset):
        decoded = [d for g in range(len(dataset)) for d in dataset[g]]
        return sorted(decoded, key=lambda d: d.index)
    return [dataset[i] for i in range(len(dataset))]


def collate(items: list[Decoded]) -> Batch:
    """Concatenate the decoded files' frames, view by view; keep failures aside."""
    good = [d for d in items if d.views is not None]
    views = tuple(torch.cat(v) for v in zip(*(d.views for d in good), strict=True))
    return Batch(
        indices=[d.index for d in good],
        counts=[d.count for d in good],
        views=views,
        errors=[(d.index, d.error or "unknown error") for d in items if d.views is None],
    )


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(parent: int, _: int) -> None:
    # Die with the loading process. After its kill -9, torch's own check (the parent pid,
    # every 5 s) can miss it (a parent killed before the check started), and a worker that
    # does notice hangs on exit: its queue's feeder thread blocks writing into a full result
    # pipe that the workers themselves hold open. Orphans slept for tens of minutes.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # gone before the prctl
            os.kill(os.getpid(), signal.SIGKILL)
    # Decoding is single-threaded work; keep workers from fighting the model for cores.
    torch.set_num_threads(1)


class _Collate:
    """The loader's collate function, then ``then`` (a class: spawned workers unpickle it)."""

    def __init__(self, cached: bool, then: Callable[[Batch], Batch] | None) -> None:
        self.cached = cached
        self.then = then

    def __call__(self, items: list[Any]) -> Batch:
        # A cache's items are row groups: lists of one-frame items.
        batch = collate([d for group in items for d in group] if self.cached else items)
        return batch if self.then is None else self.then(batch)


def make_loader(
    dataset: SliceDataset | CacheDataset,
    *,
    files_per_batch: int,
    workers: int,
    pin_memory: bool,
    then: Callable[[Batch], Batch] | None = None,
) -> DataLoader[Batch]:
    """A DataLoader that keeps file order and prefetches decoded batches; ``then`` is applied
    to each batch where it is made (in the workers, if any).
    """
    cached = isinstance(dataset, CacheDataset)
    return DataLoader(
        dataset,
        batch_size=1 if cached else files_per_batch,  # a cache row group is a batch already
        shuffle=False,
        num_workers=workers,
        collate_fn=_Collate(cached, then),
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(_worker_init, os.getpid()) if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
