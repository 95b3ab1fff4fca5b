"""Task 2 at archive scale: a Gaussian mixture over embedding shards too large for memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp.attribution.clustering import Clustering, LinearProjection, select_components
from ctfp.attribution.settings import ClusterSettings
from ctfp.cluster.gmm import GaussianMixture
from ctfp.exceptions import InputError
from ctfp.progress import progress_bar


def cluster_shards(
    shards: Any,
    settings: ClusterSettings | None = None,
    *,
    progress: bool = False,
    **overrides: Any,
) -> tuple[Clustering, dict[str, Any]]:
    """Fit a Gaussian mixture over embedding shards too large for memory.

    ``settings`` (``overrides``: ClusterSettings fields to change, e.g. ``k=4, passes=5``): a
    seeded uniform sample of ``sample`` rows (one streamed pass) fits the optional PCA (``pca``
    components) and the mixture's start (``init``); then EM runs up to ``passes`` passes over
    the shards, each accumulating the sufficient statistics batch by batch
    (:meth:`GaussianMixture.fit_stream`), until the mean log-likelihood moves less than
    ``tol``. Memory is one batch, the sample and O(k d^2). ``k="auto"`` picks the k of
    ``k_range`` with the lowest BIC on the sample. Returns the clustering (``labels`` are the
    sample's) and a summary: k (and the BICs for ``"auto"``), rows, sample size, passes,
    convergence, mean log-likelihood, the shards' metadata. Save it with
    :func:`ctfp.save_model` and assign every row with :func:`ctfp.score_shards` (``ctfp
    cluster`` and ``ctfp score``).
    """
    from ctfp.store.reader import check_compatible, count_rows, iter_embeddings, shard_paths

    s = (settings or ClusterSettings()).replace(**overrides)
    k, k_range, pca, seed, device = s.k, s.ks, s.pca, s.seed, s.device
    covariance_type, init, reg_covar = s.covariance_type, s.init, s.reg_covar
    sample_rows, passes, tol, batch_size = s.sample, s.passes, s.tol, s.batch_size
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
            finite = np.isfinite(batch.matrix).all(axis=1)
            if not finite.all():  # every row passes here once: EM would only say "NaN"
                raise InputError(
                    f"the shards in {str(shards)!r} hold non-finite embeddings (NaN or infinity), "
                    f"e.g. the row with id {batch.ids[int(np.argmin(finite))]!r}; re-embed its "
                    "input or remove the row"
                )
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
