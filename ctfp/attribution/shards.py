"""Task 2 at archive scale: a Gaussian mixture over embedding shards too large for memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctfp.attribution.clustering import Clustering, LinearProjection, _sweep
from ctfp.attribution.settings import ClusterSettings, MixtureSettings
from ctfp.cluster.gmm import GaussianMixture
from ctfp.device import resolve_device
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError
from ctfp.progress import logger, progress_bar

#: Rows of the sample the silhouette of each k is computed on (it costs O(n^2)).
SILHOUETTE_ROWS = 2000


def cluster_shards(
    shards: Any,
    settings: ClusterSettings | None = None,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = False,
    **overrides: Any,
) -> tuple[Clustering, dict[str, Any]]:
    """Fit a Gaussian mixture over embedding shards too large for memory.

    ``settings`` (``overrides``: ClusterSettings fields to change, e.g. ``k=4, passes=5``): a
    seeded sample of ``sample`` rows fits the optional PCA and the mixture's start; then EM
    runs up to ``passes`` passes over the shards (:meth:`GaussianMixture.fit_stream`, one
    partition per shard) until the mean log-likelihood moves less than ``tol``. Memory is one
    batch, the sample and O(k d^2). ``k="auto"``: the lowest BIC on the sample over ``k_range``
    (each k's silhouette on at most :data:`SILHOUETTE_ROWS` sampled rows is reported).

    ``engine``: ``local`` or ``ray`` (each pass a map over the shards returning sampled rows or
    sufficient statistics; the driver sums in shard order, so both fit the same mixture).

    A fit that puts every sampled row in one component although k > 1 is refused
    (:class:`InputError`) unless ``allow_collapse``; doubtful fits are logged as warnings
    (:func:`stream_fit_warnings`).

    Returns the clustering (``labels`` are the sample's) and a summary (k, BICs, silhouettes,
    rows, sample size and cluster sizes, warnings, passes, convergence, mean log-likelihood,
    metadata, engine). ``ctfp cluster`` saves it; ``ctfp score`` assigns every row.
    """
    from ctfp.engine import parallel_map, resolve_engine
    from ctfp.store.reader import check_compatible, count_rows, shard_paths

    s = (settings or ClusterSettings()).replace(**overrides)
    engine = resolve_engine(engine)
    k, k_range, pca, seed, batch_size = s.k, s.ks, s.pca, s.seed, s.batch_size
    paths = shard_paths(shards)
    metadata = check_compatible(paths)
    counts = [count_rows([p]) for p in paths]
    rows = sum(counts)
    if rows < (min(k_range) if k == "auto" else k):
        raise InputError(f"{rows} rows cannot make {min(k_range) if k == 'auto' else k} clusters")
    rng = np.random.default_rng(seed)
    wanted = np.sort(rng.choice(rows, size=min(s.sample, rows), replace=False))
    starts = np.cumsum([0, *counts])
    items = [
        (path, wanted[np.searchsorted(wanted, lo) : np.searchsorted(wanted, hi)] - lo)
        for path, lo, hi in zip(paths, starts[:-1], starts[1:], strict=True)
    ]
    parts = []
    with progress_bar(rows, "sample", "row", enabled=progress) as bar:
        for (path, _), n, (found, bad) in zip(
            items, counts, parallel_map(ShardSample(batch_size), items, engine), strict=True
        ):
            if bad is not None:  # every row passes here once: EM would only say "NaN"
                raise InputError(
                    f"the shards in {str(shards)!r} hold non-finite embeddings (NaN or infinity), "
                    f"e.g. the row with id {bad!r} in {path}; re-embed its input or remove the row"
                )
            parts.append(found)
            bar.update(n)
    sample = np.concatenate(parts)
    projection = None
    if pca is not None:
        from sklearn.decomposition import PCA

        if not 1 <= pca <= min(sample.shape):
            raise ValueError(f"pca must be between 1 and {min(sample.shape)}")
        fitted = PCA(pca, random_state=seed).fit(sample)
        projection = LinearProjection(fitted.mean_, fitted.components_)
        sample = projection.transform(sample)

    bics = silhouettes = None
    if k == "auto":
        some = np.random.default_rng(seed).choice(
            len(sample), size=min(SILHOUETTE_ROWS, len(sample)), replace=False
        )
        k, bics, silhouettes = _sweep(sample, k_range, s.gmm_kwargs, rows=np.sort(some))

    gmm = GaussianMixture(k, tol=s.tol, max_iter=s.passes, **s.gmm_kwargs)
    partitions = [ShardBatches(p, batch_size, projection) for p in paths]
    on_gpu = engine.engine == "ray" and resolve_device(s.device).type == "cuda"
    gmm.fit_stream(
        partitions,
        sample,
        progress=progress,
        map_fn=lambda function, items: parallel_map(function, items, engine, gpu=on_gpu),
    )
    labels = np.asarray(gmm.predict(sample))
    clustering = Clustering(
        labels=labels, k=k, model=gmm, projection=projection, bics=bics, silhouettes=silhouettes
    )
    # Hard assignments, as `ctfp score` makes: the weights cannot tell a collapse.
    sizes = np.bincount(labels, minlength=k).tolist()
    if k > 1 and max(sizes) == len(labels) and not s.allow_collapse:
        raise InputError(
            f"the {k}-component mixture fitted on {str(shards)!r} put all {len(labels)} sampled "
            f"rows in one component (sizes {sizes}): it separates nothing (are the rows nearly "
            "identical?). Try a smaller --k, --covariance diag, --pca N or another --init, or "
            "pass --allow-collapse to keep it"
        )
    warnings = stream_fit_warnings(
        k, sizes, s, rows=rows, dim=sample.shape[1], bics=bics, silhouettes=silhouettes
    )
    for warning in warnings:
        logger.warning(f"warning: {warning}")
    summary = {
        "k": k,
        "bics": bics,
        "silhouettes": silhouettes,
        "rows": rows,
        "sample_rows": len(sample),
        "sample_cluster_sizes": sizes,
        "warnings": warnings,
        "passes": gmm.n_iter_,
        "converged": bool(gmm.converged_),
        "mean_log_likelihood": float(gmm.lower_bound_),
        "metadata": metadata,
        "engine": engine.engine,
    }
    return clustering, summary


@dataclass(frozen=True)
class ShardSample:
    """The sampling pass over one shard (picklable: an engine runs it where the shard is):
    ``(path, row numbers within the shard)`` -> (those rows as float32, the id of the shard's
    first row with a non-finite value or None). Every row of the shard is checked."""

    batch_size: int

    def __call__(self, item: tuple[Any, np.ndarray]) -> tuple[np.ndarray, str | None]:
        from ctfp.store.reader import iter_embeddings

        path, wanted = item
        found, start, dim = [], 0, 0
        for batch in iter_embeddings([path], batch_size=self.batch_size):
            finite = np.isfinite(batch.matrix).all(axis=1)
            if not finite.all():
                return np.empty((0, batch.matrix.shape[1]), np.float32), str(
                    batch.ids[int(np.argmin(finite))]
                )
            lo, hi = np.searchsorted(wanted, [start, start + len(batch)])
            found.append(batch.matrix[wanted[lo:hi] - start])
            start += len(batch)
            dim = batch.matrix.shape[1]
        return (np.concatenate(found) if found else np.empty((0, dim), np.float32)), None


@dataclass(frozen=True)
class ShardBatches:
    """One shard's embeddings batch by batch (projected when ``projection``): a partition of
    the streamed fit, picklable so that an engine reads it where it runs."""

    path: Any
    batch_size: int
    projection: LinearProjection | None = None

    def __call__(self) -> Iterator[np.ndarray]:
        from ctfp.store.reader import iter_embeddings

        for batch in iter_embeddings([self.path], batch_size=self.batch_size):
            m = batch.matrix
            yield m if self.projection is None else self.projection.transform(m)


def stream_fit_warnings(
    k: int,
    sizes: list[int],
    settings: MixtureSettings,
    *,
    rows: int,
    dim: int,
    bics: dict[int, float] | None = None,
    silhouettes: dict[int, float] | None = None,
    slices: bool = False,
) -> list[str]:
    """What makes a fit doubtful, in words: empty components (of the cluster ``sizes``), k at
    the edge of the searched range, BIC and silhouette disagreeing, full covariances from fewer
    ``rows`` than ``dim`` dimensions. Worded for rows of shards, or test slices (``slices``)."""
    found = []
    if 0 in sizes:
        held = "no test slice" if slices else f"none of the {sum(sizes)} sampled rows"
        found.append(
            f"{sizes.count(0)} of {k} components hold {held} (sizes {sizes}): the data support "
            "fewer clusters than k"
        )
    if bics is not None:
        low, high = min(bics), max(bics)
        if k in (low, high) and low != high:
            found.append(
                f"k=auto chose k={k}, the edge of the range searched ({low}-{high}): the best k "
                "may lie outside it; widen --k-range"
            )
        scored = {j: v for j, v in (silhouettes or {}).items() if np.isfinite(v)}
        if scored and max(scored, key=scored.get) != k:
            found.append(
                f"BIC chose k={k} but the silhouette prefers k={max(scored, key=scored.get)}"
            )
    if settings.covariance_type == "full" and rows <= dim:
        found.append(
            f"full covariances from {rows} {'slices' if slices else 'rows'} in {dim} dimensions "
            "are singular (only reg_covar makes them usable); prefer --pca or --covariance diag"
        )
    return found
