"""Reading shards back: whole datasets as a matrix, or streamed in bounded-memory batches."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.fs import Location, PathLike, as_local, resolve
from ctfp.store.delta import snapshot, split, table_of
from ctfp.store.manifest import committed_shards
from ctfp.store.schema import (
    ERRORS_DIR,
    ERRORS_FILE,
    ERRORS_SCHEMA,
    SLICES_FORMAT,
    identity_of,
    input_of,
    read_metadata,
)

#: A shard file: a Path locally, a URI string on an object store.
ShardPath = Path | str


@dataclass
class Embeddings:
    """Rows of one or more shards.

    Attributes
    ----------
    ids : (n,) object array of str
    matrix : (n, d) float32 (or the dtype asked for)
    table : pyarrow.Table with ``id, source, frame, label, fingerprint`` (no embedding column;
        ``fingerprint`` null for rows of shards written before ctfp kept it)
    metadata : dict, the shards' ctfp metadata (model identity, dtype, decoding, version)
    """

    ids: np.ndarray
    matrix: np.ndarray
    table: pa.Table
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        """(n,) object array of labels (None where a row has none)."""
        return np.asarray(self.table.column("label").to_pylist(), dtype=object)


@contextmanager
def naming(path: PathLike) -> Iterator[Location]:
    """``path`` resolved, and Arrow's errors on it (a truncated or foreign file) as an
    InputError that names the file and what to do."""
    loc = resolve(path)
    try:
        yield loc
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{path} is not a readable Parquet shard ({exc}); delete it and rerun the command "
            "that wrote it, or point at another folder"
        ) from None


@contextmanager
def open_shard(path: PathLike) -> Iterator[pq.ParquetFile]:
    """One shard, local or on a store, open for reading (:func:`naming`'s errors)."""
    with naming(path) as loc, pq.ParquetFile(loc.path, filesystem=loc.filesystem) as f:
        yield f


def read_footer(path: PathLike) -> tuple[pa.Schema, pq.FileMetaData]:
    """The Arrow schema (with ctfp's metadata) and the Parquet footer of one shard."""
    with open_shard(path) as f:
        return f.schema_arrow, f.metadata


def read_schema(path: PathLike) -> pa.Schema:
    """The Arrow schema of one shard (its footer; no data read)."""
    return read_footer(path)[0]


def read_table(path: PathLike, **kwargs: Any) -> pa.Table:
    """One shard as an Arrow table (``kwargs``: :func:`pyarrow.parquet.read_table`'s)."""
    with naming(path) as loc:
        return pq.read_table(loc.path, filesystem=loc.filesystem, **kwargs)


def shard_paths(paths: PathLike | Sequence[PathLike]) -> list[ShardPath]:
    """The shard files behind a folder, a shard file, or a list of either, in a stable order:
    a folder's as its commit record names them (:mod:`ctfp.store.manifest`), a Delta table's
    as its latest version, or the version named, does (:mod:`ctfp.store.delta`)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    import pyarrow.fs as pafs

    found: list[ShardPath] = []
    for given in map(as_local, paths):
        table = table_of(given)
        if table is not None:
            found.extend(snapshot(*table).files)
            continue
        loc = resolve(given)
        path = Path(given) if loc.local else os.fspath(given)
        kind = loc.filesystem.get_file_info(loc.path).type
        if kind == pafs.FileType.Directory:
            found.extend(committed_shards(path))
        elif kind == pafs.FileType.File:
            found.append(path)
        else:
            raise InputError(f"{str(path)!r} does not exist")
    if not found:
        raise InputError("no shard paths given")
    return found


def count_rows(paths: Sequence[ShardPath]) -> int:
    """Rows in the shard files ``paths``, from their Parquet footers (no data read)."""
    return sum(read_footer(p)[1].num_rows for p in paths)


def check_compatible(paths: Sequence[ShardPath]) -> dict[str, Any]:
    """Return the common metadata of ``paths``; refuse shards from different models or settings."""
    first: dict[str, Any] | None = None
    first_path: Path | None = None
    ranges: list[tuple[tuple[str, str] | None, Path]] = []
    for path in paths:
        schema, footer = read_footer(path)
        meta = read_metadata(schema)
        if meta is None:
            raise ShardMismatchError(f"{path} has no ctfp metadata; it was not written by ctfp")
        if meta.get("format") == SLICES_FORMAT:
            raise ShardMismatchError(
                f"{path} is a decoded-slice cache (ctfp cache), not embeddings; embed it first: "
                f"ctfp embed {path.parent} --out EMBEDDINGS"
            )
        if first is None:
            first, first_path = meta, path
        elif (a := identity_of(first)) != (b := identity_of(meta)):
            diffs = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
            raise ShardMismatchError(
                f"{first_path} and {path} hold embeddings that cannot be mixed ({diffs}); "
                "embed all inputs with the same model, weights, preprocessing and window"
            )
        footprint = id_footprint(footer)
        ranges.append((footprint[1:] if footprint is not None else None, path))
    assert first is not None
    # Refuse shards that share an id (a copied shard, a folder embedded twice into another),
    # reading the ids of only those whose ranges overlap (or are not known): one run's do not.
    unknown = [path for span, path in ranges if span is None]
    spans = sorted((span, path) for span, path in ranges if span is not None)
    groups: list[list[Path]] = []
    high: str | None = None
    for (low, top), path in spans:
        if high is None or low > high:
            groups.append([path])
            high = top
        else:
            groups[-1].append(path)
            high = max(high, top)
    for group in groups if not unknown else [[path for _, path in spans] + unknown]:
        if len(group) < 2:
            continue
        seen: dict[str, Path] = {}
        for path in group:
            ids = read_table(path, columns=["id"]).column("id").to_pylist()
            for i in ids:
                other = seen.setdefault(i, path)
                if other is not path:
                    shared = len(set(ids) & {k for k, v in seen.items() if v == other})
                    raise InputError(
                        f"{path} and {other} both hold the id {i!r} ({shared} ids in common): "
                        "a copied or twice-embedded shard would count those rows twice; remove "
                        "one of them"
                    )
    return first


def id_footprint(md: pq.FileMetaData) -> tuple[Any, ...] | None:
    """(rows, smallest id, largest id) of a shard from its footer statistics (None where there
    are none): two shards with the same footprint hold the same rows (a copy)."""
    if md.num_rows == 0 or "id" not in md.schema.names:
        return None
    column = md.schema.names.index("id")
    lows, highs = [], []
    for g in range(md.num_row_groups):
        stats = md.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        lows.append(stats.min)
        highs.append(stats.max)
    return md.num_rows, min(lows), max(highs)


def _matrix(column: pa.ChunkedArray | pa.Array, dtype: np.dtype, dim: int) -> np.ndarray:
    """(n, dim) values of an embedding column: a shard's fixed-size list, or a Delta table's
    list (every row checked to be ``dim`` long)."""
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_fixed_size_list(column.type) and len(column):
        lengths = pc.min_max(pc.list_value_length(column)).as_py()
        if lengths != {"min": dim, "max": dim}:
            raise InputError(
                f"an embedding column holds vectors of {lengths['min']} to {lengths['max']} "
                f"values where its metadata says {dim}: a row not written by ctfp"
            )
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, dim).astype(dtype, copy=False)


def of_inputs(table: pa.Table | pa.RecordBatch, inputs: Collection[str]) -> pa.Array:
    """The mask of ``table``'s rows that come from the input files ``inputs``: a row's own id,
    or its volume's (``vol`` for ``vol#3``)."""
    ids = table.column("id").to_pylist()
    frames = table.column("frame").to_pylist()
    return pa.array(
        [i in inputs or input_of(i, f) in inputs for i, f in zip(ids, frames, strict=True)],
        pa.bool_(),
    )


def read_embeddings(
    paths: PathLike | Sequence[PathLike],
    *,
    dtype: Any = np.float32,
    inputs: Collection[str] | None = None,
) -> Embeddings:
    """Read every row of the shards in ``paths`` (folders or files) into memory; with
    ``inputs`` (input-file ids), only the rows of those files (:func:`of_inputs`).

    Raises ShardMismatchError: the shards come from different models, weights, dimensions or
    preprocessing; InputError: no shards were found, or one id occurs more than once.
    """
    files = shard_paths(paths)
    meta = check_compatible(files)
    rows = count_rows(files)
    matrix = np.empty((rows, int(meta["dim"])), np.dtype(dtype))
    wanted = None if inputs is None else set(inputs)
    tables, start = [], 0
    # Shard by shard into one preallocated matrix: no whole Arrow column held beside it.
    for path in files:
        table = read_table(path)
        if wanted is not None:
            table = table.filter(of_inputs(table, wanted))
        column = table.column("embedding")
        matrix[start : start + table.num_rows] = _matrix(column, matrix.dtype, matrix.shape[1])
        start += table.num_rows
        tables.append(table.drop_columns(["embedding"]))
    if start < rows:
        matrix = matrix[:start].copy()
    # Shards from before fingerprints lack that column: null there.
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    if len(set(ids)) != len(ids):
        values, counts = np.unique(ids.astype(str), return_counts=True)
        dupes = values[counts > 1][:5].tolist()
        raise InputError(f"ids occur more than once across the shards, e.g. {dupes}")
    return Embeddings(ids, matrix, table, meta)


def iter_embeddings(
    paths: PathLike | Sequence[PathLike],
    *,
    batch_size: int = 65_536,
    dtype: Any = np.float32,
    inputs: Collection[str] | None = None,
) -> Iterator[Embeddings]:
    """Stream the shards in batches of at most ``batch_size`` rows; memory stays bounded.
    ``inputs``: only the rows of those input files, as :func:`read_embeddings`."""
    files = shard_paths(paths)
    meta = check_compatible(files)
    wanted = None if inputs is None else set(inputs)
    for path in files:
        for batch in scan_batches(path, batch_size=batch_size):
            table = pa.Table.from_batches([batch])
            if wanted is not None:
                table = table.filter(of_inputs(table, wanted))
                if not table.num_rows:
                    continue
            yield Embeddings(
                np.asarray(table.column("id").to_pylist(), dtype=object),
                _matrix(table.column("embedding"), np.dtype(dtype), int(meta["dim"])),
                table.drop_columns(["embedding"]),
                meta,
            )


def scan_batches(
    path: PathLike, *, batch_size: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The non-empty record batches of one shard, at most ``batch_size`` rows each (read with
    pyarrow.dataset: faster than ``ParquetFile.iter_batches`` on fixed-size lists)."""
    import pyarrow.dataset as ds

    with naming(path) as loc:
        batches = ds.dataset(loc.path, format="parquet", filesystem=loc.filesystem).to_batches(
            columns=list(columns) if columns is not None else None,
            batch_size=batch_size,
            batch_readahead=1,
            fragment_readahead=1,
            use_threads=False,
            memory_pool=reading_pool(),
        )
    return _named_batches(path, batches)


def _named_batches(path: PathLike, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The non-empty batches; a read error part-way (a corrupt page) names the shard."""
    with naming(path):
        yield from (b for b in batches if len(b))


def reading_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow has it, else the system allocator: unlike Arrow's default, both
    keep the large decode buffers mapped between batches."""
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.system_memory_pool()


def read_errors(path: PathLike) -> pa.Table:
    """The errors table (``id, source, reason``) of an output folder; empty when nothing failed."""
    table = split(path)
    errors = resolve(table[0] if table else path).join(ERRORS_DIR, ERRORS_FILE)
    if not errors.exists():
        return ERRORS_SCHEMA.empty_table()
    return read_table(errors)
