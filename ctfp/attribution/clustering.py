"""Task 2 in memory: cluster synthetic slices by the model that made them (Gaussian mixture)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp.attribution.settings import Task2Settings
from ctfp.cluster.gmm import GaussianMixture
from ctfp.exceptions import InputError
from ctfp.progress import progress_bar


def select_components(
    x: Any, k_range: Sequence[int], **gmm_kwargs: Any
) -> tuple[int, dict[int, float]]:
    """Fit one mixture per k in ``k_range`` and return the k with the lowest BIC, and all BICs."""
    k, bics, _ = _sweep(x, k_range, gmm_kwargs)
    return k, bics


def _sweep(
    x: Any,
    k_range: Sequence[int],
    gmm_kwargs: dict[str, Any],
    *,
    progress: bool = False,
    rows: np.ndarray | None = None,
) -> tuple[int, dict[int, float], dict[int, float]]:
    """One mixture per k of ``k_range`` on ``x``: (the k with the lowest BIC, the BICs, the
    silhouettes of ``rows`` of ``x``, default all; NaN where fewer than two clusters)."""
    from sklearn.metrics import silhouette_score

    ks = [k for k in k_range if 1 <= k <= len(x)]
    if not ks:
        raise ValueError(f"no k in {list(k_range)} fits {len(x)} samples")
    some = x if rows is None else x[rows]
    bics, silhouettes = {}, {}
    for k in progress_bar(len(ks), "gmm k sweep", "k", enabled=progress, iterable=ks):
        model = GaussianMixture(k, **gmm_kwargs).fit(x)
        bics[k] = float(model.bic(x))
        labels = np.asarray(model.predict(x))
        if rows is not None:
            labels = labels[rows]
        found = len(np.unique(labels))
        silhouettes[k] = (
            float(silhouette_score(some, labels)) if 1 < found < len(labels) else float("nan")
        )
    return min(bics, key=bics.__getitem__), bics, silhouettes


@dataclass
class Clustering:
    """What :func:`cluster_slices` found; ``predict`` maps new embeddings the same way. Saved
    like a membership method (:meth:`to_state` / :meth:`from_state`, kind ``gmm``)."""

    name: ClassVar[str] = "gmm"
    task: ClassVar[str] = "task2"

    labels: np.ndarray
    k: int
    model: GaussianMixture
    projection: Any = None
    bics: dict[int, float] | None = None
    silhouettes: dict[int, float] | None = None
    groups: list[str] | None = None  # the labelled group each component stands for, if named

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The mixture and its projection: (JSON-ready parameters, numpy arrays)."""
        gmm = self.model
        gmm_params, arrays = gmm.to_state()
        # k and covariance_type at the top level: what models saved before 0.2 hold.
        params = {"k": self.k, "covariance_type": gmm.covariance_type, "gmm": gmm_params}
        if self.groups is not None:
            params["groups"] = list(self.groups)
        if self.projection is not None:  # a scikit-learn PCA or a LinearProjection
            mean = getattr(self.projection, "mean_", None)
            comps = getattr(self.projection, "components_", None)
            if mean is None or comps is None or getattr(self.projection, "whiten", False):
                raise InputError("only a linear (non-whitening) PCA projection can be saved")
            arrays["projection_mean"] = np.asarray(mean)
            arrays["projection_components"] = np.asarray(comps)
        return params, arrays

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, device: str = "auto"
    ) -> Clustering:
        """The clustering :meth:`to_state` described (``labels`` empty), EM on ``device``."""
        if "gmm" in params:
            gmm = GaussianMixture.from_state(params["gmm"], arrays, device=device)
        else:  # a model saved before 0.2: the mixture's parameters only
            gmm = GaussianMixture.from_params(
                arrays["weights"],
                arrays["means"],
                arrays["covariances"],
                covariance_type=params["covariance_type"],
                device=device,
            )
        projection = None
        if "projection_mean" in arrays:
            projection = LinearProjection(
                arrays["projection_mean"], arrays["projection_components"]
            )
        groups = params.get("groups")
        if groups is not None and len(groups) != int(params["k"]):
            raise InputError(f"a saved mixture of {params['k']} components names {len(groups)}")
        labels = np.empty(0, dtype=np.int64)
        return cls(labels, int(params["k"]), gmm, projection, groups=groups)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x if self.projection is None else self.projection.transform(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(self.transform(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, k) posterior probability of each component."""
        return np.asarray(self.model.predict_proba(self.transform(x)))


@dataclass
class LinearProjection:
    """``(x - mean_) @ components_.T``: a fitted (non-whitening) PCA without its fitting
    machinery, as saved; the attribute names are scikit-learn's."""

    mean_: np.ndarray
    components_: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Projected rows in float64, 8,192 rows at a time (small float64 temporaries)."""
        x = np.asarray(x)
        out = np.empty((len(x), len(self.components_)), np.float64)
        for i in range(0, len(x), 8192):
            chunk = x[i : i + 8192].astype(np.float64) - self.mean_
            out[i : i + 8192] = chunk @ self.components_.T
        return out


def cluster_slices(
    x: np.ndarray,
    settings: Task2Settings | None = None,
    *,
    train_x: np.ndarray | None = None,
    train_groups: Sequence[Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Clustering:
    """Cluster ``x`` (n, d) with a Gaussian mixture described by ``settings`` (``overrides``:
    Task2Settings fields to change, e.g. ``k=3, pca=8``).

    ``pca``: project onto that many principal components of ``x`` first. ``train_x`` (m, d)
    with ``train_groups`` (m,): semi-supervised start, one component per group initialised at
    the group's mean (``k`` is then the number of groups). ``k="auto"``: lowest BIC over
    ``k_range`` (``progress``: a bar over the k tried).
    """
    s = (settings or Task2Settings()).replace(**overrides)
    k, pca, seed = s.k, s.pca, s.seed
    projection = None
    if pca is not None:
        from sklearn.decomposition import PCA

        n_comp = min(pca, x.shape[0] - 1, x.shape[1])
        if n_comp < 1:
            raise InputError(f"PCA to {pca} components needs at least 2 slices")
        projection = PCA(n_comp, random_state=seed).fit(x)
    z = x if projection is None else projection.transform(x)
    gmm_kwargs = {**s.gmm_kwargs, "n_init": s.n_init}
    bics = silhouettes = None
    if train_x is not None and train_groups is not None:
        groups = np.asarray(train_groups, dtype=object)
        names = sorted(set(groups.tolist()))
        tz = train_x if projection is None else projection.transform(train_x)
        means = np.stack([tz[groups == g].mean(0) for g in names])
        k = len(names)
        gmm_kwargs.update(_start_from_groups(z, means, s.covariance_type, s.reg_covar))
    elif k == "auto":
        k, bics, silhouettes = _sweep(z, s.ks, gmm_kwargs, progress=progress)
    k = int(k)
    if not 1 <= k <= len(z):
        raise InputError(f"k must be between 1 and the {len(z)} slices, got {k}")
    model = GaussianMixture(k, **gmm_kwargs).fit(z)
    return Clustering(model.predict(z), k, model, projection, bics, silhouettes)


def _start_from_groups(
    z: np.ndarray, means: np.ndarray, covariance_type: str, reg_covar: float
) -> dict[str, np.ndarray]:
    """A coherent EM start from labelled group means: every slice goes to its nearest group
    mean, and weights and covariances come from that assignment (a few labelled examples per
    group cannot estimate a covariance)."""
    k, d = means.shape
    nearest = ((z[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    pooled = np.cov(z, rowvar=False).reshape(d, d) + reg_covar * np.eye(d)
    weights = np.empty(k)
    covs = []
    for j in range(k):
        members = z[nearest == j]
        weights[j] = max(len(members), 1)
        if len(members) > d:
            c = np.cov(members, rowvar=False).reshape(d, d) + reg_covar * np.eye(d)
        else:
            c = pooled  # too few slices for a covariance of their own
        covs.append(c)
    cov = np.stack(covs)
    if covariance_type == "full":
        precisions = np.linalg.inv(cov)
    elif covariance_type == "tied":
        precisions = np.linalg.inv((cov * (weights / weights.sum())[:, None, None]).sum(0))
    elif covariance_type == "diag":
        precisions = 1.0 / np.diagonal(cov, axis1=1, axis2=2)
    else:
        precisions = 1.0 / np.diagonal(cov, axis1=1, axis2=2).mean(1)
    return {
        "weights_init": weights / weights.sum(),
        "means_init": means,
        "precisions_init": precisions,
    }
