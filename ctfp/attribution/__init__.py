"""Task 2, attribution: which generator made a synthetic slice (a classifier of the labelled
generators, or Gaussian mixture clustering).

The estimators load torch, so they are imported on first use: the settings (which the command
line's parser reads) stay light.
"""

from __future__ import annotations

from ctfp._lazy import lazy

_LAZY = {
    "GroupClassifier": "ctfp.attribution.classify",
    "Clustering": "ctfp.attribution.clustering",
    "LinearProjection": "ctfp.attribution.clustering",
    "cluster_slices": "ctfp.attribution.clustering",
    "select_components": "ctfp.attribution.clustering",
    "ClusterSettings": "ctfp.attribution.settings",
    "MixtureSettings": "ctfp.attribution.settings",
    "Task2Settings": "ctfp.attribution.settings",
    "cluster_shards": "ctfp.attribution.shards",
}


__getattr__ = lazy(__name__, _LAZY)


__all__ = sorted(_LAZY)
