"""ctfp: find the fingerprints generative models leave in synthetic CT slices, at archive scale."""

from __future__ import annotations

from typing import Any

from ctfp._version import __version__

__all__ = [
    "__version__",
    "embed",
    "iter_embeddings",
    "read_embeddings",
    "read_errors",
]

# Lazy so that `import ctfp` and `ctfp --help` do not pay for importing torch.
_LAZY = {
    "embed": "ctfp.embed.runner",
    "read_embeddings": "ctfp.store.reader",
    "iter_embeddings": "ctfp.store.reader",
    "read_errors": "ctfp.store.reader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctfp' has no attribute {name!r}")
