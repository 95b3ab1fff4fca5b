"""The ctfp version, recorded in every shard's metadata."""

__version__ = "0.3.0"
