"""Clustering with the scikit-learn contract: KMeans (cuML/FAISS/sklearn), GaussianMixture."""

from ctfp.cluster.gmm import ConvergenceWarning, GaussianMixture
from ctfp.cluster.kmeans import KMeans, gpu_kmeans_available

__all__ = ["ConvergenceWarning", "GaussianMixture", "KMeans", "gpu_kmeans_available"]
