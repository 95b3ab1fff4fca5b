"""Gaussian mixture fitted by EM in torch, on CUDA or CPU, with scikit-learn's semantics."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from ctfp._arrays import check_input, device_tensor, host, like
from ctfp._state import SavedState
from ctfp.cluster import em
from ctfp.cluster.em import Params
from ctfp.cluster.options import COVARIANCE_TYPES, INIT_PARAMS
from ctfp.cluster.partitions import MapFn, Partition, Partitions
from ctfp.device import resolve_device
from ctfp.progress import progress_bar

#: The optional starting parameters, in the order of :meth:`GaussianMixture.__init__`.
INITS = ("weights_init", "means_init", "precisions_init")


class ConvergenceWarning(sklearn.exceptions.ConvergenceWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``.

    A subclass of scikit-learn's (itself a ``UserWarning``), so filters for either catch it.
    """


class GaussianMixture(SavedState, DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted with expectation-maximisation in torch.

    The names and semantics of :class:`sklearn.mixture.GaussianMixture`. EM runs on ``device``
    in the log domain, through Cholesky factors of the covariances (``reg_covar`` added to their
    diagonals), in float64 by default.

    With fewer samples than dimensions, ``"full"`` (and ``"tied"`` when ``n < d``) covariances
    are positive definite only thanks to ``reg_covar``, which then dominates the likelihood:
    prefer ``"diag"`` or PCA first. A covariance that is not positive definite raises
    ``ValueError`` asking for a larger ``reg_covar``.

    The parameters are scikit-learn's (``init_params``: ``"kmeans"``, ``"k-means++"``,
    ``"random"`` or ``"random_from_data"``; the ``*_init`` values override what it gives), and:

    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``, resolved once in :meth:`fit`; asking for CUDA where
        there is none raises :class:`~ctfp.exceptions.DeviceError`.
    dtype
        ``"float64"`` (default) or ``"float32"`` (or the torch dtypes) for EM arithmetic.
        Covariances are always float64; an M-step whose float32 products leave a covariance not
        positive definite is redone with float64 products.

    The fitted attributes are scikit-learn's (``covariances_`` and ``precisions_cholesky_``:
    (k, d, d) full, (d, d) tied, (k, d) diag, (k,) spherical; ``lower_bound_``: mean
    log-likelihood per sample of the best run), and ``device_``, where the model is evaluated.
    """

    saved_state: ClassVar[dict[str, str]] = {
        "weights_": "weights",
        "means_": "means",
        "covariances_": "covariances",
        "_centre": "centre",
        "n_features_in_": "n_features_in_",
        "n_iter_": "n_iter_",
        "converged_": "converged_",
        "lower_bound_": "lower_bound_",
    }
    array_params: ClassVar[tuple[str, ...]] = INITS

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

    # X: (n, d) array-like, torch tensor or CuPy array; per-sample results come back in its
    # array type. y is ignored.
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM."""
        self._fit_in_memory(X, self.max_iter, warn=True)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit and return the (n,) int64 component of each sample (after a final E-step)."""
        x, x2 = self._fit_in_memory(X, self.max_iter, warn=True)
        log_resp, _ = em.e_step(x, self._params, self.covariance_type, x2)
        return like(log_resp.argmax(1).cpu().numpy(), X)

    def _fit_in_memory(
        self, X: Any, max_iter: int, *, warn: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fit on ``X``; returns it centred, with its square."""
        self._setup()
        x, x2 = self._centred(X, reset=True)
        if x.shape[0] < self.n_components:
            raise ValueError(
                f"n_samples={x.shape[0]} should be >= n_components={self.n_components}"
            )
        data = Partitions.in_memory((x, x2))
        rng = np.random.default_rng(self.random_state)
        all_given = all(getattr(self, name) is not None for name in INITS)
        runs = (
            self._em(data, self._initialize(x, x2, rng), max_iter, in_memory=True)
            for _ in range(1 if all_given else self.n_init)
        )
        # The best lower bound; the first of equal ones.
        params, lower_bound, n_iter, converged = max(runs, key=lambda run: run[1])
        if warn and not converged and max_iter > 0:
            warnings.warn(
                f"EM did not converge in {max_iter} iterations (tol={self.tol}); "
                "increase max_iter or tol, or check the data",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_fitted(params, lower_bound, n_iter, converged)
        return x, x2

    def fit_stream(
        self,
        batches: Partition | Sequence[Partition],
        init_sample: Any,
        *,
        init_max_iter: int | None = None,
        progress: bool = False,
        map_fn: MapFn | None = None,
    ) -> GaussianMixture:
        """EM over data too large for memory: one pass over ``batches()`` per iteration,
        accumulating float64 sufficient statistics (memory: one batch plus O(k d^2)).

        The start, and the centring, is an in-memory fit on ``init_sample`` (m, d) with
        ``init_max_iter`` iterations (default ``max_iter``); ``progress`` shows a bar of passes.

        Parameters
        ----------
        batches
            Called once per pass, returns a fresh iterable of (b, d) arrays (e.g. ``lambda:
            (e.matrix for e in ctfp.iter_embeddings(dir))``); or a sequence of such callables,
            the data's partitions, whose statistics are summed in partition order
            (:class:`ctfp.cluster.partitions.Partitions`), wherever they ran.
        map_fn
            ``map_fn(function, partitions)``: the results in partition order (default the
            builtin map; :func:`ctfp.engine.parallel_map` runs them where the data is). Only
            with partitions.
        """
        data = Partitions.of(batches, map_fn)
        max_iter = self.max_iter if init_max_iter is None else init_max_iter
        self._fit_in_memory(init_sample, max_iter, warn=False)
        with progress_bar(self.max_iter, "gmm EM", "pass", enabled=progress) as bar:
            run = self._em(data, self._params, self.max_iter, bar)
        self._set_fitted(*run)
        return self

    def _em(
        self,
        data: Partitions,
        params: Params,
        max_iter: int,
        bar: Any = None,
        *,
        in_memory: bool = False,
    ) -> tuple[Params, float, int, bool]:
        """(params, lower bound of the last E-step, iterations, converged) of at most
        ``max_iter`` EM iterations from ``params``."""
        lower_bound, n_iter, converged = -math.inf, 0, False
        for n_iter in range(1, max_iter + 1):  # noqa: B007 - returned after the loop
            previous = lower_bound
            e_step = em.PartitionStatistics(
                params, self.covariance_type, None if in_memory else self._light()._centred
            )
            stats = data.reduce(e_step, em.add)
            lower_bound = stats.log_likelihood / stats.n
            params = em.m_step(
                stats,
                partial(e_step.precise, data),
                self.covariance_type,
                self.reg_covar,
                self._dtype,
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lower_bound=f"{lower_bound:.6g}")
            if abs(lower_bound - previous) < self.tol:
                converged = True
                break
        return params, lower_bound, n_iter, converged

    @classmethod
    def from_params(
        cls,
        weights: Any,
        means: Any,
        covariances: Any,
        *,
        centre: Any = None,
        **kwargs: Any,
    ) -> GaussianMixture:
        """A fitted mixture from ``weights`` (k,), ``means`` (k, d) and ``covariances`` (the
        layout of ``covariances_``), without EM; ``kwargs`` are the estimator's settings.
        ``centre`` (d,) is subtracted from the data before evaluating (a fitted model's data
        mean); default the weighted mean of the means."""
        weights = np.asarray(weights, dtype=np.float64)
        self = cls(weights.size, **kwargs)
        self._load(weights, means, covariances, centre)
        return self

    def _load(self, weights: Any, means: Any, covariances: Any, centre: Any) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError(f"weights must have shape (k,), got {weights.shape}")
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != len(weights):
            raise ValueError(f"means must have shape ({len(weights)}, d), got {means.shape}")
        d = means.shape[1]
        cov = _shaped(
            covariances, em.cov_shape(self.covariance_type, len(weights), d), "covariances"
        )
        centre = weights @ means if centre is None else _shaped(centre, (d,), "centre")
        self._setup()
        self.n_features_in_ = d
        self._shift = torch.as_tensor(centre, device=self.device_).to(self._dtype)
        means_t = torch.as_tensor(means, device=self.device_)
        params = em.params_from(
            torch.as_tensor(weights, device=self.device_),
            means_t - self._shift.double(),
            torch.as_tensor(cov, device=self.device_),
            self.covariance_type,
            self._dtype,
        )
        self._set_fitted(params, lower_bound=math.nan, n_iter=0, converged=True, means=means_t)

    def _restore(self, device: str) -> None:
        """The saved parameters through :meth:`from_params`' checks (same predictions on the
        same device and dtype)."""
        n_features, n_iter, converged = self.n_features_in_, int(self.n_iter_), self.converged_
        lower_bound = self.lower_bound_
        self._load(self.weights_, self.means_, self.covariances_, self._centre)
        if self.n_components != len(self.weights_):
            raise ValueError(
                f"n_components={self.n_components} but the weights have "
                f"{len(self.weights_)} entries"
            )
        if self.n_features_in_ != n_features:
            raise ValueError(
                f"n_features_in_={n_features} but the means have {self.n_features_in_} columns"
            )
        self.n_iter_, self.converged_ = n_iter, bool(converged)
        self.lower_bound_ = math.nan if lower_bound is None else float(lower_bound)

    def predict(self, X: Any) -> Any:
        """(n,) int64 most likely component of each sample."""
        return like(self._e_step(X)[0].argmax(1).cpu().numpy(), X)

    def predict_proba(self, X: Any) -> Any:
        """(n, k) posterior probability of each component, in the compute dtype."""
        return like(self._e_step(X)[0].exp().cpu().numpy(), X)

    def score_samples(self, X: Any) -> Any:
        """(n,) log-likelihood of each sample, in the compute dtype."""
        return like(self._e_step(X)[1].cpu().numpy(), X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample of ``X``."""
        return float(self._e_step(X)[1].mean())

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        scores = self._e_step(X)[1]
        return float(-2 * scores.sum()) + self._n_parameters() * math.log(scores.shape[0])

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return float(-2 * self._e_step(X)[1].sum()) + 2 * self._n_parameters()

    def _n_parameters(self) -> int:
        return em.n_parameters(self.covariance_type, self.n_components, self.n_features_in_)

    @property
    def precisions_(self) -> np.ndarray:
        """Inverse covariances (computed on access: d^3 work per component)."""
        pc = self.precisions_cholesky_
        if self.covariance_type == "full":
            return pc @ pc.transpose(0, 2, 1)
        if self.covariance_type == "tied":
            return pc @ pc.T
        return pc**2

    def _e_step(self, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`ctfp.cluster.em.e_step` of ``X`` under the fitted model."""
        check_is_fitted(self)
        x, x2 = self._centred(X)
        return em.e_step(x, self._params, self.covariance_type, x2)

    def _setup(self) -> None:
        """Check the settings, resolve the device and the compute dtype."""
        for name, choices in (("covariance_type", COVARIANCE_TYPES), ("init_params", INIT_PARAMS)):
            if (value := getattr(self, name)) not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.n_components < 1 or self.n_init < 1 or self.max_iter < 0:
            raise ValueError("n_components and n_init must be >= 1 and max_iter >= 0")
        if self.reg_covar < 0 or self.tol < 0:
            raise ValueError("reg_covar and tol must be non-negative")
        self._dtype = em.compute_dtype(self.dtype)
        self.device_ = resolve_device(self.device)

    def _centred(self, X: Any, *, reset: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``X`` checked, on the device, in the compute dtype, less the fit's centre (``reset``:
        ``X``'s mean becomes the centre); and its square for diag and spherical (else None)."""
        x = check_input(self, X, reset=reset, dtype=[np.float64, np.float32])
        x = device_tensor(x, self.device_, self._dtype)
        if reset:
            # Centred, float32 sums of squares do not cancel when |x| dwarfs the spread.
            self._shift = x.mean(0, dtype=torch.float64).to(x.dtype)
        x = x - self._shift
        return x, (x * x if self.covariance_type in ("diag", "spherical") else None)

    def _light(self) -> GaussianMixture:
        """A shallow copy without the fitted parameters: what a streamed E-step ships to every
        worker once per pass to centre batches."""
        light = copy.copy(self)
        for name in ("_params", "weights_", "means_", "covariances_", "precisions_cholesky_"):
            light.__dict__.pop(name, None)
        return light

    def _initialize(
        self, x: torch.Tensor, x2: torch.Tensor | None, rng: np.random.Generator
    ) -> Params:
        """The start of one EM run on the centred ``x`` (n, d): from ``init_params``, with the
        given ``*_init`` values in place of their estimates."""
        k, d = self.n_components, x.shape[1]
        shapes = {
            "weights_init": (k,),
            "means_init": (k, d),
            "precisions_init": em.cov_shape(self.covariance_type, k, d),
        }
        given = {
            name: torch.as_tensor(_shaped(getattr(self, name), shape, name), device=self.device_)
            for name, shape in shapes.items()
            if getattr(self, name) is not None
        }
        if "means_init" in given:
            given["means_init"] = given["means_init"] - self._shift
        if len(given) == len(shapes):
            weights, means, precisions = given.values()
            return em.params_from(
                weights, means, None, self.covariance_type, self._dtype, precisions=precisions
            )
        resp = em.initial_resp(self.init_params, x, k, rng, self._dtype)
        return em.start(x, x2, resp, given, self.covariance_type, self.reg_covar, self._dtype)

    def _set_fitted(
        self,
        params: Params,
        lower_bound: float,
        n_iter: int,
        converged: bool,
        *,
        means: torch.Tensor | None = None,
    ) -> None:
        """Keep ``params`` and export the sklearn attributes; ``means`` (k, d) float64: the
        exported means when given (from_params)."""
        shift = self._shift.double()
        self._centre = shift.cpu().numpy()
        if means is None:
            means = params["means"].double() + shift
        # Evaluate with the means as exported, so a model rebuilt by from_params is bit-identical.
        params = {**params, "means": (means - shift).to(self._dtype)}
        self._params = params
        self.weights_ = params["weights"].double().cpu().numpy()
        self.means_ = means.cpu().numpy()
        self.covariances_ = params["covariances"].cpu().numpy()
        self.precisions_cholesky_ = params["precisions_cholesky"].double().cpu().numpy()
        self.n_iter_, self.converged_, self.lower_bound_ = n_iter, converged, lower_bound


def _shaped(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``value`` as a float64 numpy array, or ValueError unless it has ``shape``."""
    a = host(value, np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a
