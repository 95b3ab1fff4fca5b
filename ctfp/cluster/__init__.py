"""Clustering with the scikit-learn contract: KMeans (cuML/FAISS/sklearn), GaussianMixture.

The estimators load torch, so they are imported on first use: ``ctfp.cluster.options`` (the
command line's choices) stays light.
"""

from __future__ import annotations

from ctfp._lazy import lazy

_LAZY = {
    "ConvergenceWarning": "ctfp.cluster.gmm",
    "GaussianMixture": "ctfp.cluster.gmm",
    "KMeans": "ctfp.cluster.kmeans",
    "gpu_kmeans_available": "ctfp.cluster.kmeans",
}


__getattr__ = lazy(__name__, _LAZY)


__all__ = ["ConvergenceWarning", "GaussianMixture", "KMeans", "gpu_kmeans_available"]
