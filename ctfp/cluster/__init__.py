"""Clustering with the scikit-learn contract: KMeans (cuML/FAISS/sklearn), GaussianMixture.

The estimators load torch, so they are imported on first use: ``ctfp.cluster.options`` (the
command line's choices) stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ConvergenceWarning": "ctfp.cluster.gmm",
    "GaussianMixture": "ctfp.cluster.gmm",
    "KMeans": "ctfp.cluster.kmeans",
    "gpu_kmeans_available": "ctfp.cluster.kmeans",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctfp.cluster' has no attribute {name!r}")


__all__ = ["ConvergenceWarning", "GaussianMixture", "KMeans", "gpu_kmeans_available"]
