"""Task 2, attribution: which generator made a synthetic slice (a classifier of the labelled
generators, or Gaussian mixture clustering)."""

from ctfp.attribution.classify import GroupClassifier
from ctfp.attribution.clustering import (
    Clustering,
    LinearProjection,
    cluster_slices,
    select_components,
)
from ctfp.attribution.settings import ClusterSettings, MixtureSettings, Task2Settings
from ctfp.attribution.shards import cluster_shards

__all__ = [
    "ClusterSettings",
    "Clustering",
    "GroupClassifier",
    "LinearProjection",
    "MixtureSettings",
    "Task2Settings",
    "cluster_shards",
    "cluster_slices",
    "select_components",
]
