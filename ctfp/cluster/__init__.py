"""Clustering with the scikit-learn contract: KMeans (cuML/FAISS/sklearn), GaussianMixture."""

from ctfp.cluster.gmm import GaussianMixture
from ctfp.cluster.kmeans import KMeans

__all__ = ["GaussianMixture", "KMeans"]
