"""The Gaussian mixture's option values, importable without torch (the command line's
parser reads them)."""

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

__all__ = ["COVARIANCE_TYPES", "INIT_PARAMS"]
