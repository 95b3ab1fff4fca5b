"""The seed paper's membership method: per-class k-means centres and a FAISS flat L1 1-NN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp._arrays import to_numpy
from ctfp.cluster.kmeans import KMeans
from ctfp.index.flat import FlatIndex
from ctfp.membership.base import MembershipMethod


@dataclass(eq=False, repr=False)
class CentroidMembership(MembershipMethod):
    """k-means centres of the "used" and the "not used" training embeddings; a slice takes the
    label of its nearest centre by Manhattan (L1) distance, found in a FAISS flat L1 index of
    the 2k centres (ImageCLEFmedical GANs 2024, Goa College of Engineering; best k = 4).

    ``k``: clusters per class; ``n_init``, ``random_state``, ``device``, ``backend``: passed to
    :class:`ctfp.cluster.KMeans` (the indexes use the same device). Fitted: the centres
    ``centers_used_``, ``centers_not_used_`` (k, d) float32, ``index_`` over the 2k (used
    first), and ``threshold_`` 0.0 (the 1-NN label) or the one ``--method auto`` chose.
    """

    name = "centroid"
    needs_members = True
    light_scoring = True
    rank = 4
    saved_state: ClassVar[dict[str, str]] = {
        "centers_used_": "centers_used",
        "centers_not_used_": "centers_not_used",
        "threshold_": "threshold",
        "classes_": "classes",
    }

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """The seed method at each k the smaller training class allows."""
        return [{"k": k} for k in ks if k <= n_small]

    k: int = 4
    _: KW_ONLY
    n_init: int = 3
    random_state: int | None = 0
    device: str = "auto"
    backend: str = "auto"

    def fit(self, X: Any, y: Any, generated: Any = None) -> CentroidMembership:
        """Fit the centres on training reals ``X`` (n, d) with labels ``y`` (n,); ``generated``
        is not used."""
        if not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        x, y, _ = self._fit_inputs(X, y, None)
        centres = []
        for name, part in (("used", x[y == 1]), ("not used", x[y == 0])):
            if part.shape[0] < self.k:
                raise ValueError(
                    f"k={self.k} needs at least {self.k} '{name}' training slices, got "
                    f"{part.shape[0]}"
                )
            km = KMeans(
                self.k,
                n_init=self.n_init,
                random_state=self.random_state,
                device=self.device,
                backend=self.backend,
            )
            centres.append(km.fit(part).cluster_centers_)
        return self._set_centres(*centres)

    @classmethod
    def from_centres(
        cls, centers_used: Any, centers_not_used: Any, *, device: str = "auto"
    ) -> CentroidMembership:
        """A fitted model from its centres (k, d) each, without k-means."""
        used = to_numpy(centers_used, np.float32, "used centres")
        not_used = to_numpy(centers_not_used, np.float32, "not-used centres")
        if used.shape != not_used.shape:
            raise ValueError(f"centre shapes differ: {used.shape} vs {not_used.shape}")
        return cls(used.shape[0], device=device)._set_centres(used, not_used)

    def _set_centres(self, used: np.ndarray, not_used: np.ndarray) -> CentroidMembership:
        self.centers_used_, self.centers_not_used_ = used, not_used
        self.threshold_ = 0.0
        if not hasattr(self, "classes_"):
            self.classes_ = np.array([0, 1])
        d = used.shape[1]
        self.n_features_in_ = d
        self.index_ = FlatIndex(d, metric="l1", device=self.device).add(np.vstack([used, not_used]))
        # Per-class indexes for the score: two 1-NN searches are far cheaper than a 2k-NN one.
        self.index_used_ = FlatIndex(d, metric="l1", device=self.device).add(used)
        self.index_not_used_ = FlatIndex(d, metric="l1", device=self.device).add(not_used)
        return self

    def _score(self, a: np.ndarray) -> np.ndarray:
        """L1 distance to the nearest not-used centre minus that to the nearest used one
        (positive: closer to a "used" centre); a non-finite row scores NaN."""
        score = np.zeros(len(a))
        for sign, index in ((-1.0, self.index_used_), (1.0, self.index_not_used_)):
            D, I = index.search_checked(a, 1)  # noqa: E741
            # FAISS reports a row with no finite distance (NaN/inf input) as neighbour -1.
            score += sign * np.where(I[:, 0] < 0, np.nan, D[:, 0].astype(np.float64))
        return score

    def predict(self, x: Any) -> np.ndarray:
        """(n,) ``classes_[1]`` (used) if the nearest of the 2k centres is a "used" centre, else
        ``classes_[0]``; with a ``threshold_`` other than 0: ``score_samples(x) >= threshold_``."""
        self._check_fitted()
        if self.threshold_ != 0.0:
            return super().predict(x)
        _, I = self.index_.search(self._check_x(x), 1)  # noqa: E741
        return self.classes_[(I[:, 0] < len(self.centers_used_)).astype(np.int64)]

    def _restore(self, device: str) -> None:
        threshold, classes = self.threshold_, self.classes_
        self._set_centres(
            to_numpy(self.centers_used_, np.float32, "used centres"),
            to_numpy(self.centers_not_used_, np.float32, "not-used centres"),
        )
        self.threshold_, self.classes_ = threshold, classes
        super()._restore(device)


__all__ = ["CentroidMembership"]
