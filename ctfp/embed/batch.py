"""``embed_batch``: Arrow in, Arrow out, for other engines' jobs (Spark's ``mapInArrow``, Ray
Data's ``map_batches``, a DuckDB UDF): file paths in, the rows ``ctfp embed`` would write out.
The model is built once per process and settings.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from ctfp.embed.settings import EmbedSettings
from ctfp.exceptions import InputError

_MAPPERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def batch_schema(dim: int, dtype: str, metadata: dict[str, Any]) -> pa.Schema:
    """The shard schema with the embedding nullable and an ``error`` column: an unreadable file
    is one row with its reason, never a failed batch (which an engine would retry for ever)."""
    from ctfp.store.schema import shard_schema

    base = shard_schema(dim, dtype, metadata)
    fields = [f.with_nullable(True) if f.name == "embedding" else f for f in base]
    return pa.schema([*fields, pa.field("error", pa.string())], metadata=base.metadata)


def _mapper(settings: EmbedSettings) -> Any:
    """The model of ``settings`` on its device, built once per process (thread-safe)."""
    from ctfp.device import resolve_device
    from ctfp.embed.features import features_factory
    from ctfp.embed.mapper import Mapper

    key = json.dumps(settings.to_dict(), sort_keys=True)
    with _LOCK:
        if key not in _MAPPERS:
            device = resolve_device(settings.device)
            factory = features_factory(settings)
            _MAPPERS[key] = Mapper.build(factory, device, settings.precision, settings.batch_size)
        return _MAPPERS[key]


def embed_batch(
    batch: pa.Table | pa.RecordBatch, settings: EmbedSettings | None = None, **overrides: Any
) -> pa.Table:
    """Embed the CT files a batch of rows names.

    Parameters
    ----------
    batch
        A ``pyarrow.Table`` or ``RecordBatch`` with a ``path`` column (strings: PNG/JPEG,
        DICOM or NIfTI files) and optional ``id`` (default: the path) and ``label`` columns.
    settings
        :class:`~ctfp.embed.settings.EmbedSettings` (features, weights, window, image size,
        storage dtype, device, precision, batch size); ``**overrides`` are its fields.
        ``features="auto"`` is refused: choose one feature type.

    Returns
    -------
    pyarrow.Table
        :func:`batch_schema`: one row per slice (a volume's rows get ids ``id#k``), in input
        order, with ``embedding`` as ``fixed_size_list<dtype, dim>``; an unreadable file is one
        row with ``frame`` -1, a null ``embedding`` and its reason in ``error``. The schema
        metadata is the shards' (model identity, weights sha256, preprocessing, decode window,
        ctfp version), so written out these rows score with ``ctfp score`` like shards.

    Raises
    ------
    ctfp.exceptions.InputError
        No ``path`` column, a null path or id, or ids that repeat within the batch.
    ctfp.settings.SettingsError
        An unknown option or an invalid value.
    """
    from ctfp.embed.job import settings_with
    from ctfp.embed.reader import collate, decode_all
    from ctfp.embed.settings import refuse_auto
    from ctfp.embed.writer import file_rows, stored
    from ctfp.io.sources import InputFile
    from ctfp.io.window import parse_window
    from ctfp.store.schema import make_metadata

    settings = settings_with(EmbedSettings, settings, overrides, "embed_batch", ())
    refuse_auto(settings.features)
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    if "path" not in table.column_names:
        raise InputError(f"embed_batch needs a 'path' column; the batch has {table.column_names}")
    paths = table.column("path").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else list(paths)
    labels = table.column("label").to_pylist() if "label" in table.column_names else None
    for n, (path, row_id) in enumerate(zip(paths, ids, strict=True)):
        if path is None or row_id is None:
            raise InputError(f"embed_batch: row {n} has no {'path' if path is None else 'id'}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"embed_batch: id {dup!r} appears twice in the batch")
    mapper = _mapper(settings)
    window = parse_window(settings.window)
    files = [
        InputFile(id=str(i), path=str(p), label=None if labels is None else labels[n])
        for n, (i, p) in enumerate(zip(ids, paths, strict=True))
    ]
    decoded = decode_all(files, window, mapper.views, max_pixels=settings.max_pixels)
    dim = mapper.identity.dim
    rows: list[tuple[Any, ...]] = []  # (id, source, frame, label, error): a slice or a failure
    for d in decoded:
        f = files[d.index]
        if d.views is None:
            rows.append((f.id, f.path, -1, f.label, d.error or "unknown error"))
        else:
            row_ids, frames = file_rows(f, d.count)
            rows += [(i, f.path, k, f.label, None) for i, k in zip(row_ids, frames, strict=True)]
    metadata = make_metadata(
        mapper.identity.to_dict(), settings.dtype, {"window": window.describe()}
    )
    schema = batch_schema(dim, settings.dtype, metadata)
    valid = np.array([r[4] is None for r in rows], dtype=bool)
    flat = np.zeros((len(rows), dim), dtype=settings.dtype)
    if valid.any():
        flat[valid] = stored(mapper(collate(decoded).views)[0], settings.dtype)
    values = pa.array(flat.reshape(-1), type=schema.field("embedding").type.value_type)
    names = ("id", "source", "frame", "label", "error")
    arrays = [pa.array([r[c] for r in rows], schema.field(n).type) for c, n in enumerate(names)]
    arrays.insert(4, pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~valid)))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["batch_schema", "embed_batch"]
