"""Gaussian mixture fitted by EM in torch, on CUDA or CPU, with scikit-learn's semantics."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from ctfp._arrays import check_input, is_cupy, is_torch, json_seed, like, tensor_of
from ctfp.cluster.options import COVARIANCE_TYPES, INIT_PARAMS
from ctfp.device import resolve_device
from ctfp.progress import progress_bar

_DTYPES = {"float64": torch.float64, "float32": torch.float32}

Params = dict[str, torch.Tensor]


class ConvergenceWarning(sklearn.exceptions.ConvergenceWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``.

    A subclass of scikit-learn's (itself a ``UserWarning``), so filters for either catch it.
    """


class _Statistics(NamedTuple):
    """Sufficient statistics of the data under one set of parameters: an E-step's output and
    all an M-step needs, in float64 whatever the compute dtype."""

    n: int
    """Samples seen."""
    log_likelihood: float
    """Sum over the samples of log p(x) under the parameters (NaN for a given start)."""
    nk: torch.Tensor
    """(k,) sum_i r_ik, the soft counts."""
    sx: torch.Tensor
    """(k, d) sum_i r_ik (x_i - shift_k)."""
    sxx: torch.Tensor
    """full: (k, d, d) sum_i r_ik (x_i - shift_k)(x_i - shift_k)^T; tied: (d, d) sum_i x_i x_i^T;
    diag and spherical: (k, d) sum_i r_ik x_i^2."""
    shift: torch.Tensor | None
    """(k, d) the origin of each component's full statistics, near its mean so that
    E[xx^T] - mu mu^T does not cancel; None where the statistics are about the data's centre."""


class _StatisticsSource:
    """Where the EM loop gets its statistics: one pass over the data per call, under given
    parameters (FAISS contrib's DatasetAssign idea), so one loop serves data in memory and data
    streamed from disk.

    ``chunks()`` yields the data, already on the device, in the compute dtype and centred, with
    its square for the diagonal and spherical models (else None). In memory (``in_memory``: a
    single chunk) full covariances are taken about the new means, as a two-pass estimate;
    streamed, about the current means, which one pass can do and which converge to the same.
    """

    def __init__(
        self,
        gmm: GaussianMixture,
        chunks: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor | None]]],
        *,
        in_memory: bool,
    ) -> None:
        self.gmm = gmm
        self.chunks = chunks
        self.in_memory = in_memory

    @classmethod
    def from_tensor(cls, gmm: GaussianMixture, x: torch.Tensor) -> _StatisticsSource:
        """Data in memory: ``x`` (n, d), centred; its square is computed once per fit."""
        x2 = x * x if gmm.covariance_type in ("diag", "spherical") else None
        return cls(gmm, lambda: ((x, x2),), in_memory=True)

    @classmethod
    def from_batches(
        cls, gmm: GaussianMixture, batches: Callable[[], Iterable[Any]]
    ) -> _StatisticsSource:
        """Data streamed: ``batches()`` yields (b, d) arrays, checked and centred one by one."""

        def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
            for batch in batches():
                x = gmm._to_tensor(batch, reset=False) - gmm._shift
                yield x, (x * x if gmm.covariance_type in ("diag", "spherical") else None)

        return cls(gmm, chunks, in_memory=False)

    def statistics(self, params: Params, *, float64: bool = False) -> _Statistics:
        """E-step under ``params`` and the statistics it gives; ``float64``: the data products
        in float64 (the responsibilities still come from the compute dtype)."""
        total = self.accumulate(params, float64=float64)
        if total is None:
            raise ValueError("batches() yielded no data")
        return total

    def accumulate(self, params: Params, *, float64: bool = False) -> _Statistics | None:
        """:meth:`statistics`, or None where the data has no rows (an empty partition)."""
        gmm = self.gmm
        # One pass cannot centre on means it has not computed yet: use the current ones.
        shift = None if self.in_memory else params["means"]
        total, n, log_likelihood = None, 0, 0.0
        for x, x2 in self.chunks():
            if x.shape[0] == 0:
                continue
            log_prob = gmm._weighted_log_prob(x, params, x2)
            log_norm = torch.logsumexp(log_prob, 1)
            n += x.shape[0]
            log_likelihood += float(log_norm.double().sum())
            resp = (log_prob - log_norm[:, None]).exp()
            if self.in_memory:  # kept for precise(): a float64 redo needs no second E-step
                self._resp = resp
            part = self._moments(x, x2, resp, shift, float64)
            total = part if total is None else _add(total, part)
        if total is None or n == 0:
            return None
        return total._replace(n=n, log_likelihood=log_likelihood)

    def precise(self, params: Params) -> _Statistics:
        """The statistics of the last :meth:`statistics` call under ``params`` again, with
        float64 products: in memory from that call's responsibilities (the E-step is the
        expensive half), streamed by another pass."""
        resp = getattr(self, "_resp", None)
        if self.in_memory and resp is not None:
            return self.statistics_of(resp, float64=True)
        return self.statistics(params, float64=True)

    def statistics_of(self, resp: torch.Tensor, *, float64: bool = False) -> _Statistics:
        """The statistics of given responsibilities ``resp`` (n, k), for the start of EM; data in
        memory only."""
        assert self.in_memory
        ((x, x2),) = self.chunks()
        moments = self._moments(x, x2, resp, None, float64)
        return moments._replace(n=x.shape[0], log_likelihood=math.nan)

    def _moments(
        self,
        x: torch.Tensor,
        x2: torch.Tensor | None,
        resp: torch.Tensor,
        shift: torch.Tensor | None,
        float64: bool,
    ) -> _Statistics:
        """One chunk's statistics (``n`` and ``log_likelihood`` left at 0); full covariances
        are about ``shift``, or about the chunk's own component means when None."""
        if float64:
            x, resp = x.double(), resp.double()
            x2 = None if x2 is None else x2.double()
        covariance_type = self.gmm.covariance_type
        if covariance_type != "full":
            shift = None
        elif shift is None:
            shift = _component_means(x, resp)
        nk, sx, sxx = _moments(x, x2, resp, covariance_type, shift)
        return _Statistics(0, 0.0, nk, sx, sxx, None if shift is None else shift.double())

    def log_resp(self, params: Params) -> torch.Tensor:
        """(n, k) log responsibilities under ``params``; data in memory only."""
        assert self.in_memory
        ((x, x2),) = self.chunks()
        return self.gmm._e_step(x, params, x2)


def _add(a: _Statistics, b: _Statistics) -> _Statistics:
    """The statistics of two disjoint parts of the data, taken about the same shift."""
    nk = b.nk.to(a.nk.device)
    return a._replace(
        n=a.n + b.n,
        log_likelihood=a.log_likelihood + b.log_likelihood,
        nk=a.nk + nk,
        sx=a.sx + b.sx.to(a.sx.device),
        sxx=a.sxx + b.sxx.to(a.sxx.device),
    )


class PartitionStatistics:
    """The E-step of one partition of the data under given parameters: the function a streamed
    fit maps over its partitions. Picklable, so that an engine (Ray) runs it where the data is;
    it returns the partition's sufficient statistics (O(k d^2), never its rows), or None for a
    partition without rows."""

    def __init__(self, gmm: GaussianMixture, params: Params, float64: bool = False) -> None:
        # What an E-step reads, and no more: shipped to every worker once per pass, so the
        # exported sklearn attributes and the covariances (k d^2 each) stay behind.
        light = copy.copy(gmm)
        for name in ("_params", "weights_", "means_", "covariances_", "precisions_cholesky_"):
            light.__dict__.pop(name, None)
        self.gmm, self.float64 = light, float64
        self.params = {k: params[k] for k in ("weights", "means", "precisions_cholesky")}

    def __call__(self, partition: Callable[[], Iterable[Any]]) -> _Statistics | None:
        source = _StatisticsSource.from_batches(self.gmm, partition)
        return source.accumulate(self.params, float64=self.float64)


class _PartitionedSource:
    """Streamed data in partitions: each pass maps :class:`PartitionStatistics` over them with
    ``map_`` and sums the results in partition order, so any ordered map (the builtin one, or
    Ray's) gives the same statistics, bit for bit where the partitions' arithmetic is alike."""

    in_memory = False

    def __init__(
        self,
        gmm: GaussianMixture,
        partitions: Sequence[Callable[[], Iterable[Any]]],
        map_: Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]],
    ) -> None:
        self.gmm, self.partitions, self.map = gmm, list(partitions), map_

    def statistics(self, params: Params, *, float64: bool = False) -> _Statistics:
        total = None
        for part in self.map(PartitionStatistics(self.gmm, params, float64), self.partitions):
            if part is not None:
                total = part if total is None else _add(total, part)
        if total is None:
            raise ValueError("the partitions hold no data")
        return total

    def precise(self, params: Params) -> _Statistics:
        return self.statistics(params, float64=True)


def _component_means(x: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """(k, d) responsibility-weighted means of ``x`` (n, d), in x's dtype."""
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps
    return (resp.T @ x) / nk[:, None]


def _moments(
    x: torch.Tensor,
    x2: torch.Tensor | None,
    resp: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nk, sx, sxx) of :class:`_Statistics` for one chunk.

    Data-sized products run in x's dtype and are summed into float64, where reg_covar and the
    Cholesky factorisation decide whether a component is usable.
    """
    k, d = resp.shape[1], x.shape[1]
    nk = resp.sum(0).double()
    if covariance_type == "full":
        assert shift is not None
        shift = shift.to(x.dtype)
        sx = torch.empty((k, d), dtype=torch.float64, device=x.device)
        sxx = torch.empty((k, d, d), dtype=torch.float64, device=x.device)
        for j in range(k):  # one (n, d) temporary at a time, not k of them
            diff = x - shift[j]
            weighted = resp[:, j, None] * diff
            sx[j] = weighted.sum(0).double()
            sxx[j] = (weighted.T @ diff).double()
        return nk, sx, sxx
    sx = (resp.T @ x).double()
    if covariance_type == "tied":
        return nk, sx, (x.T @ x).double()
    return nk, sx, (resp.T @ (x * x if x2 is None else x2)).double()


def _compute_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in (torch.float64, torch.float32):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float64' or 'float32' (or the torch dtype), got {dtype!r}")


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted with expectation-maximisation in torch.

    The same names and semantics as :class:`sklearn.mixture.GaussianMixture`, so code can switch
    between the two by changing an import. EM runs where ``device`` says (CUDA or CPU); numerically
    it works in the log domain (responsibilities by log-sum-exp), through Cholesky factors of the
    covariances with ``reg_covar`` added to their diagonals, and in float64 by default.

    Fewer samples than dimensions: an empirical covariance of ``n_k`` points in ``d > n_k``
    dimensions is singular, so with ``covariance_type="full"`` (and ``"tied"`` when ``n < d``)
    every component is positive definite only thanks to ``reg_covar``. EM still runs and gives
    deterministic results, but the log-likelihood is then dominated by the ``d - n_k`` directions
    where the variance is exactly ``reg_covar``, the likelihood is not comparable across settings,
    and BIC strongly penalises the ``d(d+1)/2`` parameters per component. Prefer ``"diag"`` or
    reduce the dimension first (PCA) in that regime. A component whose covariance is still not
    positive definite raises ``ValueError`` asking for a larger ``reg_covar``.

    Parameters
    ----------
    n_components
        Number of mixture components.
    covariance_type
        ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
    tol
        EM stops when the per-sample lower bound changes by less than this.
    reg_covar
        Added to the diagonal of every covariance.
    max_iter
        EM iterations per initialisation.
    n_init
        Initialisations; the one with the best lower bound is kept.
    init_params
        ``"kmeans"``, ``"k-means++"``, ``"random"`` (random responsibilities) or
        ``"random_from_data"`` (random points as means): the seed paper's four. On CUDA the
        k-means runs there too: with cuML or faiss-gpu when installed, else in torch.
    weights_init, means_init, precisions_init
        Optional starting parameters (as in scikit-learn); they override what ``init_params``
        gives for that parameter.
    random_state
        Seed for the initialisation.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``, resolved once in :meth:`fit`; asking for CUDA where
        there is none raises :class:`~ctfp.exceptions.DeviceError`.
    dtype
        ``"float64"`` (default) or ``"float32"`` for EM arithmetic (``torch.float64`` and
        ``torch.float32`` are accepted too). Covariances and their Cholesky factorisation are
        always float64; an M-step whose float32 products leave a covariance not positive
        definite is redone with float64 products.

    Attributes
    ----------
    weights_ : (k,)
    means_ : (k, d)
    covariances_ : (k, d, d) full, (d, d) tied, (k, d) diag, (k,) spherical
    precisions_cholesky_ : same layout as ``covariances_``
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float, mean log-likelihood per sample of the best run
    n_features_in_ : int
    device_ : torch.device, where EM ran and the model is evaluated
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: int | None = None,
        device: str = "auto",
        dtype: str | torch.dtype = "float64",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_params")

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : (n, d) array-like, torch tensor or CuPy array
        y
            Ignored.

        Returns
        -------
        self
        """
        self._fit_in_memory(X, self.max_iter, warn=True)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit and return the component of each sample (after a final E-step, as sklearn does).

        Parameters
        ----------
        X : (n, d) array-like, torch tensor or CuPy array
        y
            Ignored.

        Returns
        -------
        (n,) int64, the array type of ``X``
        """
        source = self._fit_in_memory(X, self.max_iter, warn=True)
        return like(source.log_resp(self._params).argmax(1).cpu().numpy(), X)

    def _fit_in_memory(self, X: Any, max_iter: int, *, warn: bool) -> _StatisticsSource:
        self._check_settings()
        self.device_ = resolve_device(self.device)
        self._dtype = _compute_dtype(self.dtype)
        x = self._to_tensor(X, reset=True)
        # Work on data centred on its mean: the same model, but float32 sums of squares no
        # longer cancel catastrophically when |x| is much larger than the spread.
        self._shift = x.mean(0, dtype=torch.float64).to(x.dtype)
        x = x - self._shift
        if x.shape[0] < self.n_components:
            raise ValueError(
                f"n_samples={x.shape[0]} should be >= n_components={self.n_components}"
            )
        source = _StatisticsSource.from_tensor(self, x)
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(1 if self._all_params_given() else self.n_init):
            run = self._em(source, self._initialize(source, rng), max_iter)
            if best is None or run[1] > best[1]:
                best = run
        assert best is not None
        params, lower_bound, n_iter, converged = best
        if warn and not converged and max_iter > 0:
            warnings.warn(
                f"EM did not converge in {max_iter} iterations (tol={self.tol}); "
                "increase max_iter or tol, or check the data",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_fitted(params, n_iter=n_iter, converged=converged, lower_bound=lower_bound)
        return source

    def fit_stream(
        self,
        batches: Callable[[], Iterable[Any]] | Sequence[Callable[[], Iterable[Any]]],
        init_sample: Any,
        *,
        init_max_iter: int | None = None,
        progress: bool = False,
        map_fn: Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]] | None = None,
    ) -> GaussianMixture:
        """EM over data too large for memory: one pass over ``batches()`` per iteration.

        ``batches`` returns a fresh iterable of (b, d) arrays on every call (e.g.
        ``lambda: (e.matrix for e in ctfp.iter_embeddings(dir))``); each pass accumulates the
        sufficient statistics (counts, sums, second moments in float64), so memory is one batch
        plus O(k d^2). The start is an in-memory fit on ``init_sample`` (a subset of the data)
        with ``init_max_iter`` iterations (default ``max_iter``), which also fixes the centring.
        The passes go through the same EM loop and M-step as :meth:`fit`.

        ``batches`` may also be a sequence of such callables, the data's partitions (one per
        shard): each pass then maps :class:`PartitionStatistics` over them with ``map_fn`` (the
        builtin one by default; an engine's ordered map runs them where the data is, e.g.
        :func:`ctfp.engine.parallel_map`) and sums the statistics in partition order, so the
        fit does not depend on where the partitions ran.

        Parameters
        ----------
        batches
            Called once per pass; yields (b, d) array-likes, torch tensors or CuPy arrays. Or
            a sequence of them (partitions); picklable when ``map_fn`` ships them elsewhere.
        init_sample : (m, d)
            The rows the start is fitted on.
        init_max_iter
            EM iterations on ``init_sample``; default ``max_iter``.
        progress
            Show a bar of passes with the lower bound.
        map_fn
            ``map_fn(function, partitions)``: the results in partition order (lazily is best:
            they are summed as they come). Only with partitions.

        Returns
        -------
        self
        """
        max_iter = self.max_iter if init_max_iter is None else init_max_iter
        partitioned = not callable(batches)
        if map_fn is not None and not partitioned:
            raise TypeError("map_fn needs batches as a sequence of partitions")
        self._fit_in_memory(init_sample, max_iter, warn=False)
        source: _StatisticsSource | _PartitionedSource
        if partitioned:
            source = _PartitionedSource(self, batches, map if map_fn is None else map_fn)
        else:
            source = _StatisticsSource.from_batches(self, batches)
        bar = progress_bar(self.max_iter, "gmm EM", "pass", enabled=progress)
        params, lower_bound, n_iter, converged = self._em(source, self._params, self.max_iter, bar)
        bar.close()
        self._set_fitted(params, n_iter=n_iter, converged=converged, lower_bound=lower_bound)
        return self

    def _em(
        self,
        source: _StatisticsSource | _PartitionedSource,
        params: Params,
        max_iter: int,
        bar: Any = None,
    ) -> tuple[Params, float, int, bool]:
        """The EM loop: (params, lower bound, iterations, converged) after at most ``max_iter``
        iterations from ``params``; the lower bound is that of the last E-step, as in sklearn."""
        lower_bound, n_iter, converged = -math.inf, 0, False
        for n_iter in range(1, max_iter + 1):  # noqa: B007 - returned after the loop
            previous = lower_bound
            stats = source.statistics(params)
            lower_bound = stats.log_likelihood / stats.n
            params = self._m_step(stats, partial(source.precise, params))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lower_bound=f"{lower_bound:.6g}")
            if abs(lower_bound - previous) < self.tol:
                converged = True
                break
        return params, lower_bound, n_iter, converged

    def _m_step(
        self,
        stats: _Statistics,
        precise: Callable[[], _Statistics],
        override: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
    ) -> Params:
        """The M-step: parameters from ``stats``. When float32 rounding tips a nearly singular
        covariance over, it is redone from ``precise()``, the same statistics with float64
        products. ``override`` replaces some of the (weights, means, covariances) first."""
        estimate = self._maximise(stats)
        try:
            return self._params_from(*(estimate if override is None else override(estimate)))
        except ValueError:
            if self._dtype == torch.float64:
                raise
        estimate = self._maximise(precise())
        return self._params_from(*(estimate if override is None else override(estimate)))

    def _maximise(self, s: _Statistics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, means, covariances) from sufficient statistics, in float64, with
        ``reg_covar`` added."""
        nk = s.nk + 10 * torch.finfo(torch.float64).eps
        offset = s.sx / nk[:, None]
        means = offset if s.shift is None else s.shift + offset
        if self.covariance_type == "full":
            # In place: (k, d, d) float64 temporaries cost more than the arithmetic in 2048-d.
            cov = s.sxx / nk[:, None, None]
            cov.baddbmm_(offset[:, :, None], offset[:, None, :], alpha=-1.0)
        elif self.covariance_type == "tied":
            cov = (s.sxx - (nk[:, None] * means).T @ means) / nk.sum()
        else:
            # E[x^2] - E[x]^2 of a feature that is constant within a component (a ReLU zero
            # where the other components are large) is 0 plus the rounding of float32
            # products, which can be below -reg_covar; a variance is never negative.
            cov = (s.sxx / nk[:, None] - means**2).clamp_min(0)
            if self.covariance_type == "spherical":
                cov = cov.mean(1)
        if self.covariance_type in ("full", "tied"):
            cov.diagonal(dim1=-2, dim2=-1).add_(self.reg_covar)
        else:
            cov = cov + self.reg_covar
        return nk / s.n, means, cov

    @classmethod
    def from_params(
        cls,
        weights: Any,
        means: Any,
        covariances: Any,
        *,
        covariance_type: str = "full",
        device: str = "auto",
        dtype: str | torch.dtype = "float64",
        centre: Any = None,
        **kwargs: Any,
    ) -> GaussianMixture:
        """A fitted mixture from its parameters (e.g. ``weights_``, ``means_`` and
        ``covariances_`` of a saved model) without running EM.

        Parameters
        ----------
        weights : (k,)
        means : (k, d)
        covariances : the layout of ``covariances_`` for ``covariance_type``
        covariance_type, device, dtype, **kwargs
            Settings of the new estimator.
        centre : (d,), optional
            The point subtracted from the data before evaluating the model (a fitted model's
            data mean, as :meth:`to_state` saves it); default the weighted mean of the means.
        """
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError(f"weights must have shape (k,), got {weights.shape}")
        self = cls(
            len(weights), covariance_type=covariance_type, device=device, dtype=dtype, **kwargs
        )
        self._check_settings()
        self.device_ = resolve_device(self.device)
        self._dtype = _compute_dtype(self.dtype)
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != len(weights):
            raise ValueError(f"means must have shape ({len(weights)}, d), got {means.shape}")
        d = means.shape[1]
        cov = np.asarray(covariances, dtype=np.float64)
        if cov.shape != self._cov_shape(d):
            raise ValueError(f"covariances must have shape {self._cov_shape(d)}, got {cov.shape}")
        centre = weights @ means if centre is None else np.asarray(centre, dtype=np.float64)
        if centre.shape != (d,):
            raise ValueError(f"centre must have shape ({d},), got {centre.shape}")
        self.n_features_in_ = d
        self._shift = torch.as_tensor(centre, device=self.device_).to(self._dtype)
        means_t = torch.as_tensor(means, device=self.device_)
        params = self._params_from(
            torch.as_tensor(weights, device=self.device_),
            means_t - self._shift.double(),
            torch.as_tensor(cov, device=self.device_),
        )
        self._set_fitted(params, means=means_t, n_iter=0, converged=True, lower_bound=math.nan)
        return self

    # -- save and load ----------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted model as JSON-ready parameters and numpy arrays (nothing pickled).

        Returns
        -------
        params : dict
            The settings (all but ``device``; ``dtype`` as a string) and the fitted scalars
            ``n_features_in_``, ``n_iter_``, ``converged_``, ``lower_bound_`` (None when not
            finite).
        arrays : dict
            ``weights`` (k,), ``means`` (k, d), ``covariances`` (layout of ``covariances_``),
            ``centre`` (d,) in float64, and the ``*_init`` starting values that were given.
        """
        check_is_fitted(self)
        settings = self.get_params()
        del settings["device"]  # chosen again at load time
        arrays = {
            "weights": self.weights_.copy(),
            "means": self.means_.copy(),
            "covariances": self.covariances_.copy(),
            "centre": self._shift.double().cpu().numpy(),
        }
        for name in ("weights_init", "means_init", "precisions_init"):
            value = settings.pop(name)
            if value is not None:
                arrays[name] = np.asarray(value.cpu() if is_torch(value) else value, np.float64)
        settings["dtype"] = "float32" if self._dtype == torch.float32 else "float64"
        settings["random_state"] = json_seed(settings["random_state"])
        lower_bound = float(self.lower_bound_)
        params = {
            **settings,
            "n_features_in_": int(self.n_features_in_),
            "n_iter_": int(self.n_iter_),
            "converged_": bool(self.converged_),
            "lower_bound_": lower_bound if math.isfinite(lower_bound) else None,
        }
        return params, arrays

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, device: str = "auto"
    ) -> GaussianMixture:
        """Rebuild a fitted mixture from :meth:`to_state` output (through :meth:`from_params`);
        on the same device and dtype it gives the saved model's predictions exactly.

        Parameters
        ----------
        params, arrays
            What :meth:`to_state` returned (after a JSON and ``.npz`` round trip, say).
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        """
        settings = {k: v for k, v in params.items() if not k.endswith("_")}
        n_components = settings.pop("n_components")
        inits = {
            name: arrays[name]
            for name in ("weights_init", "means_init", "precisions_init")
            if name in arrays
        }
        self = cls.from_params(
            arrays["weights"],
            arrays["means"],
            arrays["covariances"],
            device=device,
            centre=arrays.get("centre"),
            **settings,
            **inits,
        )
        if self.n_components != n_components:
            raise ValueError(
                f"n_components={n_components} but the weights have {self.n_components} entries"
            )
        if self.n_features_in_ != params["n_features_in_"]:
            raise ValueError(
                f"n_features_in_={params['n_features_in_']} but the means have "
                f"{self.n_features_in_} columns"
            )
        self.n_iter_ = int(params["n_iter_"])
        self.converged_ = bool(params["converged_"])
        lower_bound = params["lower_bound_"]
        self.lower_bound_ = math.nan if lower_bound is None else float(lower_bound)
        return self

    # -- using the model --------------------------------------------------------------------
    def predict(self, X: Any) -> Any:
        """Most likely component of each sample.

        Parameters
        ----------
        X : (n, d) array-like, torch tensor or CuPy array

        Returns
        -------
        (n,) int64, the array type of ``X``
        """
        return like(self._log_resp(X).argmax(1).cpu().numpy(), X)

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of each component.

        Parameters
        ----------
        X : (n, d) array-like, torch tensor or CuPy array

        Returns
        -------
        (n, k) in the compute dtype, the array type of ``X``
        """
        return like(self._log_resp(X).exp().cpu().numpy(), X)

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of each sample.

        Parameters
        ----------
        X : (n, d) array-like, torch tensor or CuPy array

        Returns
        -------
        (n,) in the compute dtype, the array type of ``X``
        """
        return like(self._score_samples(X).cpu().numpy(), X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample of ``X`` : (n, d)."""
        return float(self._score_samples(X).mean())

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` : (n, d) (lower is better)."""
        scores = self._score_samples(X)
        n = scores.shape[0]
        return float(-2 * scores.sum()) + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` : (n, d) (lower is better)."""
        return float(-2 * self._score_samples(X).sum()) + 2 * self._n_parameters()

    @property
    def precisions_(self) -> np.ndarray:
        """Inverse covariances (computed on access: d^3 work per component)."""
        pc = self.precisions_cholesky_
        if self.covariance_type == "full":
            return pc @ pc.transpose(0, 2, 1)
        if self.covariance_type == "tied":
            return pc @ pc.T
        return pc**2

    def _score_samples(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        x = self._to_tensor(X, reset=False) - self._shift
        return torch.logsumexp(self._weighted_log_prob(x, self._params), 1)

    def _log_resp(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        return self._e_step(self._to_tensor(X, reset=False) - self._shift, self._params)

    # -- validation and conversion ----------------------------------------------------------
    def _check_settings(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"unknown covariance_type {self.covariance_type!r}; choose one of "
                f"{', '.join(COVARIANCE_TYPES)}"
            )
        if self.init_params not in INIT_PARAMS:
            raise ValueError(
                f"unknown init_params {self.init_params!r}; choose one of {', '.join(INIT_PARAMS)}"
            )
        if self.n_components < 1 or self.n_init < 1 or self.max_iter < 0:
            raise ValueError("n_components and n_init must be >= 1 and max_iter >= 0")
        if self.reg_covar < 0 or self.tol < 0:
            raise ValueError("reg_covar and tol must be non-negative")
        _compute_dtype(self.dtype)

    def _to_tensor(self, X: Any, *, reset: bool) -> torch.Tensor:
        """``X`` checked (and ``n_features_in_`` set or compared), on the device, in the compute
        dtype."""
        x = check_input(self, X, reset=reset, dtype=[np.float64, np.float32])
        if is_torch(x):
            return x.detach().to(self.device_, self._dtype)
        if is_cupy(x):  # a CuPy array becomes a CUDA tensor through DLPack, without a copy
            return torch.from_dlpack(x).to(self.device_, self._dtype)
        return tensor_of(x).to(self.device_, self._dtype)

    def _all_params_given(self) -> bool:
        return all(
            p is not None for p in (self.weights_init, self.means_init, self.precisions_init)
        )

    # -- initialisation ---------------------------------------------------------------------
    def _initial_resp(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n, k = x.shape[0], self.n_components
        resp = torch.zeros((n, k), dtype=self._dtype, device=x.device)
        seed = int(rng.integers(0, 2**31 - 1))
        if self.init_params == "kmeans":
            from ctfp.cluster.kmeans import KMeans, gpu_kmeans_available

            if x.device.type == "cuda" and not gpu_kmeans_available():
                # Plain torch runs EM on CUDA without the ctfp[gpu] extras; so does the start.
                labels = _torch_kmeans(x, k, np.random.default_rng(seed), n_init=3)
            else:
                # Three k-means restarts: FAISS's k-means++ seeding is not the greedy variant
                # scikit-learn uses, and one bad seeding can merge two clusters.
                km = KMeans(k, n_init=3, random_state=seed, device=x.device.type)
                labels = torch.as_tensor(km.fit(x.float()).labels_, device=x.device)
            resp[torch.arange(n, device=x.device), labels] = 1
        elif self.init_params == "random":
            r = torch.as_tensor(rng.uniform(size=(n, k)), dtype=self._dtype, device=x.device)
            resp = r / r.sum(1, keepdim=True)
        elif self.init_params == "random_from_data":
            idx = rng.choice(n, size=k, replace=False)
            resp[torch.as_tensor(idx, device=x.device), torch.arange(k, device=x.device)] = 1
        else:  # k-means++ seeding, then one-hot at the chosen points (as sklearn does)
            idx = _kmeans_plusplus(x, k, rng)
            resp[idx, torch.arange(k, device=x.device)] = 1
        return resp

    def _initialize(self, source: _StatisticsSource, rng: np.random.Generator) -> Params:
        ((x, _),) = source.chunks()
        k, d = self.n_components, x.shape[1]
        if self._all_params_given():
            weights = self._param(self.weights_init, (k,), "weights_init")
            means = self._param(self.means_init, (k, d), "means_init") - self._shift
            precisions = self._param(self.precisions_init, self._cov_shape(d), "precisions_init")
            return self._params_from(weights, means, precisions=precisions)
        # Given starting values replace the estimates from the initial responsibilities.
        given: list[torch.Tensor | None] = [None, None, None]  # weights, means, covariances
        if self.weights_init is not None:
            given[0] = self._param(self.weights_init, (k,), "weights_init")
        if self.means_init is not None:
            given[1] = self._param(self.means_init, (k, d), "means_init") - self._shift
        if self.precisions_init is not None:
            precisions = self._param(self.precisions_init, self._cov_shape(d), "precisions_init")
            given[2] = _precisions_to_cov(precisions.double(), self.covariance_type)
        resp = self._initial_resp(x, rng)
        return self._m_step(
            source.statistics_of(resp),
            partial(source.statistics_of, resp, float64=True),
            lambda estimate: tuple(
                e if g is None else g for e, g in zip(estimate, given, strict=True)
            ),
        )

    def _param(self, value: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(value.cpu() if is_torch(value) else value, dtype=np.float64))
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        return t.to(self.device_, torch.float64)

    def _cov_shape(self, d: int) -> tuple[int, ...]:
        k = self.n_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

    # -- model evaluation -------------------------------------------------------------------
    def _params_from(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        cov: torch.Tensor | None = None,
        *,
        precisions: torch.Tensor | None = None,
    ) -> Params:
        if cov is None:
            assert precisions is not None
            # A Cholesky factor of the precision serves as well as one of the inverse covariance.
            cov = _precisions_to_cov(precisions, self.covariance_type)
            prec_chol = _cholesky_of_precisions(precisions, self.covariance_type)
        else:
            cov = cov.double()
            prec_chol = _precision_cholesky(cov, self.covariance_type)
        return {
            "weights": weights.to(self._dtype),
            "means": means.to(self._dtype),
            "covariances": cov,
            "precisions_cholesky": prec_chol.to(self._dtype),
        }

    def _weighted_log_prob(
        self, x: torch.Tensor, params: Params, x2: torch.Tensor | None = None
    ) -> torch.Tensor:
        log_prob = _log_gaussian_prob(
            x, params["means"], params["precisions_cholesky"], self.covariance_type, x2
        )
        return log_prob + torch.log(params["weights"])

    def _e_step(
        self, x: torch.Tensor, params: Params, x2: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(n, k) log responsibilities of the centred ``x`` : (n, d)."""
        log_prob = self._weighted_log_prob(x, params, x2)
        return log_prob - torch.logsumexp(log_prob, 1)[:, None]

    def _set_fitted(
        self,
        params: Params,
        *,
        means: torch.Tensor | None = None,
        n_iter: int,
        converged: bool,
        lower_bound: float,
    ) -> None:
        """Keep ``params`` and export them as the sklearn attributes; ``means`` (k, d) float64:
        the exported means when they are given (from_params), rather than computed."""
        shift = self._shift.double()
        if means is None:
            means = params["means"].double() + shift
        # Evaluate with the means as exported (at most an ulp away), computed from them as
        # from_params(..., centre=...) computes them: a rebuilt model answers bit for bit alike.
        params = {**params, "means": (means - shift).to(self._dtype)}
        self._params = params
        self.weights_ = params["weights"].double().cpu().numpy()
        self.means_ = means.cpu().numpy()
        self.covariances_ = params["covariances"].cpu().numpy()
        self.precisions_cholesky_ = params["precisions_cholesky"].double().cpu().numpy()
        self.n_iter_, self.converged_, self.lower_bound_ = n_iter, converged, lower_bound

    def _n_parameters(self) -> int:
        k, d = self.n_components, self.n_features_in_
        cov = {
            "full": k * d * (d + 1) / 2.0,
            "tied": d * (d + 1) / 2.0,
            "diag": k * d,
            "spherical": k,
        }[self.covariance_type]
        return int(cov + k * d + k - 1)


def _precision_cholesky(cov: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Upper-triangular factors ``P`` with ``P P^T = cov^-1`` (sklearn's precisions_cholesky_)."""
    message = (
        "Fitting the mixture model failed because some components have ill-defined empirical "
        "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
        "number of components, increase reg_covar, or use covariance_type='diag'."
    )
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info > 0).any()):
            raise ValueError(message)
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
        return torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
    if bool((cov <= 0).any()):
        raise ValueError(message)
    return torch.rsqrt(cov)


def _cholesky_of_precisions(precisions: torch.Tensor, covariance_type: str) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(precisions)
        if bool((info > 0).any()):
            raise ValueError("precisions_init must be symmetric positive definite")
        return chol
    if bool((precisions <= 0).any()):
        raise ValueError("precisions_init must be positive")
    return torch.sqrt(precisions)


def _precisions_to_cov(precisions: torch.Tensor, covariance_type: str) -> torch.Tensor:
    if covariance_type in ("full", "tied"):
        # Through the Cholesky factor, as befits a positive definite matrix: a general LU
        # inverse of a 2048-d precision failed in MKL's threaded path ("pivots given to
        # lu_solve must all be >= 1") once the torch thread count had been set.
        return torch.cholesky_inverse(_cholesky_of_precisions(precisions, covariance_type))
    return 1.0 / precisions


def _log_gaussian_prob(
    x: torch.Tensor,
    means: torch.Tensor,
    prec_chol: torch.Tensor,
    covariance_type: str,
    x2: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, k) log N(x | mean_k, cov_k), through the Cholesky factors of the precisions."""
    n, d = x.shape
    k = means.shape[0]
    if covariance_type == "full":
        log_det = prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_prob = torch.empty((n, k), dtype=x.dtype, device=x.device)
        for j in range(k):
            y = (x - means[j]) @ prec_chol[j]
            log_prob[:, j] = (y * y).sum(1)
    elif covariance_type == "tied":
        log_det = prec_chol.diagonal().log().sum()
        y = x @ prec_chol
        m = means @ prec_chol
        log_prob = (y * y).sum(1, keepdim=True) - 2 * y @ m.T + (m * m).sum(1)
    elif covariance_type == "diag":
        log_det = prec_chol.log().sum(1)
        precisions = prec_chol**2
        log_prob = (
            (means**2 * precisions).sum(1)
            - 2 * x @ (means * precisions).T
            + (x * x if x2 is None else x2) @ precisions.T
        )
    else:
        log_det = d * prec_chol.log()
        precisions = prec_chol**2
        log_prob = (
            (means**2).sum(1) * precisions
            - 2 * (x @ means.T) * precisions
            + (x * x if x2 is None else x2).sum(1, keepdim=True) * precisions
        )
    return -0.5 * (d * math.log(2 * math.pi) + log_prob) + log_det


def _kmeans_plusplus(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Indices of ``k`` seeds chosen by k-means++ (D^2 sampling), on x's device."""
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    closest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        p = closest.clamp_min(0).cpu().numpy()
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        closest = torch.minimum(closest, ((x - x[nxt]) ** 2).sum(1))
    return torch.as_tensor(chosen, device=x.device)


def _torch_kmeans(
    x: torch.Tensor, k: int, rng: np.random.Generator, *, n_init: int = 3, max_iter: int = 100
) -> torch.Tensor:
    """(n,) labels of Lloyd's k-means of ``x`` : (n, d) on x's device, k-means++ seeded, the
    lowest inertia of ``n_init`` runs: the "kmeans" start on a GPU with no GPU k-means library."""
    norms = (x * x).sum(1)
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centres = x[_kmeans_plusplus(x, k, rng)].clone()
        labels = None
        for _ in range(max_iter):
            d2 = norms[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)
            distances, assigned = d2.min(1)
            if labels is not None and torch.equal(assigned, labels):
                break
            labels = assigned
            sums = torch.zeros_like(centres).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k).to(x.dtype)
            filled = counts > 0  # an empty cluster keeps its centre
            centres[filled] = sums[filled] / counts[filled, None]
        inertia = float(distances.clamp_min(0).sum())
        if inertia < best_inertia:
            best, best_inertia = assigned, inertia
    assert best is not None
    return best
