"""Task 2: cluster synthetic slices by the model that made them with a Gaussian mixture."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    x: Any, k_range: Sequence[int], gmm_kwargs: dict[str, Any], progress: bool = False
) -> tuple[int, dict[int, float], dict[int, float]]:
    from sklearn.metrics import silhouette_score

    ks = [k for k in k_range if 1 <= k <= len(x)]
    if not ks:
        raise ValueError(f"no k in {list(k_range)} fits {len(x)} samples")
    bics, silhouettes = {}, {}
    for k in progress_bar(len(ks), "gmm k sweep", "k", enabled=progress, iterable=ks):
        model = GaussianMixture(k, **gmm_kwargs).fit(x)
        bics[k] = model.bic(x)
        labels = model.predict(x)
        n_labels = len(np.unique(labels))
        silhouettes[k] = (
            float(silhouette_score(x, labels)) if 1 < n_labels < len(x) else float("nan")
        )
    return min(bics, key=bics.__getitem__), bics, silhouettes


@dataclass
class Clustering:
    """What :func:`cluster_slices` found; ``predict`` maps new embeddings the same way."""

    labels: np.ndarray
    k: int
    model: GaussianMixture
    projection: Any = None
    bics: dict[int, float] | None = None
    silhouettes: dict[int, float] | None = None

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
        """Projected rows in float64, computed 8,192 rows at a time: the float64 temporaries of
        a streamed batch stay small (a 65,536 x 2,048 batch would need two 1 GiB ones)."""
        x = np.asarray(x)
        out = np.empty((len(x), len(self.components_)), np.float64)
        for i in range(0, len(x), 8192):
            chunk = x[i : i + 8192].astype(np.float64) - self.mean_
            out[i : i + 8192] = chunk @ self.components_.T
        return out


def cluster_slices(
    x: np.ndarray,
    *,
    k: int | str = 4,
    init: str = "kmeans",
    covariance_type: str = "full",
    k_range: Sequence[int] = range(2, 9),
    n_init: int = 1,
    reg_covar: float = 1e-6,
    pca: int | None = None,
    train_x: np.ndarray | None = None,
    train_groups: Sequence[Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> Clustering:
    """Cluster ``x`` (n, d) with a Gaussian mixture.

    ``pca``: project onto that many principal components of ``x`` first. ``train_x`` with
    ``train_groups``: semi-supervised start, one component per group initialised at the group's
    mean (``k`` is then the number of groups). ``k="auto"``: lowest BIC over ``k_range``
    (``progress``: a bar over the k tried).
    """
    projection = None
    if pca is not None:
        from sklearn.decomposition import PCA

        n_comp = min(pca, x.shape[0] - 1, x.shape[1])
        if n_comp < 1:
            raise InputError(f"PCA to {pca} components needs at least 2 slices")
        projection = PCA(n_comp, random_state=seed).fit(x)
    z = x if projection is None else projection.transform(x)
    gmm_kwargs: dict[str, Any] = dict(
        covariance_type=covariance_type,
        init_params=init,
        n_init=n_init,
        reg_covar=reg_covar,
        random_state=seed,
        device=device,
    )
    bics = silhouettes = None
    if train_x is not None and train_groups is not None:
        groups = np.asarray(train_groups, dtype=object)
        names = sorted(set(groups.tolist()))
        tz = train_x if projection is None else projection.transform(train_x)
        means = np.stack([tz[groups == g].mean(0) for g in names])
        k = len(names)
        gmm_kwargs.update(_start_from_groups(z, means, covariance_type, reg_covar))
    elif k == "auto":
        k, bics, silhouettes = _sweep(z, k_range, gmm_kwargs, progress)
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
    group cannot estimate a covariance, and covariances from an unrelated k-means partition
    would contradict the means)."""
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


def cluster_shards(
    shards: Any,
    *,
    k: int | str = 4,
    k_range: Sequence[int] = range(2, 9),
    covariance_type: str = "full",
    init: str = "kmeans",
    pca: int | None = None,
    sample_rows: int = 50_000,
    passes: int = 20,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    batch_size: int = 65_536,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> tuple[Clustering, dict[str, Any]]:
    """Fit a ``k``-component Gaussian mixture over embedding shards too large for memory.

    A seeded uniform sample of ``sample_rows`` rows (one streamed pass) fits the optional PCA
    (``pca`` components) and the mixture's start (``init``); then EM runs up to ``passes``
    passes over the shards, each accumulating the sufficient statistics batch by batch
    (:meth:`GaussianMixture.fit_stream`), until the mean log-likelihood moves less than
    ``tol``. Memory is one batch, the sample and O(k d^2). ``k="auto"`` picks the k of
    ``k_range`` with the lowest BIC on the sample. Returns the clustering (``labels`` are the
    sample's) and a summary: k (and the BICs for ``"auto"``), rows, sample size, passes,
    convergence, mean log-likelihood, the shards' metadata. Save it with
    :func:`ctfp.save_model` and assign every row with :func:`ctfp.score_shards` (``ctfp
    cluster`` and ``ctfp score``).
    """

    from ctfp.store.reader import check_compatible, count_rows, iter_embeddings, shard_paths

    if k != "auto" and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or 'auto', not {k!r}")
    if passes < 1 or sample_rows < 1:
        raise ValueError("passes and sample_rows must be at least 1")
    paths = shard_paths(shards)
    metadata = check_compatible(paths)
    rows = count_rows(paths)
    if rows < (min(k_range) if k == "auto" else k):
        raise InputError(f"{rows} rows cannot make {k} clusters")
    rng = np.random.default_rng(seed)
    wanted = np.sort(rng.choice(rows, size=min(sample_rows, rows), replace=False))
    parts, start = [], 0
    with progress_bar(rows, "sample", "row", enabled=progress) as bar:
        for batch in iter_embeddings(paths, batch_size=batch_size):
            lo, hi = np.searchsorted(wanted, [start, start + len(batch)])
            parts.append(batch.matrix[wanted[lo:hi] - start])
            start += len(batch)
            bar.update(len(batch))
    sample = np.concatenate(parts)
    projection = None
    if pca is not None:
        from sklearn.decomposition import PCA

        if not 1 <= pca <= min(sample.shape):
            raise ValueError(f"pca must be between 1 and {min(sample.shape)}")
        fitted = PCA(pca, random_state=seed).fit(sample)
        projection = LinearProjection(fitted.mean_, fitted.components_)
        sample = projection.transform(sample)

    bics = None
    if k == "auto":
        k, bics = select_components(
            sample,
            k_range,
            covariance_type=covariance_type,
            reg_covar=reg_covar,
            init_params=init,
            random_state=seed,
            device=device,
        )

    def batches() -> Any:
        for batch in iter_embeddings(paths, batch_size=batch_size):
            yield batch.matrix if projection is None else projection.transform(batch.matrix)

    gmm = GaussianMixture(
        k,
        covariance_type=covariance_type,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=passes,
        init_params=init,
        random_state=seed,
        device=device,
    ).fit_stream(batches, sample, progress=progress)
    clustering = Clustering(
        labels=np.asarray(gmm.predict(sample)), k=k, model=gmm, projection=projection, bics=bics
    )
    summary = {
        "k": k,
        "bics": bics,
        "rows": rows,
        "sample_rows": len(sample),
        "passes": gmm.n_iter_,
        "converged": bool(gmm.converged_),
        "mean_log_likelihood": float(gmm.lower_bound_),
        "metadata": metadata,
    }
    return clustering, summary
