"""The shard schema and its metadata: the contract between every ctfp stage."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from ctfp._version import __version__

FORMAT = "ctfp-embeddings/1"
METADATA_KEY = b"ctfp"
ERRORS_DIR = "_errors"
ERRORS_FILE = "errors.parquet"
FINGERPRINT = "fingerprint"  # the column of each row's input fingerprint (see shard_schema)
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
PIXELS_DTYPE = "uint8"  # the decoded-slice cache (ctfp.store.cache)
SLICES_FORMAT = "ctfp-slices/1"
# Fields of the metadata that must agree for two shards' embeddings to be comparable: the model
# and everything that made its input pixels (the DICOM/NIfTI window, a cache's size).
IDENTITY_FIELDS = ("model", "weights_sha256", "dim", "preprocessing", "decode")

ERRORS_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


def payload_field(dim: int, dtype: str) -> pa.Field:
    """The vector column: ``embedding`` (float vectors) or, for the decoded-slice cache,
    ``pixels`` (a square uint8 slice as fixed-size binary: one value per row, fast to read)."""
    if dtype == PIXELS_DTYPE:
        return pa.field("pixels", pa.binary(dim), nullable=False)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    # The elements are declared non-null (an embedding has no missing values): Parquet then
    # stores no definition level per element, and reading a shard costs ~5 us less CPU per
    # 2048-d row (measured: scoring 1M rows from shards +12 % rows/s on 2 cores). Shards written
    # before, with nullable elements, read the same.
    element = pa.field("element", DTYPES[dtype], nullable=False)
    return pa.field("embedding", pa.list_(element, dim), nullable=False)


def shard_schema(
    dim: int, dtype: str, metadata: dict[str, Any], *, fingerprints: bool = False
) -> pa.Schema:
    """``id, source, frame, label, embedding fixed_size_list<dtype, dim>`` (or ``pixels``) and,
    with ``fingerprints`` (what :class:`~ctfp.store.writer.ShardWriter` writes), ``fingerprint``,
    with ctfp metadata.

    ``fingerprint`` is what the row's input was when it was found (its size and modification
    time: :attr:`ctfp.io.sources.InputFile.fingerprint`); with ``source`` and ``label`` it is
    what a rerun compares to decide whether the row is still the input's. Shards without the
    column (written before ctfp kept it) count as changed: their inputs are embedded again.
    """
    stamps = [pa.field(FINGERPRINT, pa.string())] if fingerprints else []
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("frame", pa.int32(), nullable=False),
            pa.field("label", pa.string()),
            payload_field(dim, dtype),
            *stamps,
        ],
        metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()},
    )


def input_of(row_id: str, frame: int) -> str:
    """The id of the input file of a row: ``vol`` for a volume's row ``vol#3`` (frame 3), the
    row id itself for a single-slice file. (A cache row's input is the row id itself: callers
    that take cache rows look up both.)"""
    suffix = f"#{frame}"
    return row_id[: -len(suffix)] if row_id.endswith(suffix) else row_id


def make_metadata(identity: dict[str, Any], dtype: str, decode: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict stored in every shard: model identity, storage dtype, decoding, version.

    Round-tripped through JSON so that it compares equal to what a shard gives back (tuples become
    lists).
    """
    metadata = {
        "format": SLICES_FORMAT if dtype == PIXELS_DTYPE else FORMAT,
        **identity,
        "dtype": dtype,
        "decode": decode,
        "ctfp_version": __version__,
    }
    return json.loads(json.dumps(metadata, sort_keys=True))


def read_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """The ctfp metadata of a shard's schema, or None for a Parquet file ctfp did not write."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def identity_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of the metadata that decides whether embeddings are comparable."""
    return {k: metadata.get(k) for k in IDENTITY_FIELDS}
