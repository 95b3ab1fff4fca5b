"""Membership by density ratio: how much likelier a slice is under the generator than under real
data it was not trained on (DOMIAS, van Breugel et al. 2023).

A generator that memorised its training slices puts more mass near them, so
``log p_gen(x) - log p_ref(x)`` is high for used slices; dividing by ``p_ref``, estimated from
known non-members, removes "this slice is simply typical" from the signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp

from ctfp.index.flat import FlatIndex
from ctfp.membership.neighbours import NeighbourMethod, neighbour_distances
from ctfp.membership.options import DensitySettings

#: The kernel density sums over at most this many nearest slices of each set.
KDE_NEIGHBOURS = 512
#: A k-th neighbour distance below this counts as this (an exact copy: a large, finite score).
DISTANCE_FLOOR = 1e-12


_D = DensitySettings()


@dataclass(kw_only=True, eq=False, repr=False)
class DensityRatioMembership(NeighbourMethod):
    """Score real slices by ``log p_gen(x) - log p_ref(x)`` (DOMIAS), ``p_gen`` from the
    generated slices, ``p_ref`` from the training reals labelled not used (scored
    leave-one-out). The parameters are the fields of :class:`DensitySettings`:

    - ``knn``: ``score = log r_k,ref(x) - log r_k,gen(x)`` with ``r_k`` the distance to the
      k-th nearest slice of the set (the kNN estimate with intrinsic dimension 1: any common
      dimension ranks alike; a distance below 1e-12 counts as 1e-12). Needs at least k
      generated and k + 1 reference slices.
    - ``kde``: ``score = [logsumexp_g(-d(x, g)^2 / 2h^2) - log m] - [logsumexp_r(-d(x, r)^2
      / 2h^2) - log n_ref]`` with ``h = bandwidth_`` (``bandwidth`` times the generated
      slices' median nearest-other distance), each sum over the nearest ``min(set size,
      512)`` slices of the set (exact up to 512; beyond, the smallest terms dropped).

    ``index_`` and ``reference_`` index the generated and reference slices.
    """

    name = "density"
    settings_class = DensitySettings
    rank = 5
    saved_state: ClassVar[dict[str, str]] = {
        **NeighbourMethod.saved_state,
        "bandwidth_": "fitted_bandwidth",
    }

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """kNN (k = 1, 5) and a Gaussian KDE (bandwidth 0.5, 1, 2 x the generated set's
        median nearest-neighbour distance)."""
        knn = [{"estimator": "knn", "neighbours": k} for k in (1, 5)]
        return knn + [{"estimator": "kde", "bandwidth": b} for b in (0.5, 1.0, 2.0)]

    estimator: str = _D.estimator
    neighbours: int = _D.neighbours
    bandwidth: float = _D.bandwidth
    metric: str = _D.metric
    calibrate: str = _D.calibrate
    device: str = "auto"

    def fit(self, X: Any, y: Any, generated: Any = None) -> DensityRatioMembership:
        """Index ``generated`` (m, d) and the not-used training reals; calibrate on training
        reals ``X`` (n, d) with labels ``y`` (1 = used, 0 = not used)."""
        x, y, g = self._fit_inputs(X, y, generated)
        assert g is not None
        ref_rows = np.flatnonzero(y == 0)
        if self.estimator == "knn":
            if len(g) < self.neighbours:
                raise ValueError(
                    f"{self.neighbours} neighbours need at least as many generated slices, got "
                    f"{len(g)}"
                )
        elif len(g) < 2:
            raise ValueError(f"kde needs at least 2 generated slices, got {len(g)}")
        self._check_reference(len(ref_rows))
        x, g = self._index_generated(x, g)
        self.reference_ = self._index_reference(x[ref_rows])
        self.bandwidth_ = None
        if self.estimator == "kde":
            D, valid = neighbour_distances(
                self.index_, g, 1, self.metric, leave_out=np.arange(len(g))
            )
            nearest = np.where(valid, D, np.inf).min(1)
            median = float(np.median(nearest))
            if not median > 0:
                raise ValueError(
                    "the kde bandwidth is a multiple of the median distance of the generated "
                    "slices to their nearest other one, and it is 0: most generated slices have "
                    "an exact copy among them; use estimator='knn'"
                )
            self.bandwidth_ = float(self.bandwidth) * median
        return self._calibrate(self._score(x, leave_out=ref_rows), y)

    def _check_reference(self, n: int) -> None:
        if self.estimator == "knn" and n < self.neighbours + 1:
            raise ValueError(
                f"{self.neighbours} neighbours need at least {self.neighbours + 1} not-used "
                f"training slices (the reference set, scored leave-one-out), got {n}"
            )
        if self.estimator == "kde" and n < 2:
            raise ValueError(f"kde needs at least 2 not-used training slices, got {n}")

    def _generated_term(self, x: np.ndarray) -> np.ndarray:
        return self._log_density(self.index_, x, None)

    def _reference_term(self, reference: Any, x: np.ndarray, leave_out: np.ndarray) -> np.ndarray:
        return self._log_density(reference, x, leave_out)

    def _log_density(
        self, index: FlatIndex, x: np.ndarray, leave_out: np.ndarray | None
    ) -> np.ndarray:
        """(n,) log density (up to a constant) of ``index``'s (other) rows at ``x``: ``knn``,
        minus the log distance to the k-th nearest; ``kde``, the log Gaussian kernel sum over
        the nearest ``KDE_NEIGHBOURS`` over the set's size."""
        if self.estimator == "knn":
            D, valid = neighbour_distances(
                index, x, self.neighbours, self.metric, leave_out=leave_out
            )
            D = np.where(valid, D, np.inf)
            D.sort(axis=1)
            return -np.log(np.maximum(D[:, self.neighbours - 1], DISTANCE_FLOOR))
        assert self.bandwidth_ is not None
        k = min(index.ntotal, KDE_NEIGHBOURS)
        D, valid = neighbour_distances(index, x, k, self.metric, leave_out=leave_out)
        logits = np.where(valid, -(D**2) / (2 * self.bandwidth_**2), -np.inf)
        size = np.full(len(x), float(index.ntotal))
        if leave_out is not None and len(leave_out):
            size[np.asarray(leave_out)] -= 1  # a left-out slice is not in its own set
        return logsumexp(logits, axis=1) - np.log(size)

    def _restore(self, device: str) -> None:
        self.bandwidth_ = None if self.bandwidth_ is None else float(self.bandwidth_)
        super()._restore(device)


__all__ = ["DensityRatioMembership", "DensitySettings"]
