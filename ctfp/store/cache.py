"""The decoded-slice cache on disk: recognising a cache folder and listing its rows as inputs.

A cache (:func:`ctfp.embed.cache.build_cache`) is a shard folder whose vector column is
``pixels``: each row a square uint8 slice as fixed-size binary. ``ctfp embed CACHE_DIR`` reads
it instead of decoding images again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctfp.exceptions import InputError
from ctfp.io.fs import PathLike, resolve
from ctfp.io.sources import InputFile
from ctfp.store.delta import LOG_DIR, PREFIX
from ctfp.store.manifest import MANIFEST_FILE, committed_shards
from ctfp.store.reader import open_shard, read_schema
from ctfp.store.schema import PART_RE, SLICES_FORMAT, read_metadata


def is_slice_cache(path: PathLike) -> bool:
    """True when ``path`` (a folder, or a store prefix) is a folder of ctfp decoded-slice
    shards."""
    return _cache(path) is not None


def _cache(path: PathLike) -> tuple[list[str | Path], dict[str, Any]] | None:
    """The committed shards of the decoded-slice cache ``path`` and their metadata; None where
    ``path`` is not one."""
    loc = resolve(path)
    if loc.local and not Path(loc.path).is_dir():
        return None
    if loc.local and not os.fspath(path).startswith(PREFIX) and not _may_hold_shards(loc.path):
        return None  # an image folder
    shards = committed_shards(path, required=False)
    meta = read_metadata(read_schema(shards[0])) if shards else None
    return (shards, meta) if meta is not None and meta.get("format") == SLICES_FORMAT else None


def _may_hold_shards(folder: str) -> bool:
    """Whether the local ``folder`` holds, by name, a commit record, a Delta log or a part file
    (without them :func:`committed_shards` finds none): one listing, no stat per image. Names
    compared in lower case (a file system may ignore case); an unlistable folder may."""
    special = (MANIFEST_FILE.lower(), LOG_DIR.lower())
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if (name.startswith("part-") and PART_RE.match(name)) or name.lower() in special:
                    return True
    except OSError:
        return True
    return False


def cache_rows(sources: Sequence[PathLike] | PathLike) -> list[InputFile] | None:
    """The rows of the decoded-slice caches in ``sources`` as inputs, or None if the sources
    are not caches. Mixing caches and image sources is refused."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    caches = [_cache(source) for source in sources]
    if not any(caches):
        return None
    if not all(caches):
        raise InputError("give either decoded-slice caches or image sources, not both")
    rows: list[InputFile] = []
    for shards, _ in caches:
        for shard in shards:
            with open_shard(shard) as f:
                for group in range(f.num_row_groups):
                    table = f.read_row_group(group, columns=["id", "source", "frame", "label"])
                    columns = [table.column(c).to_pylist() for c in table.column_names]
                    for r, (i, src, frame, label) in enumerate(zip(*columns, strict=True)):
                        rows.append(InputFile(i, src, label, frame, (str(shard), group, r)))
    return rows


def cache_decoding(sources: Sequence[PathLike] | PathLike) -> dict[str, Any] | None:
    """How the slices of the caches in ``sources`` were decoded: the window and the cached
    size, which are part of the identity of embeddings computed from them; None if the sources
    are not caches. Caches decoded differently cannot feed one embedding run."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: dict[str, Any] | None = None
    first: Path | str | None = None
    for source in sources:
        if (cache := _cache(source)) is None:
            return None
        (shard, *_), meta = cache
        decoding = {
            "window": (meta.get("decode") or {}).get("window"),
            "cached_size": (meta.get("preprocessing") or {}).get("image_size"),
        }
        if found is None:
            found, first = decoding, shard
        elif decoding != found:
            raise InputError(
                f"the caches {str(Path(first).parent)!r} and {str(source)!r} were decoded "
                f"differently ({found} vs {decoding}); embed them in separate runs"
            )
    return found


__all__ = ["cache_decoding", "cache_rows", "is_slice_cache"]
