"""The Gaussian mixture's EM in torch (start, E-step statistics, M-step, log-densities), shared
by the in-memory and streamed fits of :class:`ctfp.cluster.gmm.GaussianMixture`."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from ctfp.cluster import kmeans
from ctfp.cluster.partitions import Partition, Partitions

Params = dict[str, torch.Tensor]
"""weights (k,), means (k, d), covariances (float64) and precisions_cholesky, in the layouts
of scikit-learn's attributes; means about the fit's centre."""

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class Statistics(NamedTuple):
    """Sufficient statistics under one set of parameters, in float64: ``n`` samples, the sum of
    their log p(x) (NaN for a given start), ``nk`` (k,) soft counts, ``sx`` (k, d) sum r (x -
    shift), ``sxx`` (full: (k, d, d) sum r (x - shift)(x - shift)^T; tied: (d, d) sum x x^T;
    diag, spherical: (k, d) sum r x^2) and ``shift`` (k, d), the origin of the full statistics
    near each mean so that they do not cancel (None: about the data's centre)."""

    n: int
    log_likelihood: float
    nk: torch.Tensor
    sx: torch.Tensor
    sxx: torch.Tensor
    shift: torch.Tensor | None


def add(a: Statistics, b: Statistics) -> Statistics:
    """The statistics of two disjoint parts of the data, taken about the same shift."""
    return a._replace(
        n=a.n + b.n,
        log_likelihood=a.log_likelihood + b.log_likelihood,
        nk=a.nk + b.nk.to(a.nk.device),
        sx=a.sx + b.sx.to(a.sx.device),
        sxx=a.sxx + b.sxx.to(a.sxx.device),
    )


class PartitionStatistics:
    """The E-step of one partition under ``params``, mapped over the partitions by each EM
    pass: picklable (an engine runs it where the data is); returns the partition's
    :class:`Statistics`, or None for a partition without rows.

    ``prepare(batch) -> (x, x2)``: a streamed batch checked, centred, on the device, with its
    square or None; full covariances are then about the current means (one pass). None: the
    one batch is the in-memory ``(x, x2)``; full covariances are about the new means (two
    passes) and the responsibilities are kept for :meth:`precise`. ``float64``: data products
    in float64.
    """

    def __init__(
        self,
        params: Params,
        covariance_type: str,
        prepare: Callable[[Any], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        *,
        float64: bool = False,
    ) -> None:
        # Only what an E-step reads: shipped to every worker once per pass.
        self.params = {k: params[k] for k in ("weights", "means", "precisions_cholesky")}
        self.covariance_type, self.prepare, self.float64 = covariance_type, prepare, float64
        self.kept: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def __call__(self, partition: Partition) -> Statistics | None:
        in_memory = self.prepare is None
        shift = None if in_memory else self.params["means"]
        total = None
        for batch in partition():  # a streamed batch without rows is refused by prepare
            x, x2 = batch if in_memory else self.prepare(batch)
            log_resp, log_norm = e_step(x, self.params, self.covariance_type, x2)
            resp = log_resp.exp()
            if in_memory:
                self.kept = (x, x2, resp)
            part = statistics(x, x2, resp, self.covariance_type, shift, float64=self.float64)
            part = part._replace(log_likelihood=float(log_norm.double().sum()))
            total = part if total is None else add(total, part)
        return total

    def precise(self, data: Partitions) -> Statistics:
        """The statistics of the last call with float64 products: from the kept
        responsibilities in memory, else by another pass over ``data``."""
        if self.kept is not None:
            return statistics(*self.kept, self.covariance_type, None, float64=True)
        again = PartitionStatistics(self.params, self.covariance_type, self.prepare, float64=True)
        return data.reduce(again, add)


def initial_resp(
    init_params: str, x: torch.Tensor, k: int, rng: np.random.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """(n, k) starting responsibilities of ``x`` (n, d) for ``init_params``, in ``dtype``."""
    n = x.shape[0]
    resp = torch.zeros((n, k), dtype=dtype, device=x.device)
    seed = int(rng.integers(0, 2**31 - 1))
    if init_params == "kmeans":
        # Three restarts: FAISS's k-means++ is not sklearn's greedy variant, and one bad
        # seeding can merge two clusters. Plain torch on CUDA without the ctfp[gpu] extras.
        torch_only = x.device.type == "cuda" and not kmeans.gpu_kmeans_available()
        km = kmeans.KMeans(
            k,
            n_init=3,
            random_state=seed,
            device=str(x.device),
            backend="torch" if torch_only else "auto",
        )
        labels = torch.as_tensor(km.fit(x.float()).labels_, device=x.device)
        resp[torch.arange(n, device=x.device), labels] = 1
    elif init_params == "random":
        r = torch.as_tensor(rng.uniform(size=(n, k)), dtype=dtype, device=x.device)
        resp = r / r.sum(1, keepdim=True)
    elif init_params == "random_from_data":
        idx = rng.choice(n, size=k, replace=False)
        resp[torch.as_tensor(idx, device=x.device), torch.arange(k, device=x.device)] = 1
    else:  # k-means++ seeding, then one-hot at the chosen points (as sklearn does)
        resp[kmeans.kmeans_plusplus(x, k, rng), torch.arange(k, device=x.device)] = 1
    return resp


def compute_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a ``dtype`` setting, or ValueError."""
    if isinstance(dtype, torch.dtype) and dtype in (torch.float64, torch.float32):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be 'float64' or 'float32' (or the torch dtype), got {dtype!r}")


def statistics(
    x: torch.Tensor,
    x2: torch.Tensor | None,
    resp: torch.Tensor,
    covariance_type: str,
    shift: torch.Tensor | None,
    *,
    float64: bool = False,
) -> Statistics:
    """The statistics of a chunk ``x`` (n, d) (``x2``: its square, or None) under the
    responsibilities ``resp`` (n, k), ``log_likelihood`` NaN. Full covariances are about
    ``shift`` (k, d), or the chunk's own component means when None. Products run in x's dtype
    (``float64``: in float64) and are summed into float64.
    """
    if float64:
        x, resp = x.double(), resp.double()
        x2 = None if x2 is None else x2.double()
    k, d = resp.shape[1], x.shape[1]
    nk = resp.sum(0).double()
    if covariance_type == "full":
        if shift is None:
            shift = (resp.T @ x) / (resp.sum(0) + 10 * torch.finfo(resp.dtype).eps)[:, None]
        within = shift.to(x.dtype)
        sx = torch.empty((k, d), dtype=torch.float64, device=x.device)
        sxx = torch.empty((k, d, d), dtype=torch.float64, device=x.device)
        for j in range(k):  # one (n, d) temporary at a time, not k of them
            diff = x - within[j]
            weighted = resp[:, j, None] * diff
            sx[j] = weighted.sum(0).double()
            sxx[j] = (weighted.T @ diff).double()
        return Statistics(len(x), math.nan, nk, sx, sxx, shift.double())
    sx = (resp.T @ x).double()
    if covariance_type == "tied":
        sxx = (x.T @ x).double()
    else:
        sxx = (resp.T @ (x * x if x2 is None else x2)).double()
    return Statistics(len(x), math.nan, nk, sx, sxx, None)


def maximise(
    s: Statistics, covariance_type: str, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, means, covariances) from sufficient statistics, in float64, with
    ``reg_covar`` added."""
    nk = s.nk + 10 * torch.finfo(torch.float64).eps
    offset = s.sx / nk[:, None]
    means = offset if s.shift is None else s.shift + offset
    if covariance_type == "full":
        # In place: (k, d, d) float64 temporaries cost more than the arithmetic.
        cov = s.sxx / nk[:, None, None]
        cov.baddbmm_(offset[:, :, None], offset[:, None, :], alpha=-1.0)
    elif covariance_type == "tied":
        cov = (s.sxx - (nk[:, None] * means).T @ means) / nk.sum()
    else:
        # A feature constant within a component rounds to a tiny negative variance.
        cov = (s.sxx / nk[:, None] - means**2).clamp_min(0)
        if covariance_type == "spherical":
            cov = cov.mean(1)
    if covariance_type in ("full", "tied"):
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    else:
        cov = cov + reg_covar
    return nk / s.n, means, cov


def m_step(
    stats: Statistics,
    precise: Callable[[], Statistics],
    covariance_type: str,
    reg_covar: float,
    dtype: torch.dtype,
    override: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
) -> Params:
    """The M-step: parameters from ``stats``, redone from ``precise()`` (float64 products)
    when float32 rounding leaves a covariance not positive definite. ``override`` replaces
    some of the (weights, means, covariances) first."""

    def params(s: Statistics) -> Params:
        estimate = maximise(s, covariance_type, reg_covar)
        return params_from(
            *(estimate if override is None else override(estimate)), covariance_type, dtype
        )

    try:
        return params(stats)
    except ValueError:
        if dtype == torch.float64:
            raise
    return params(precise())


def start(
    x: torch.Tensor,
    x2: torch.Tensor | None,
    resp: torch.Tensor,
    given: dict[str, torch.Tensor],
    covariance_type: str,
    reg_covar: float,
    dtype: torch.dtype,
) -> Params:
    """The parameters of the starting ``resp`` (n, k) of the centred ``x`` (n, d), with
    ``given`` (``weights_init``, ``means_init`` about the centre, ``precisions_init``) in
    place of their estimates."""
    if "precisions_init" in given:
        cov, _ = from_precisions(given["precisions_init"], covariance_type)
        given = {**given, "covariances": cov}
    names = ("weights_init", "means_init", "covariances")
    stats = partial(statistics, x, x2, resp, covariance_type, None)
    return m_step(
        stats(),
        partial(stats, float64=True),
        covariance_type,
        reg_covar,
        dtype,
        lambda estimate: tuple(given.get(n, e) for n, e in zip(names, estimate, strict=True)),
    )


def cov_shape(covariance_type: str, k: int, d: int) -> tuple[int, ...]:
    """The shape of ``covariances_`` (and ``precisions_init``)."""
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def n_parameters(covariance_type: str, k: int, d: int) -> int:
    """Free parameters of a mixture, as BIC and AIC count them."""
    cov = {
        "full": k * d * (d + 1) / 2.0,
        "tied": d * (d + 1) / 2.0,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return int(cov + k * d + k - 1)


def params_from(
    weights: torch.Tensor,
    means: torch.Tensor,
    cov: torch.Tensor | None,
    covariance_type: str,
    dtype: torch.dtype,
    *,
    precisions: torch.Tensor | None = None,
) -> Params:
    """The parameters from (weights, means, covariances), or from the ``precisions`` when
    ``cov`` is None; ValueError where a covariance is not positive definite."""
    if cov is None:
        assert precisions is not None
        cov, prec_chol = from_precisions(precisions, covariance_type)
    else:
        cov = cov.double()
        prec_chol = precision_cholesky(cov, covariance_type)
    return {
        "weights": weights.to(dtype),
        "means": means.to(dtype),
        "covariances": cov,
        "precisions_cholesky": prec_chol.to(dtype),
    }


def precision_cholesky(cov: torch.Tensor, covariance_type: str) -> torch.Tensor:
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


def from_precisions(
    precisions: torch.Tensor, covariance_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The covariances of given precisions and the precisions' Cholesky factors (square roots
    for diag and spherical)."""
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(precisions)
        if bool((info > 0).any()):
            raise ValueError("precisions_init must be symmetric positive definite")
        # Through the Cholesky factor: MKL's threaded LU inverse failed on 2048-d precisions.
        return torch.cholesky_inverse(chol), chol
    if bool((precisions <= 0).any()):
        raise ValueError("precisions_init must be positive")
    return 1.0 / precisions, torch.sqrt(precisions)


def e_step(
    x: torch.Tensor, params: Params, covariance_type: str, x2: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) log responsibilities and (n,) log p(x) of ``x`` (n, d) about the fit's centre."""
    log_prob = log_gaussian_prob(x, params, covariance_type, x2) + torch.log(params["weights"])
    log_norm = torch.logsumexp(log_prob, 1)
    return log_prob - log_norm[:, None], log_norm


def log_gaussian_prob(
    x: torch.Tensor, params: Params, covariance_type: str, x2: torch.Tensor | None = None
) -> torch.Tensor:
    """(n, k) log N(x | mean_k, cov_k) through the precisions' Cholesky factors; ``x2``: x * x
    when the caller has it."""
    means, prec_chol = params["means"], params["precisions_cholesky"]
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
