"""Gaussian mixture fitted by EM in torch, on CUDA or CPU (cuML has no GMM), sklearn semantics."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ctfp._arrays import check_matrix, is_cupy, is_torch, like, to_numpy
from ctfp.device import resolve_device
from ctfp.progress import progress_bar

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``."""


class GaussianMixture:
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
        ``"random_from_data"`` (random points as means): the seed paper's four.
    weights_init, means_init, precisions_init
        Optional starting parameters (as in scikit-learn); they override what ``init_params``
        gives for that parameter.
    random_state
        Seed for the initialisation.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``, resolved once in :meth:`fit`.
    dtype
        ``torch.float64`` (default) or ``torch.float32`` for EM arithmetic.

    Attributes
    ----------
    weights_ : (k,)
    means_ : (k, d)
    covariances_ : (k, d, d) full, (d, d) tied, (k, d) diag, (k,) spherical
    precisions_cholesky_ : same layout as ``covariances_``
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float, mean log-likelihood per sample of the best run
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
        dtype: torch.dtype = torch.float64,
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

    # -- public API -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM; returns ``self``."""
        self.fit_predict(X)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit and return the component of each sample (after a final E-step, as sklearn does)."""
        self._validate_params()
        self.device_ = resolve_device(self.device)
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_  # refitting may change the dimension
        x = self._to_tensor(X)
        # Work on data centred on its mean: the same model, but float32 sums of squares no
        # longer cancel catastrophically when |x| is much larger than the spread.
        self._shift = x.double().mean(0).to(x.dtype)
        x = x - self._shift
        n, d = x.shape
        # x*x feeds every diag/spherical E- and M-step: compute it once per fit.
        x2 = x * x if self.covariance_type in ("diag", "spherical") else None
        if n < self.n_components:
            raise ValueError(f"n_samples={n} should be >= n_components={self.n_components}")
        self.n_features_in_ = d
        rng = np.random.default_rng(self.random_state)
        n_init = 1 if self._all_params_given() else self.n_init
        best = None
        max_lower_bound = -math.inf
        self.converged_ = False
        for _ in range(n_init):
            params = self._initialize(x, rng)
            lower_bound = -math.inf
            converged = False
            n_iter = 0
            for iteration in range(1, self.max_iter + 1):
                n_iter = iteration
                previous = lower_bound
                log_norm, log_resp = self._e_step(x, params, x2)
                lower_bound = float(log_norm)
                params = self._m_step(x, log_resp, x2)
                if abs(lower_bound - previous) < self.tol:
                    converged = True
                    break
            if lower_bound > max_lower_bound or best is None:
                max_lower_bound = lower_bound
                best = (params, n_iter, converged)
        assert best is not None
        params, self.n_iter_, self.converged_ = best
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                f"EM did not converge in {self.max_iter} iterations (tol={self.tol}); "
                "increase max_iter or tol, or check the data",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._params = params
        self.lower_bound_ = max_lower_bound
        self._export(params)
        _, log_resp = self._e_step(x, params, x2)
        return like(log_resp.argmax(1).cpu().numpy(), X)

    @classmethod
    def from_params(
        cls,
        weights: Any,
        means: Any,
        covariances: Any,
        *,
        covariance_type: str = "full",
        device: str = "auto",
        dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ) -> GaussianMixture:
        """A fitted mixture from its parameters (e.g. ``weights_``, ``means_`` and
        ``covariances_`` of a saved model) without running EM."""
        weights = np.asarray(weights, dtype=np.float64)
        self = cls(
            len(weights), covariance_type=covariance_type, device=device, dtype=dtype, **kwargs
        )
        self._validate_params()
        self.device_ = resolve_device(self.device)
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != len(weights):
            raise ValueError(f"means must have shape ({len(weights)}, d), got {means.shape}")
        d = means.shape[1]
        cov = np.asarray(covariances, dtype=np.float64)
        if cov.shape != self._cov_shape(d):
            raise ValueError(f"covariances must have shape {self._cov_shape(d)}, got {cov.shape}")
        self.n_features_in_ = d
        self._shift = torch.as_tensor(weights @ means, device=self.device_).to(self.dtype)
        params = self._params_from(
            torch.as_tensor(weights, device=self.device_),
            torch.as_tensor(means, device=self.device_) - self._shift.double(),
            torch.as_tensor(cov, device=self.device_),
        )
        self._params = params
        self.n_iter_, self.converged_, self.lower_bound_ = 0, True, float("nan")
        self._export(params)
        return self

    def fit_stream(
        self,
        batches: Callable[[], Iterable[Any]],
        init_sample: Any,
        *,
        init_max_iter: int | None = None,
        progress: bool = False,
    ) -> GaussianMixture:
        """EM over data too large for memory: one pass over ``batches()`` per iteration.

        ``batches`` returns a fresh iterable of (b, d) arrays on every call (e.g.
        ``lambda: (e.matrix for e in ctfp.iter_embeddings(dir))``); each pass accumulates the
        sufficient statistics (counts, sums, second moments in float64), so memory is one batch
        plus O(k d^2). The start is an in-memory fit on ``init_sample`` (a subset of the data)
        with ``init_max_iter`` iterations (default ``max_iter``), which also fixes the centring.
        ``progress`` shows a bar of passes with the lower bound.
        """
        saved = self.max_iter
        if init_max_iter is not None:
            self.max_iter = init_max_iter
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.fit(init_sample)
        finally:
            self.max_iter = saved
        params = self._params
        k, d = self.n_components, self.n_features_in_
        lower_bound = -math.inf
        self.converged_ = False
        self.n_iter_ = 0
        bar = progress_bar(self.max_iter, "gmm EM", "pass", enabled=progress)
        for iteration in range(1, self.max_iter + 1):
            self.n_iter_ = iteration
            previous = lower_bound
            nk = torch.zeros(k, dtype=torch.float64, device=self.device_)
            sx = torch.zeros((k, d), dtype=torch.float64, device=self.device_)
            if self.covariance_type == "full":
                sxx = torch.zeros((k, d, d), dtype=torch.float64, device=self.device_)
            elif self.covariance_type == "tied":
                sxx = torch.zeros((d, d), dtype=torch.float64, device=self.device_)
            else:
                sxx = torch.zeros((k, d), dtype=torch.float64, device=self.device_)
            total, log_sum = 0, 0.0
            for batch in batches():
                x = self._to_tensor(batch) - self._shift
                log_prob = self._weighted_log_prob(x, params)
                log_norm = torch.logsumexp(log_prob, 1)
                resp = (log_prob - log_norm[:, None]).exp()
                total += x.shape[0]
                log_sum += float(log_norm.double().sum())
                nk += resp.sum(0).double()
                sx += (resp.T @ x).double()
                if self.covariance_type == "full":
                    for j in range(k):
                        sxx[j] += ((resp[:, j, None] * x).T @ x).double()
                elif self.covariance_type == "tied":
                    sxx += (x.T @ x).double()
                else:
                    sxx += (resp.T @ (x * x)).double()
            if total == 0:
                raise ValueError("batches() yielded no data")
            lower_bound = log_sum / total
            bar.update(1)
            bar.set_postfix(lower_bound=f"{lower_bound:.6g}")
            params = self._params_from_stats(nk, sx, sxx, total)
            if abs(lower_bound - previous) < self.tol:
                self.converged_ = True
                break
        bar.close()
        self._params = params
        self.lower_bound_ = lower_bound
        self._export(params)
        return self

    def _params_from_stats(
        self, nk: torch.Tensor, sx: torch.Tensor, sxx: torch.Tensor, total: int
    ) -> dict[str, torch.Tensor]:
        nk = nk + 10 * torch.finfo(torch.float64).eps
        means = sx / nk[:, None]
        d = means.shape[1]
        eye = torch.eye(d, dtype=torch.float64, device=means.device)
        if self.covariance_type == "full":
            cov = sxx / nk[:, None, None] - means[:, :, None] * means[:, None, :]
            cov = cov + self.reg_covar * eye
        elif self.covariance_type == "tied":
            cov = (sxx - (nk[:, None] * means).T @ means) / nk.sum() + self.reg_covar * eye
        else:
            # E[x^2] - E[x]^2 of a feature that is constant within a component (a ReLU zero
            # where the other components are large) is 0 plus the rounding of float32
            # products, which can be below -reg_covar; a variance is never negative.
            cov = (sxx / nk[:, None] - means**2).clamp_min(0) + self.reg_covar
            if self.covariance_type == "spherical":
                cov = cov.mean(1)
        return self._params_from(nk / total, means, cov)

    def predict(self, X: Any) -> Any:
        """(n,) index of the most likely component of each sample."""
        return like(self._log_resp(X).argmax(1).cpu().numpy(), X)

    def predict_proba(self, X: Any) -> Any:
        """(n, k) posterior probability of each component."""
        return like(self._log_resp(X).exp().cpu().numpy(), X)

    def score_samples(self, X: Any) -> Any:
        """(n,) log-likelihood of each sample."""
        return like(self._score_samples(X).cpu().numpy(), X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample."""
        return float(self._score_samples(X).mean())

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        scores = self._score_samples(X)
        n = scores.shape[0]
        return float(-2 * scores.sum()) + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return float(-2 * self._score_samples(X).sum()) + 2 * self._n_parameters()

    def _score_samples(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        x = self._to_tensor(X) - self._shift
        return torch.logsumexp(self._weighted_log_prob(x, self._params), 1)

    # -- validation and conversion ----------------------------------------------------------
    def _validate_params(self) -> None:
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
        if self.dtype not in (torch.float64, torch.float32):
            raise ValueError("dtype must be torch.float64 or torch.float32")

    def _to_tensor(self, X: Any) -> torch.Tensor:
        if is_torch(X):
            check_matrix(X)
            x = X.detach().to(self.device_, self.dtype)
        elif is_cupy(X):  # a CuPy array becomes a CUDA tensor through DLPack, without a copy
            check_matrix(X)
            x = torch.from_dlpack(X).to(self.device_, self.dtype)
        else:
            x = torch.from_numpy(to_numpy(X, np.float64)).to(self.device_, self.dtype)
        if hasattr(self, "n_features_in_") and x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, the mixture was fitted on {self.n_features_in_}"
            )
        return x

    def _check_fitted(self) -> None:
        if not hasattr(self, "_params"):
            raise ValueError("this GaussianMixture is not fitted yet; call fit first")

    def _all_params_given(self) -> bool:
        return all(
            p is not None for p in (self.weights_init, self.means_init, self.precisions_init)
        )

    # -- initialisation ---------------------------------------------------------------------
    def _initial_resp(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n, k = x.shape[0], self.n_components
        resp = torch.zeros((n, k), dtype=self.dtype, device=x.device)
        seed = int(rng.integers(0, 2**31 - 1))
        if self.init_params == "kmeans":
            from ctfp.cluster.kmeans import KMeans, gpu_kmeans_available

            # The data goes to the host for the init anyway; its k-means runs on the GPU where
            # a GPU k-means exists (cuML, faiss-gpu), else FAISS on the CPU: EM itself stays on
            # CUDA, which plain torch provides without the ctfp[gpu] extras.
            device = "cuda" if x.device.type == "cuda" and gpu_kmeans_available() else "cpu"
            # Three k-means restarts: FAISS's k-means++ seeding is not the greedy variant
            # scikit-learn uses, and one bad seeding can merge two clusters.
            labels = (
                KMeans(k, n_init=3, random_state=seed, device=device)
                .fit(x.float().cpu().numpy())
                .labels_
            )
            resp[torch.arange(n), torch.as_tensor(labels, device=x.device)] = 1
        elif self.init_params == "random":
            r = torch.as_tensor(rng.uniform(size=(n, k)), dtype=self.dtype, device=x.device)
            resp = r / r.sum(1, keepdim=True)
        elif self.init_params == "random_from_data":
            idx = rng.choice(n, size=k, replace=False)
            resp[torch.as_tensor(idx, device=x.device), torch.arange(k, device=x.device)] = 1
        else:  # k-means++ seeding, then one-hot at the chosen points (as sklearn does)
            idx = _kmeans_plusplus(x, k, rng)
            resp[idx, torch.arange(k, device=x.device)] = 1
        return resp

    def _initialize(self, x: torch.Tensor, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        k, d = self.n_components, x.shape[1]
        if self._all_params_given():
            weights = self._param(self.weights_init, (k,), "weights_init")
            means = self._param(self.means_init, (k, d), "means_init") - self._shift
            precisions = self._param(self.precisions_init, self._cov_shape(d), "precisions_init")
            return self._params_from(weights, means, precisions=precisions)
        resp = self._initial_resp(x, rng)
        weights, means, cov = self._estimate(x, resp)
        weights = weights / x.shape[0]
        if self.weights_init is not None:
            weights = self._param(self.weights_init, (k,), "weights_init")
        if self.means_init is not None:
            means = self._param(self.means_init, (k, d), "means_init") - self._shift
        if self.precisions_init is not None:
            precisions = self._param(self.precisions_init, self._cov_shape(d), "precisions_init")
            cov = _precisions_to_cov(precisions.double(), self.covariance_type)
        return self._params_from(weights, means, cov)

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

    # -- EM ---------------------------------------------------------------------------------
    def _estimate(
        self, x: torch.Tensor, resp: torch.Tensor, x2: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """M-step statistics: (unnormalised weights nk, means, covariances)."""
        eps = 10 * torch.finfo(resp.dtype).eps
        nk = resp.sum(0) + eps
        means = (resp.T @ x) / nk[:, None]
        k, d = means.shape
        # Data-sized products run in the compute dtype; covariances are kept in float64, where
        # reg_covar and the Cholesky factorisation decide whether a component is usable.
        if self.covariance_type == "full":
            cov = torch.empty((k, d, d), dtype=torch.float64, device=x.device)
            for j in range(k):
                diff = x - means[j]
                cov[j] = ((resp[:, j, None] * diff).T @ diff).double() / float(nk[j])
        elif self.covariance_type == "tied":
            diff_means = (nk[:, None] * means).double()
            cov = ((x.T @ x).double() - diff_means.T @ means.double()) / float(nk.sum())
        else:
            # E[x^2] - E[x]^2 by matrix products (fit() centred x on its mean, which keeps the
            # cancellation small); accumulate in float64.
            avg_x2 = (resp.T @ (x * x if x2 is None else x2)).double() / nk[:, None].double()
            m = means.double()
            cov = avg_x2 - 2 * m * ((resp.T @ x).double() / nk[:, None].double()) + m * m
            # Never negative: a feature constant within a component has variance 0, which
            # float32 products can round below -reg_covar (a ReLU zero in one component).
            cov = cov.clamp_min(0)
            if self.covariance_type == "spherical":
                cov = cov.mean(1)
        if cov.dim() >= 2 and self.covariance_type in ("full", "tied"):
            cov.diagonal(dim1=-2, dim2=-1).add_(self.reg_covar)
        else:
            cov += self.reg_covar
        return nk, means, cov

    def _params_from(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        cov: torch.Tensor | None = None,
        *,
        precisions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if cov is None:
            assert precisions is not None
            # A Cholesky factor of the precision serves as well as one of the inverse covariance.
            cov = _precisions_to_cov(precisions, self.covariance_type)
            prec_chol = _cholesky_of_precisions(precisions, self.covariance_type)
        else:
            cov = cov.double()
            prec_chol = _precision_cholesky(cov, self.covariance_type)
        return {
            "weights": weights.to(self.dtype),
            "means": means.to(self.dtype),
            "covariances": cov,
            "precisions_cholesky": prec_chol.to(self.dtype),
        }

    def _m_step(
        self, x: torch.Tensor, log_resp: torch.Tensor, x2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        resp = log_resp.exp()
        nk, means, cov = self._estimate(x, resp, x2)
        try:
            return self._params_from(nk / x.shape[0], means, cov)
        except ValueError:
            if x.dtype == torch.float64:
                raise
            # float32 rounding can tip a nearly singular covariance over: redo it in float64.
            nk, means, cov = self._estimate(x.double(), resp.double())
            return self._params_from(nk / x.shape[0], means, cov)

    def _weighted_log_prob(
        self, x: torch.Tensor, params: dict[str, torch.Tensor], x2: torch.Tensor | None = None
    ) -> torch.Tensor:
        log_prob = _log_gaussian_prob(
            x, params["means"], params["precisions_cholesky"], self.covariance_type, x2
        )
        return log_prob + torch.log(params["weights"])

    def _e_step(
        self, x: torch.Tensor, params: dict[str, torch.Tensor], x2: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob = self._weighted_log_prob(x, params, x2)
        log_norm = torch.logsumexp(log_prob, 1)
        return log_norm.mean(), log_prob - log_norm[:, None]

    def _log_resp(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        return self._e_step(self._to_tensor(X) - self._shift, self._params)[1]

    def _export(self, params: dict[str, torch.Tensor]) -> None:
        out = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in params.items()}
        self.weights_ = out["weights"]
        self.means_ = out["means"] + self._shift.double().cpu().numpy()
        self.covariances_ = out["covariances"]
        self.precisions_cholesky_ = out["precisions_cholesky"]

    @property
    def precisions_(self) -> np.ndarray:
        """Inverse covariances (computed on access: d^3 work per component)."""
        pc = self.precisions_cholesky_
        if self.covariance_type == "full":
            return pc @ pc.transpose(0, 2, 1)
        if self.covariance_type == "tied":
            return pc @ pc.T
        return pc**2

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
        return torch.linalg.inv(precisions)
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
