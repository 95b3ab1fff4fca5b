"""Task 2 with labels: a linear classifier of the generator that made a slice.

The challenge gives labelled samples of each known generator (``train/<group>/``). A linear
model on fingerprint features separates generators far better than a blind mixture fitted to
the test slices alone, and keeps separating them after re-encoding and resampling, where the
mixture's clusters follow the damage instead of the source. Two linear models:

- ``lr``: multinomial logistic regression (L2, ``C``), on standardised features;
- ``lda``: linear discriminant analysis with a Ledoit-Wolf shrunk shared covariance (well posed
  with fewer samples than dimensions).

Either may run on a PCA of the standardised features first (``pca``). Both predict with
``softmax(x W^T + b)``, which is all that is saved (no pickles). For the open set
(:meth:`GroupClassifier.log_density`), each group is also a Gaussian with its own mean and the
shared shrunk covariance in a PCA space of at most ``density_components`` dimensions: a slice
whose best group density is lower than held-out labelled slices reach came from no known group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ctfp.exceptions import InputError

MODELS = ("lr", "lda")


class GroupClassifier:
    """Predict the labelled group (generator) of each slice.

    Parameters
    ----------
    model : {"lr", "lda"}
        Logistic regression or shrunk LDA.
    pca : int or None
        Project the standardised features onto this many principal components first.
    C : float
        Inverse L2 strength of the logistic regression.
    density_components : int
        Dimensions of the space of the open-set group densities.
    random_state : int
        Seeds the PCA's randomised solver.
    """

    name: ClassVar[str] = "classify"
    task: ClassVar[str] = "task2"

    def __init__(
        self,
        model: str = "lr",
        pca: int | None = None,
        C: float = 1.0,
        density_components: int = 32,
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.pca = pca
        self.C = C
        self.density_components = density_components
        self.random_state = random_state

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
        self._fit_density(z, target, len(names))
        if density_only:
            self._svd_of = self._axes = None
            return self
        self.components_ = self._pca(z, self.pca)
        zp = z if self.components_ is None else z @ self.components_.T
        if self.components_ is not None and self.model == "lr":
            # Unit variance per axis, as the features before the PCA: the leading axes' large
            # variances otherwise make L-BFGS crawl (seconds per fit instead of milliseconds).
            sd = zp.std(0)
            sd = np.where(sd > 0, sd, 1.0)
            self.components_, zp = self.components_ / sd[:, None], zp / sd
        if self.model == "lr":
            from sklearn.linear_model import LogisticRegression

            fitted = LogisticRegression(C=self.C, max_iter=2000).fit(zp, target)
        else:
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            fitted = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(zp, target)
        coef, intercept = np.asarray(fitted.coef_), np.asarray(fitted.intercept_)
        if len(names) == 2:  # sklearn's binary form: one row, class 1 against class 0
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        self.coef_, self.intercept_ = coef, intercept
        self._svd_of = self._axes = None  # not state: drop the fit's temporaries
        return self

    def _pca(self, z: np.ndarray, n: int | None) -> np.ndarray | None:
        """The top ``n`` principal axes (rows) of the centred ``z``: an exact SVD, computed
        once per fit and shared by the classifier's and the densities' projections (a few
        hundred labelled rows: exact is cheaper than scikit-learn's randomised solver)."""
        if n is None:
            return None
        n = min(int(n), len(z) - 1, z.shape[1])
        if n < 1:
            raise InputError("a PCA needs at least 2 labelled slices")
        if getattr(self, "_svd_of", None) is not z:
            _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
            # scikit-learn's sign convention: the largest loading of each axis is positive.
            signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
            self._svd_of, self._axes = z, vt * np.where(signs == 0, 1.0, signs)[:, None]
        return self._axes[:n].copy()

    def _fit_density(self, z: np.ndarray, target: np.ndarray, k: int) -> None:
        from sklearn.covariance import ledoit_wolf

        basis = self._pca(z, self.density_components)
        self.density_basis_ = basis
        w = z @ basis.T
        means = np.stack([w[target == j].mean(0) for j in range(k)])
        cov, _ = ledoit_wolf(w - means[target])
        self.density_means_ = means
        self.density_precision_ = np.linalg.inv(cov)
        _, logdet = np.linalg.slogdet(cov)
        self.density_logdet_ = float(logdet)

    # -- prediction -----------------------------------------------------------------------------
    def _standardised(self, X: Any) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise ValueError("this GroupClassifier is not fitted yet; call fit first")
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
        d = self.decision_function(X)
        d = d - d.max(1, keepdims=True)
        p = np.exp(d)
        return p / p.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """(n,) index into ``classes_`` of each slice's most likely group."""
        return self.decision_function(X).argmax(1)

    def log_density(self, X: Any) -> np.ndarray:
        """(n,) log density of each slice under its most likely known group (the Gaussians
        of the open set; see the module docstring)."""
        w = self._standardised(X) @ self.density_basis_.T
        d = w[:, None, :] - self.density_means_[None]
        maha = np.einsum("nkd,de,nke->nk", d, self.density_precision_, d)
        dim = w.shape[1]
        log = -0.5 * (maha + self.density_logdet_ + dim * np.log(2 * np.pi))
        return log.max(1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError("this GroupClassifier is not fitted yet; call fit first")

    # -- saving ---------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-ready parameters, arrays): the linear model, its scaling and projections."""
        self._check_fitted()
        params = {
            "model": self.model,
            "pca": self.pca,
            "C": self.C,
            "density_components": self.density_components,
            "random_state": self.random_state,
            "classes": [str(c) for c in self.classes_],
            "density_logdet": self.density_logdet_,
            "k": len(self.classes_),
        }
        arrays = {
            "mean": self.mean_,
            "scale": self.scale_,
            "coef": self.coef_,
            "intercept": self.intercept_,
            "density_basis": self.density_basis_,
            "density_means": self.density_means_,
            "density_precision": self.density_precision_,
        }
        if self.components_ is not None:
            arrays["components"] = self.components_
        return params, arrays

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, device: str = "auto"
    ) -> GroupClassifier:
        """The classifier :meth:`to_state` described (``device`` unused: numpy on the CPU)."""
        del device
        model = cls(
            model=params["model"],
            pca=params["pca"],
            C=float(params["C"]),
            density_components=int(params["density_components"]),
            random_state=int(params["random_state"]),
        )
        model.classes_ = np.asarray(params["classes"], dtype=object)
        model.density_logdet_ = float(params["density_logdet"])
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.components_ = arrays.get("components")
        model.density_basis_ = arrays["density_basis"]
        model.density_means_ = arrays["density_means"]
        model.density_precision_ = arrays["density_precision"]
        k = len(model.classes_)
        if model.coef_.shape[0] != k or model.intercept_.shape != (k,):
            raise InputError(f"a saved classifier of {k} groups holds {model.coef_.shape[0]} rows")
        return model

    @property
    def k(self) -> int:
        """Number of groups (the clusters of the run file)."""
        return len(self.classes_)

    @property
    def groups(self) -> list[str]:
        """The group name of each cluster number."""
        return [str(c) for c in self.classes_]


def _matrix(X: Any) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"expected a non-empty (n, d) matrix of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise InputError(f"embeddings hold non-finite values (row {row})")
    return x


__all__ = ["MODELS", "GroupClassifier"]
