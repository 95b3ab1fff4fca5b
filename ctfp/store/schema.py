"""The shard schema and its metadata: the contract between every ctfp stage."""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from ctfp._version import __version__

FORMAT = "ctfp-embeddings/1"
METADATA_KEY = b"ctfp"
ERRORS_DIR = "_errors"
ERRORS_FILE = "errors.parquet"
PART_RE = re.compile(r"^part-[A-Za-z0-9_-]+\.parquet$")  # what writers name their parts
FINGERPRINT = "fingerprint"  # the column of each row's input fingerprint (see shard_schema)
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
PIXELS_DTYPE = "uint8"  # the decoded-slice cache (ctfp.store.cache)
SLICES_FORMAT = "ctfp-slices/1"
# Fields of the metadata that must agree for two shards' embeddings to be comparable: the model
# and everything that made its input pixels (the DICOM/NIfTI window, a cache's size).
IDENTITY_FIELDS = ("model", "weights_sha256", "dim", "preprocessing", "decode")

ERRORS_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


def shard_schema(
    dim: int, dtype: str, metadata: dict[str, Any], *, fingerprints: bool = False
) -> pa.Schema:
    """``id, source, frame, label, embedding fixed_size_list<dtype, dim>`` (for the decoded-slice
    cache ``pixels``, a square uint8 slice as fixed-size binary) and, with ``fingerprints``,
    ``fingerprint`` (:attr:`ctfp.io.sources.InputFile.fingerprint`, what a rerun compares), with
    ctfp metadata.
    """
    if dtype == PIXELS_DTYPE:
        payload = pa.field("pixels", pa.binary(dim), nullable=False)
    elif dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    else:  # non-null elements: Parquet stores no definition level per element (faster reads)
        element = pa.field("element", DTYPES[dtype], nullable=False)
        payload = pa.field("embedding", pa.list_(element, dim), nullable=False)
    stamps = [pa.field(FINGERPRINT, pa.string())] if fingerprints else []
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("frame", pa.int32(), nullable=False),
            pa.field("label", pa.string()),
            payload,
            *stamps,
        ],
        metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()},
    )


def input_of(row_id: str, frame: int) -> str:
    """The id of the input file of a row: ``vol`` for a volume's row ``vol#3`` (frame 3), the
    row id itself for a single-slice file."""
    return row_id.removesuffix(f"#{frame}")


def make_metadata(identity: dict[str, Any], dtype: str, decode: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict stored in every shard: model identity, storage dtype, decoding, version
    (through JSON, so that it compares equal to what a shard gives back)."""
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
