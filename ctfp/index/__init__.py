"""Nearest-neighbour search with FAISS: exact flat indexes (L1, L2, inner product) on CPU or GPU."""

from ctfp.index.flat import FlatIndex

__all__ = ["FlatIndex"]
