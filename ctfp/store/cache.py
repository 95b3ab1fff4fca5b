"""The decoded-slice cache: decode PNG/DICOM/NIfTI once into uint8 slices in Parquet shards, so
that a GPU embedding run is not limited by CPU image decoders.

A cache is a shard folder like an embedding one (same atomic, resumable writer, same errors
table) whose vector column is ``pixels``: each row a square uint8 slice, padded with air and
resized to ``size``, stored as fixed-size binary (one value per row; read back zero-copy).
``ctfp embed CACHE_DIR`` reads it instead of decoding images again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ctfp.io.sources import InputFile
from ctfp.store.schema import SHARD_GLOB, SLICES_FORMAT, read_metadata

PathLike = str | os.PathLike[str]


def is_slice_cache(path: PathLike) -> bool:
    """True when ``path`` is a folder of ctfp decoded-slice shards."""
    p = Path(path)
    if not p.is_dir():
        return False
    first = next(iter(sorted(p.glob(SHARD_GLOB))), None)
    if first is None:
        return False
    meta = read_metadata(pq.read_schema(first))
    return meta is not None and meta.get("format") == SLICES_FORMAT


def cache_rows(sources: Sequence[PathLike] | PathLike) -> list[InputFile] | None:
    """The rows of the decoded-slice caches in ``sources`` as inputs, or None if the sources
    are not caches. Mixing caches and image sources is refused."""
    from ctfp.exceptions import InputError

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    flags = [is_slice_cache(s) for s in sources]
    if not any(flags):
        return None
    if not all(flags):
        raise InputError("give either decoded-slice caches or image sources, not both")
    rows: list[InputFile] = []
    for source in sources:
        for shard in sorted(Path(source).glob(SHARD_GLOB)):
            with pq.ParquetFile(shard) as f:
                for group in range(f.num_row_groups):
                    table = f.read_row_group(group, columns=["id", "source", "frame", "label"])
                    columns = [table.column(c).to_pylist() for c in table.column_names]
                    for r, (i, src, frame, label) in enumerate(zip(*columns, strict=True)):
                        rows.append(InputFile(i, src, label, frame, (str(shard), group, r)))
    return rows


def build_cache(
    sources: Sequence[PathLike] | PathLike,
    out: PathLike,
    *,
    size: int = 256,
    engine: str = "local",
    **options: Any,
) -> Any:
    """Decode every slice behind ``sources`` once into ``out`` (uint8, padded and resized to
    ``size``); ``options`` are :func:`ctfp.embed` options (window, workers, layout, ...).
    Resumable like embedding; unreadable inputs go to ``out/_errors/errors.parquet``.
    ``engine="ray"`` decodes on a Ray cluster (``actors``, ``ray_address`` as for embedding)."""
    from ctfp.embed.features import SliceCache
    from ctfp.embed.runner import embed

    if size < 8:
        from ctfp.exceptions import CtfpError

        raise CtfpError(f"cache size {size} is too small; use at least 8")
    return embed(
        sources,
        out,
        features="slices",
        dtype="uint8",
        precision="fp32",
        device="cpu",
        backbone_factory=lambda: SliceCache(size),
        engine=engine,
        **options,
    )
