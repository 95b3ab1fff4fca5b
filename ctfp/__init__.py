"""ctfp: find the fingerprints generative models leave in synthetic CT slices, at archive scale."""

from __future__ import annotations

from typing import Any

from ctfp._version import __version__

# Lazy so that `import ctfp` does not pay for importing torch, FAISS and scikit-learn.
_LAZY = {
    "embed": "ctfp.embed.runner",
    "read_embeddings": "ctfp.store.reader",
    "iter_embeddings": "ctfp.store.reader",
    "read_errors": "ctfp.store.reader",
    "KMeans": "ctfp.cluster.kmeans",
    "GaussianMixture": "ctfp.cluster.gmm",
    "FlatIndex": "ctfp.index.flat",
    "CentroidMembership": "ctfp.tasks.membership",
    "ProximityMembership": "ctfp.tasks.proximity",
    "score_shards": "ctfp.tasks.score",
    "cluster_shards": "ctfp.tasks.attribution",
    "load_model": "ctfp.tasks.persist",
    "save_model": "ctfp.tasks.persist",
    "build_features": "ctfp.embed.features",
    "run_task1": "ctfp.tasks.runs",
    "run_task2": "ctfp.tasks.runs",
    "evaluate_run": "ctfp.evaluate",
    "validate_run": "ctfp.evaluate",
    "membership_metrics": "ctfp.evaluate",
    "attribution_metrics": "ctfp.evaluate",
    "write_report": "ctfp.report",
}
__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctfp' has no attribute {name!r}")
