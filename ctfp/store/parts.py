"""Parts: the rows of whole input files as one Parquet file, written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctfp.io.fs import Location, PathLike, resolve
from ctfp.store.schema import FINGERPRINT

ROW_GROUP_ROWS = 4096  # 16 MiB of float16 2048-d embeddings per row group


def write_atomic(table: pa.Table, path: PathLike | Location, **kwargs: Any) -> int:
    """Write ``table`` to the Parquet file ``path`` atomically (:meth:`Location.put
    <ctfp.io.fs.Location.put>`) and return its size in bytes."""
    return resolve(path).put(lambda f: pq.write_table(table, f, **kwargs))


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers never see half a file."""
    resolve(path).put(text.encode("utf-8"))


#: The rows of one input file for a part: row ids, source, frames, label, (n, dim) values and
#: the input's fingerprint (a 5-tuple without it: unknown).
BufferedFile = tuple[list[str], str, list[int], "str | None", np.ndarray, "str | None"]


def rows_table(schema: pa.Schema, files: Sequence[tuple[Any, ...]]) -> pa.Table:
    """The shard table of whole input files' rows (:data:`BufferedFile`) in ``schema`` (a
    shard's or a Delta table's)."""
    ids = [i for file_ids, *_ in files for i in file_ids]
    sources = [f[1] for f in files for _ in f[0]]
    frames = [frame for f in files for frame in f[2]]
    labels = [f[3] for f in files for _ in f[0]]
    stamps = [f[5] if len(f) > 5 else None for f in files for _ in f[0]]
    values = np.concatenate([f[4] for f in files])
    payload = schema.field(4).type
    if pa.types.is_fixed_size_binary(payload):  # the decoded-slice cache: uint8 pixels
        data = np.ascontiguousarray(values, dtype=np.uint8)
        embedding = pa.FixedSizeBinaryArray.from_buffers(
            payload, len(ids), [None, pa.py_buffer(data.tobytes())]
        )
    else:
        dtype = payload.value_type.to_pandas_dtype()
        flat = pa.array(values.astype(dtype, copy=False).reshape(-1))
        if pa.types.is_list(payload):  # a Delta table's array<float>: every row dim long
            offsets = pa.array(np.arange(0, len(flat) + 1, values.shape[1], dtype=np.int32))
            embedding = pa.ListArray.from_arrays(offsets, flat, type=payload)
        else:
            embedding = pa.FixedSizeListArray.from_arrays(flat, payload.list_size)
    columns = [
        pa.array(ids, pa.string()),
        pa.array(sources, pa.string()),
        pa.array(frames, pa.int32()),
        pa.array(labels, pa.string()),
        embedding,
        *([pa.array(stamps, pa.string())] if FINGERPRINT in schema.names else []),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(path: PathLike, table: pa.Table) -> int:
    """Write one part atomically (see :func:`write_atomic`); returns its size in bytes. Small
    row groups let readers stream a shard; dictionary encoding slows float vectors' reading."""
    return write_atomic(
        table,
        path,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=["source", "label"],
    )


__all__ = [
    "ROW_GROUP_ROWS",
    "BufferedFile",
    "rows_table",
    "write_atomic",
    "write_part",
    "write_text_atomic",
]
