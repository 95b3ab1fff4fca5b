"""Membership by counting generated slices near a real one (Monte-Carlo membership inference,
Hilprecht et al. 2019): a generator samples near a slice it memorised more often than near one
it never saw. The labels choose the decision threshold, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp.membership.neighbours import NeighbourMethod, neighbour_distances
from ctfp.membership.options import CountingSettings

#: Generated slices counted per real slice: the nearest this many (exact up to this many).
MAX_COUNTED = 1024


_D = CountingSettings()


@dataclass(kw_only=True, eq=False, repr=False)
class CountingMembership(NeighbourMethod):
    """Score real slices by the fraction of generated slices within a radius of them.

    ``score(x) = #{g : d(x, g) <= radius_} / m`` over the ``m`` generated slices (many slices
    share a score). Only the nearest ``min(m, 1024)`` are counted: exact when ``m <= 1024``,
    capped at ``1024 / m`` beyond. The parameters are the fields of :class:`CountingSettings`;
    ``radius_`` is the ``radius_quantile`` of the training reals' distances to their nearest
    generated slice (used or not), ``index_`` the generated slices' index.
    """

    name = "counting"
    settings_class = CountingSettings
    rank = 1
    uses_labels = False  # the labels only choose the threshold
    saved_state: ClassVar[dict[str, str]] = {**NeighbourMethod.saved_state, "radius_": "radius"}

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """The radius at the 10 % and the 50 % quantile."""
        return [{"radius_quantile": q} for q in (0.1, 0.5)]

    radius_quantile: float = _D.radius_quantile
    metric: str = _D.metric
    calibrate: str = _D.calibrate
    device: str = "auto"

    def fit(self, X: Any, y: Any, generated: Any = None) -> CountingMembership:
        """Index ``generated`` (m, d); choose the radius on training reals ``X`` (n, d) and the
        threshold with their labels ``y``."""
        x, y, g = self._fit_inputs(X, y, generated)
        x, g = self._index_generated(x, g)
        D = self._distances(x)
        self.radius_ = float(np.quantile(D[:, 0], self.radius_quantile))
        return self._calibrate(self._count(D), y)

    def _distances(self, x: np.ndarray) -> np.ndarray:
        """(n, min(m, 1024)) distances to the nearest generated slices, best first."""
        D, _ = neighbour_distances(
            self.index_, x, min(self.index_.ntotal, MAX_COUNTED), self.metric
        )
        return D

    def _count(self, distances: np.ndarray) -> np.ndarray:
        """(n,) fraction of the generated slices within ``radius_`` (ties with it count)."""
        return (distances <= self.radius_).sum(1) / self.index_.ntotal

    def _score(self, x: np.ndarray) -> np.ndarray:
        return self._count(self._distances(x))

    def _restore(self, device: str) -> None:
        self.radius_ = float(self.radius_)
        super()._restore(device)


__all__ = ["CountingMembership", "CountingSettings"]
