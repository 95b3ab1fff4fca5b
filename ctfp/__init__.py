"""ctfp: find the fingerprints generative models leave in synthetic CT slices, at archive scale."""

from __future__ import annotations

from ctfp._lazy import lazy
from ctfp._version import __version__

# Lazy so that `import ctfp` does not pay for importing torch, FAISS and scikit-learn.
_LAZY = {
    "embed": "ctfp.embed.runner",
    "embed_batch": "ctfp.embed.batch",
    "read_embeddings": "ctfp.store.reader",
    "iter_embeddings": "ctfp.store.reader",
    "read_errors": "ctfp.store.reader",
    "KMeans": "ctfp.cluster.kmeans",
    "GaussianMixture": "ctfp.cluster.gmm",
    "FlatIndex": "ctfp.index.flat",
    "CentroidMembership": "ctfp.membership.centroid",
    "ProximityMembership": "ctfp.membership.proximity",
    "MembershipMethod": "ctfp.membership.base",
    "METHODS": "ctfp.membership.registry",
    "score_shards": "ctfp.runs.score",
    "cluster_slices": "ctfp.attribution.clustering",
    "cluster_shards": "ctfp.attribution.shards",
    "load_model": "ctfp.runs.models",
    "save_model": "ctfp.runs.models",
    "build_features": "ctfp.embed.features",
    "build_cache": "ctfp.embed.cache",
    "run_task1": "ctfp.runs.task1",
    "run_task2": "ctfp.runs.task2",
    "EmbedSettings": "ctfp.embed.settings",
    "CacheSettings": "ctfp.embed.settings",
    "EngineSettings": "ctfp.engine.settings",
    "Task1Settings": "ctfp.membership.settings",
    "ProximitySettings": "ctfp.membership.options",
    "Task2Settings": "ctfp.attribution.settings",
    "ClusterSettings": "ctfp.attribution.settings",
    "ScoreSettings": "ctfp.runs.settings",
    "evaluate_run": "ctfp.evaluate",
    "validate_run": "ctfp.evaluate",
    "membership_metrics": "ctfp.evaluate",
    "attribution_metrics": "ctfp.evaluate",
    "write_report": "ctfp.report",
    "SettingsError": "ctfp.settings",
}
__all__ = ["__version__", *sorted(_LAZY)]


__getattr__ = lazy(__name__, _LAZY)
