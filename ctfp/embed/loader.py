"""Dataset and DataLoader: decode and resize in worker processes, uint8 batches to the model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ctfp.embed.backbone import Preprocessing
from ctfp.io.decode import Window, decode_file
from ctfp.io.sources import InputFile


@dataclass
class Decoded:
    """One input file after decoding: its frames (n, 1, s, s) uint8, or the reason it failed."""

    index: int
    frames: torch.Tensor | None
    error: str | None = None


@dataclass
class Batch:
    """Several decoded files; ``frames`` holds all their slices back to back."""

    indices: list[int]
    counts: list[int]
    frames: torch.Tensor
    errors: list[tuple[int, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        # Called by the DataLoader's pin thread: page-locked memory allows async host->GPU copies.
        self.frames = self.frames.pin_memory()
        return self


class SliceDataset(Dataset[Decoded]):
    """Map-style dataset over input files: item ``i`` is file ``i`` decoded and resized.

    Any failure is returned as ``Decoded.error`` instead of raised, so one bad file never stops
    a run and the main process decides where the reason goes.
    """

    def __init__(
        self, files: Sequence[InputFile], window: Window, preprocessing: Preprocessing
    ) -> None:
        self.files = list(files)
        self.window = window
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        try:
            frames = decode_file(self.files[index].path, self.window)
            resized = np.stack([self.preprocessing.resize(f) for f in frames])
        except Exception as exc:  # corrupt input of any kind: record it, never stop the run
            return Decoded(index, None, str(exc) or type(exc).__name__)
        return Decoded(index, torch.from_numpy(resized[:, None]))


class CacheDataset(Dataset[list[Decoded]]):
    """Rows of a decoded-slice cache (``ctfp cache``), read a Parquet row group at a time.

    Item ``g`` is one row group: its pending rows as ``Decoded`` (one frame each), straight from
    the fixed-size binary column — no image decoding. Slices cached at another size than the
    model's are resized (bilinear, antialiased).
    """

    def __init__(self, files: Sequence[InputFile], preprocessing: Preprocessing) -> None:
        groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for index, f in enumerate(files):
            assert f.cache is not None
            shard, group, row = f.cache
            groups.setdefault((shard, group), []).append((index, row))
        self.groups = list(groups.items())
        self.size = preprocessing.image_size

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, g: int) -> list[Decoded]:
        import pyarrow.parquet as pq

        (shard, group), rows = self.groups[g]
        with pq.ParquetFile(shard) as f:
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
        if side != self.size:
            frames = torch.nn.functional.interpolate(
                frames.float(), size=(self.size, self.size), mode="bilinear", antialias=True
            )
            frames = frames.round_().clamp_(0, 255).to(torch.uint8)
        return [Decoded(index, frames[k : k + 1]) for k, (index, _) in enumerate(rows)]


def collate_groups(items: list[list[Decoded]]) -> Batch:
    """Collate for CacheDataset: row groups are lists of one-frame items."""
    return collate([d for group in items for d in group])


def collate(items: list[Decoded]) -> Batch:
    """Concatenate the frames of the decoded files; keep failures aside."""
    good = [d for d in items if d.frames is not None]
    s = None if not good else good[0].frames.shape[-1]
    frames = (
        torch.cat([d.frames for d in good])
        if good
        else torch.empty((0, 1, s or 1, s or 1), dtype=torch.uint8)
    )
    return Batch(
        indices=[d.index for d in good],
        counts=[int(d.frames.shape[0]) for d in good],
        frames=frames,
        errors=[(d.index, d.error or "unknown error") for d in items if d.frames is None],
    )


def _worker_init(_: int) -> None:
    # Decoding is single-threaded work; keep workers from fighting the model for cores.
    torch.set_num_threads(1)


def make_loader(
    dataset: SliceDataset | CacheDataset, *, files_per_batch: int, workers: int, pin_memory: bool
) -> DataLoader[Batch]:
    """A DataLoader that keeps file order (map-style) and prefetches decoded batches."""
    cached = isinstance(dataset, CacheDataset)
    return DataLoader(
        dataset,
        batch_size=1 if cached else files_per_batch,  # a cache row group is a batch already
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_groups if cached else collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
