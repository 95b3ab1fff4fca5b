"""Membership by proximity to the generated set, calibrated against a reference set.

A generator that memorised a training slice produces near-copies of it (the strongest ImageCLEF
2023 approach); GAN-Leaks (Chen et al. 2020) subtracts the distance to known non-members,
removing "this slice is simply typical" from the signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp.index.ann import recall_at_1
from ctfp.membership.neighbours import NeighbourMethod, neighbour_distances
from ctfp.membership.options import ProximitySettings

_D = ProximitySettings()


@dataclass(kw_only=True, eq=False, repr=False)
class ProximityMembership(NeighbourMethod):
    """Score real slices by their distance to the nearest generated slices.

    The parameters are the fields of :class:`ProximitySettings` (their help says what each
    does), and ``device`` (approximate indexes refuse ``cuda``). With ``reference`` the score
    is ``d(x, reference) - d(x, generated)``, the reference set being the training "not used"
    slices (scored leave-one-out). ``recall_``: an approximate index's recall@1 against exact
    search on the training reals (None for ``flat``).
    """

    name = "proximity"
    settings_class = ProximitySettings
    rank = 0
    saved_state: ClassVar[dict[str, str]] = {**NeighbourMethod.saved_state, "recall_": "recall"}

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """L2 and cosine, with and without the GAN-Leaks reference."""
        return [{"metric": m, "reference": r} for m in ("l2", "cosine") for r in (False, True)]

    metric: str = _D.metric
    neighbours: int = _D.neighbours
    reference: bool = _D.reference
    calibrate: str = _D.calibrate
    index: str = _D.index
    recall_target: float | None = _D.recall_target
    device: str = "auto"

    @property
    def uses_labels(self) -> bool:
        return bool(self.reference)  # the reference set is the known non-members

    def fit(self, X: Any, y: Any, generated: Any = None) -> ProximityMembership:
        """Index ``generated`` (m, d); calibrate on training reals ``X`` (n, d) with ``y``."""
        x, y, g = self._fit_inputs(X, y, generated)
        assert g is not None
        if len(g) < self.neighbours:
            raise ValueError(f"{self.neighbours} neighbours need at least as many generated slices")
        x, g = self._index_generated(x, g)
        self.recall_ = None
        if self.index != "flat":
            if self.recall_target is None:
                self.recall_ = recall_at_1(self.index_, g, x)
            else:
                self.recall_ = self.index_.tune(g, x, self.recall_target)
        self.reference_ = None
        ref_rows = np.flatnonzero(y == 0)
        if self.reference:
            self._check_reference(len(ref_rows))
            self.reference_ = self._index_reference(x[ref_rows])
        return self._calibrate(self._score(x, leave_out=ref_rows), y)

    def _check_reference(self, n: int) -> None:
        if n < 2:
            raise ValueError("the reference set needs at least 2 not-used training slices")

    def _generated_term(self, x: np.ndarray) -> np.ndarray:
        d_gen, _ = neighbour_distances(self.index_, x, self.neighbours, self.metric)
        return -d_gen.mean(1)

    def _reference_term(self, reference: Any, x: np.ndarray, leave_out: np.ndarray) -> np.ndarray:
        d_ref, use = neighbour_distances(
            reference, x, self.neighbours, self.metric, leave_out=leave_out
        )
        return -(np.where(use, d_ref, 0).sum(1) / np.maximum(use.sum(1), 1))


__all__ = ["ProximityMembership", "ProximitySettings"]
