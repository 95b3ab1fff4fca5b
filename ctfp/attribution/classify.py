"""Task 2 with labels: a linear classifier of the generator that made a slice.

With labelled samples of each known generator (``train/<group>/``), a linear model on
fingerprint features separates generators far better than a blind mixture of the test slices,
also after re-encoding and resampling. Two models, on standardised features, optionally after a
PCA (``pca``): ``lr``, multinomial logistic regression (L2, ``C``), and ``lda``, linear
discriminant analysis with a Ledoit-Wolf shrunk shared covariance. Both predict with
``softmax(x W^T + b)``, which is all that is saved. For the open set
(:meth:`GroupClassifier.log_density`), each group is also a Gaussian (own mean, shared shrunk
covariance) in a PCA space of at most ``density_components`` dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ctfp._state import SavedState
from ctfp.exceptions import InputError

MODELS = ("lr", "lda")


@dataclass(eq=False, repr=False)
class GroupClassifier(SavedState, BaseEstimator):
    """Predict the labelled group (generator) of each slice: ``model`` ``lr`` (logistic
    regression, inverse L2 strength ``C``) or ``lda`` (shrunk LDA), on the standardised features
    or their first ``pca`` principal components; ``density_components``: dimensions of the
    open-set group densities."""

    name: ClassVar[str] = "classify"
    task: ClassVar[str] = "task2"
    saved_state: ClassVar[dict[str, str]] = {
        "classes_": "classes",
        "mean_": "mean",
        "scale_": "scale",
        "components_": "components",
        "coef_": "coef",
        "intercept_": "intercept",
        "density_basis_": "density_basis",
        "density_means_": "density_means",
        "density_precision_": "density_precision",
        "density_logdet_": "density_logdet",
    }

    model: str = "lr"
    pca: int | None = None
    C: float = 1.0
    density_components: int = 32
    random_state: int = 0

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[Any], *, density_only: bool = False) -> GroupClassifier:
        """Fit on labelled slices ``X`` (n, d) of groups ``y`` (n,) (names, any hashable).
        ``density_only``: only the open set's group densities (:meth:`log_density`), not the
        classifier (for another model's open set)."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.pca is not None and int(self.pca) < 1:
            raise ValueError(f"pca must be a positive integer or None, got {self.pca!r}")
        if not (np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        x = _matrix(X)
        groups = np.asarray([str(g) for g in y], dtype=object)
        if len(groups) != len(x):
            raise InputError(f"{len(x)} labelled slices but {len(groups)} group labels")
        names = sorted(set(groups.tolist()))
        if len(names) < 2:
            raise InputError(
                f"a classifier of the generator needs at least 2 labelled groups, got {names}"
            )
        small = min(int((groups == g).sum()) for g in names)
        if small < 2:
            raise InputError("every labelled group needs at least 2 slices to fit a classifier")
        self.classes_ = np.asarray(names, dtype=object)
        target = np.searchsorted(names, groups.astype(str))
        self.mean_ = x.mean(0)
        scale = x.std(0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        z = (x - self.mean_) / self.scale_
        axes = _principal_axes(z)
        from sklearn.covariance import ledoit_wolf

        self.density_basis_ = _top_axes(axes, z, self.density_components)
        w = z @ self.density_basis_.T
        self.density_means_ = np.stack([w[target == j].mean(0) for j in range(len(names))])
        cov, _ = ledoit_wolf(w - self.density_means_[target])
        self.density_precision_ = np.linalg.inv(cov)
        self.density_logdet_ = float(np.linalg.slogdet(cov)[1])
        if density_only:
            return self
        self.components_ = _top_axes(axes, z, self.pca)
        zp = z if self.components_ is None else z @ self.components_.T
        if self.components_ is not None and self.model == "lr":
            # Unit variance per axis: the leading axes' large variances make L-BFGS crawl.
            sd = zp.std(0)
            sd = np.where(sd > 0, sd, 1.0)
            self.components_, zp = self.components_ / sd[:, None], zp / sd
        if self.model == "lr":
            from sklearn.linear_model import LogisticRegression

            fitted = LogisticRegression(C=self.C, max_iter=2000).fit(zp, target)
            coef, intercept = np.asarray(fitted.coef_), np.asarray(fitted.intercept_)
        else:
            # Wider than the labelled slices: the same model through their Gram matrices.
            fast = _shrunk_lda(zp, target, len(names)) if zp.shape[1] > len(zp) else None
            if fast is None:
                from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

                lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(zp, target)
                fast = np.asarray(lda.coef_), np.asarray(lda.intercept_)
            coef, intercept = fast
        if len(names) == 2:  # sklearn's binary form: one row, class 1 against class 0
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        self.coef_, self.intercept_ = coef, intercept
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _standardised(self, X: Any) -> np.ndarray:
        self._check_fitted("mean_")  # the densities alone (density_only) are fitted
        x = _matrix(X)
        if x.shape[1] != len(self.mean_):
            raise InputError(
                f"the classifier was fitted on {len(self.mean_)}-d embeddings, got {x.shape[1]}-d"
            )
        return (x - self.mean_) / self.scale_

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, k) linear scores of each group."""
        self._check_fitted()
        z = self._standardised(X)
        if self.components_ is not None:
            z = z @ self.components_.T
        return z @ self.coef_.T + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, k) probability of each group (columns in the order of ``classes_``)."""
        from scipy.special import softmax

        return softmax(self.decision_function(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """(n,) index into ``classes_`` of each slice's most likely group."""
        return self.decision_function(X).argmax(1)

    def log_density(self, X: Any) -> np.ndarray:
        """(n,) log density of each slice under its most likely known group (the Gaussians
        of the open set)."""
        w = self._standardised(X) @ self.density_basis_.T
        d = w[:, None, :] - self.density_means_[None]
        maha = np.einsum("nkd,de,nke->nk", d, self.density_precision_, d)
        return (-0.5 * (maha + self.density_logdet_ + w.shape[1] * np.log(2 * np.pi))).max(1)

    def _check_fitted(self, attr: str = "coef_") -> None:
        if not hasattr(self, attr):
            raise ValueError("this GroupClassifier is not fitted yet; call fit first")

    # -- saving ---------------------------------------------------------------------------------
    def _check_saveable(self) -> None:
        self._check_fitted()

    def _restore(self, device: str) -> None:
        """numpy on the host: ``device`` is taken for the interface and not used."""
        self.classes_ = np.asarray(self.classes_, dtype=object)
        self.density_logdet_ = float(self.density_logdet_)
        k = len(self.classes_)
        if self.coef_.shape[0] != k or self.intercept_.shape != (k,):
            raise InputError(f"a saved classifier of {k} groups holds {self.coef_.shape[0]} rows")

    @property
    def k(self) -> int:
        """Number of groups (the clusters of the run file)."""
        return len(self.classes_)

    @property
    def groups(self) -> list[str]:
        """The group name of each cluster number."""
        return [str(c) for c in self.classes_]


#: Past this condition number of I + W^T W (:func:`_shrunk_lda`) scikit-learn's lstsq drops
#: singular values, not rounding, decides the digits: the fit then takes scikit-learn's path.
_LDA_CONDITION_LIMIT = 1e10


def _shrunk_lda(z: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` fitted
    on ``z`` (n, d) of the classes ``target`` (n,), all of ``0 .. k-1`` present, with nothing
    d x d: O(n^2 d + n^3) time and O(n d) memory. Returns scikit-learn's ``coef_`` (k, d) and
    ``intercept_`` (k,) (one row for ``k == 2``); None where the diagonal part below is not
    positive (no class shrunk) or the solve is ill-conditioned: the caller then fits
    scikit-learn's.

    scikit-learn standardises the rows ``X_j`` of each class j by their own mean and standard
    deviation ``s_j`` (1 where constant), takes the Ledoit-Wolf covariance of those, centred,
    ``Y_j``: ``(1 - a_j) Y_j^T Y_j / n_j + a_j mu_j I``, scales it back by ``s_j`` on both sides,
    and weights it by the prior ``p_j = n_j / n``. The sum is ``D + U U^T``, with ``D`` the
    diagonal ``sum_j p_j a_j mu_j s_j^2`` and ``U`` the n columns ``sqrt(p_j (1 - a_j) / n_j)
    s_j Y_j^T``, so ``coef = (D + U U^T)^-1 means^T`` by the Woodbury identity.
    """
    n, d = z.shape
    eps = np.finfo(np.float64).eps
    diag = np.zeros(d)
    columns, means = [], []
    for j in range(k):
        x = z[target == j]
        m = len(x)
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        # StandardScaler's scale: 1 where the variance is within the rounding error of 0.
        constant = var <= m * eps * var + (m * mean * eps) ** 2
        scale = np.where(constant, 1.0, np.sqrt(var))
        y = (x - mean) / scale
        y -= y.mean(0)  # ledoit_wolf centres again (a rounding error's worth)
        # ledoit_wolf_shrinkage's sums from the m x m Gram matrix (Y^T Y and Y Y^T have the
        # same squared entries; those of (Y**2)^T (Y**2) sum to the rows' norms**4).
        gram = y @ y.T
        norms = np.diag(gram).copy()
        trace = norms.sum() / m  # of the empirical covariance
        mu = trace / d
        delta_ = np.sum(gram**2) / m**2
        beta = (np.sum(norms**2) / m - delta_) / (d * m)
        delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
        prior = m / n
        diag += prior * shrinkage * mu * scale**2
        columns.append(y.T * (scale * np.sqrt(prior * (1.0 - shrinkage) / m))[:, None])
        means.append(mean)
    if not diag.min() > 0:
        return None
    # Whitened by D, the solve's conditioning is that of I + W^T W alone (n x n).
    root = np.sqrt(diag)[:, None]
    w = np.hstack(columns) / root  # (d, n)
    inner = w.T @ w
    if not np.isfinite(inner).all():
        return None
    values, vectors = np.linalg.eigh(inner)
    if 1.0 + values[-1] > _LDA_CONDITION_LIMIT:
        return None
    centres = np.stack(means)  # (k, d)
    b = centres.T / root  # (d, k)
    # (D + U U^T)^-1 = D^-1/2 (I - W (I + W^T W)^-1 W^T) D^-1/2
    t = vectors @ ((vectors.T @ (w.T @ b)) / (1.0 + values)[:, None])
    coef = ((b - w @ t) / root).T  # (k, d)
    priors = np.bincount(target, minlength=k) / n
    intercept = -0.5 * np.einsum("kd,kd->k", centres, coef) + np.log(priors)
    if k == 2:  # scikit-learn's binary form
        coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
    return coef, intercept


def _principal_axes(z: np.ndarray) -> np.ndarray:
    """The principal axes (rows) of ``z`` by an exact SVD, with scikit-learn's signs (each
    axis's largest loading positive)."""
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    return vt * np.where(signs == 0, 1.0, signs)[:, None]


def _top_axes(axes: np.ndarray, z: np.ndarray, n: int | None) -> np.ndarray | None:
    """The top ``n`` of the ``axes`` of ``z`` (n, d), as many as it has; None for None."""
    if n is None:
        return None
    n = min(int(n), len(z) - 1, z.shape[1])
    if n < 1:
        raise InputError("a PCA needs at least 2 labelled slices")
    return axes[:n].copy()


def _matrix(X: Any) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"expected a non-empty (n, d) matrix of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise InputError(f"embeddings hold non-finite values (row {row})")
    return x


__all__ = ["MODELS", "GroupClassifier"]
