"""Parquet shards: the schema, an atomic resumable writer and a streaming reader."""

from ctfp.store.reader import Embeddings, iter_embeddings, read_embeddings, read_errors
from ctfp.store.writer import ShardWriter

__all__ = ["Embeddings", "ShardWriter", "iter_embeddings", "read_embeddings", "read_errors"]
