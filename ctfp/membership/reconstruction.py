"""Membership by how well a low-rank surrogate of the generator reconstructs a real slice.

A generator that memorised its training slices puts their directions into its output, so a
surrogate fitted to the output reconstructs used slices better (LOGAN, Hayes et al. 2019;
Hilprecht et al. 2019; GAN-Leaks, Chen et al. 2020). The surrogate is a PCA of the generated
embeddings; the score is the negated mean squared residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp.membership.base import MembershipMethod
from ctfp.membership.options import ReconstructionSettings

#: Rows per float64 block of the covariance and the scores (bounds the memory).
BLOCK = 4096

_D = ReconstructionSettings()


def _rows(a: np.ndarray, normalize: bool) -> np.ndarray:
    """Rows of ``a`` as float64, scaled to unit L2 norm if ``normalize`` (a zero row stays
    zero)."""
    a = a.astype(np.float64)
    if normalize:
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return a


def _principal_directions(
    g: np.ndarray, r: int, normalize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), top ``r`` principal directions (r, d) and their explained variance ratios
    (r,) of the rows of ``g`` (m, d) (L2-normalised first if ``normalize``), all float64: SVD
    for m <= d, else the d x d scatter matrix accumulated in blocks. Each direction's largest
    entry is made positive, so refits and saved models agree.
    """
    m, d = g.shape
    mean = np.zeros(d)
    for start in range(0, m, BLOCK):
        mean += _rows(g[start : start + BLOCK], normalize).sum(0)
    mean /= m
    if m <= d:
        _, s, vt = np.linalg.svd(_rows(g, normalize) - mean, full_matrices=False)
        variance, directions = s**2, vt
    else:
        scatter = np.zeros((d, d))
        for start in range(0, m, BLOCK):
            c = _rows(g[start : start + BLOCK], normalize) - mean
            scatter += c.T @ c
        eigenvalues, eigenvectors = np.linalg.eigh(scatter)  # ascending
        variance = np.maximum(eigenvalues[::-1], 0.0)
        directions = eigenvectors[:, ::-1].T
    total = variance.sum()
    ratio = variance[:r] / total if total > 0 else np.zeros(r)
    directions = np.ascontiguousarray(directions[:r])
    biggest = np.argmax(np.abs(directions), axis=1)
    directions *= np.sign(directions[np.arange(r), biggest])[:, None]
    return mean, directions, ratio


@dataclass(kw_only=True, eq=False, repr=False)
class ReconstructionMembership(MembershipMethod):
    """Score real slices by how well a PCA of the generated slices reconstructs them: with the
    mean and top principal directions V of the generated set, ``x_hat = mean + (x - mean) V^T
    V`` and the score is ``-||x - x_hat||^2 / d``. The labels only choose the threshold.

    The parameters are the fields of :class:`ReconstructionSettings`; ``components`` beyond
    ``min(m - 1, d)`` (``m`` generated slices) is capped there, not refused.

    Attributes: ``mean_`` (d,), ``components_`` (n_components_, d) orthonormal directions,
    largest first, ``n_components_``, ``explained_variance_ratio_`` (n_components_,).
    """

    name = "reconstruction"
    needs_generated = True
    settings_class = ReconstructionSettings
    rank = 2
    uses_labels = False  # the surrogate sees the generated slices only
    saved_state: ClassVar[dict[str, str]] = {
        "mean_": "mean",
        "components_": "components",
        "explained_variance_ratio_": "explained_variance_ratio",
        "n_components_": "n_components",
        **MembershipMethod.saved_state,
    }

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """4, 16 and 64 principal components of the generated set."""
        return [{"components": c} for c in (4, 16, 64)]

    light_scoring = True  # two (n, d) x (d, r) products per block: cheaper than reading a row

    components: int = _D.components
    normalize: bool = _D.normalize
    calibrate: str = _D.calibrate

    def fit(self, X: Any, y: Any, generated: Any = None) -> ReconstructionMembership:
        """Fit the PCA to ``generated`` (m, d); choose the threshold on ``X`` (n, d), ``y``."""
        x, y, g = self._fit_inputs(X, y, generated)
        assert g is not None
        m, d = g.shape
        if m < 2:
            raise ValueError("the reconstruction surrogate needs at least 2 generated slices")
        self.n_components_ = min(int(self.components), m - 1, d)
        self.mean_, self.components_, self.explained_variance_ratio_ = _principal_directions(
            g, self.n_components_, bool(self.normalize)
        )
        return self._calibrate(self._score(x), y)

    def _score(self, x: np.ndarray) -> np.ndarray:
        """Negated mean squared residual of each row of ``x`` (n, d), in float64 blocks."""
        V = self.components_
        score = np.empty(len(x))
        for start in range(0, len(x), BLOCK):
            c = _rows(x[start : start + BLOCK], bool(self.normalize)) - self.mean_
            # The residual itself: ||c||^2 - ||c V^T||^2 would cancel the digits of a
            # near-perfect reconstruction. An unchecked non-finite row scores NaN quietly.
            with np.errstate(invalid="ignore", over="ignore"):
                residual = c - (c @ V.T) @ V
            score[start : start + BLOCK] = -np.einsum("ij,ij->i", residual, residual) / x.shape[1]
        return score

    def _restore(self, device: str) -> None:
        """numpy on the host: ``device`` is taken for the interface and not used."""
        self.mean_ = np.asarray(self.mean_, dtype=np.float64)
        self.components_ = np.ascontiguousarray(self.components_, dtype=np.float64)
        ratio = self.explained_variance_ratio_
        self.explained_variance_ratio_ = np.asarray(ratio, dtype=np.float64)
        self.n_components_ = int(self.n_components_)
        self.n_features_in_ = len(self.mean_)
        super()._restore(device)


__all__ = ["ReconstructionMembership", "ReconstructionSettings"]
