"""Task 1, the seed paper's method: per-class k-means centres and a FAISS flat L1 1-NN lookup."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._arrays import to_numpy
from ctfp.cluster.kmeans import KMeans
from ctfp.index.flat import FlatIndex


class CentroidMembership:
    """k-means centres of the "used" and the "not used" training embeddings; a slice takes the
    label of its nearest centre by Manhattan (L1) distance, found in a FAISS flat L1 index of
    the 2k centres (ImageCLEFmedical GANs 2024, Goa College of Engineering; best k = 4).

    Parameters
    ----------
    k
        Clusters per class.
    random_state, n_init, device, backend
        Passed to :class:`ctfp.cluster.KMeans`; the index uses the same device.

    Attributes
    ----------
    centers_used_, centers_not_used_ : (k, d) float32
    index_ : FlatIndex over the 2k centres (used first)
    """

    def __init__(
        self,
        k: int = 4,
        *,
        random_state: int | None = 0,
        n_init: int = 3,
        device: str = "auto",
        backend: str = "auto",
    ) -> None:
        self.k = k
        self.random_state = random_state
        self.n_init = n_init
        self.device = device
        self.backend = backend

    def fit(self, used: Any, not_used: Any) -> CentroidMembership:
        """Fit the centres on embeddings of slices known to be used / not used: (n, d) each."""
        centres = []
        for name, x in (("used", used), ("not used", not_used)):
            a = to_numpy(x, np.float32, f"{name} embeddings")
            if a.shape[0] < self.k:
                raise ValueError(
                    f"k={self.k} needs at least {self.k} '{name}' training slices, got {a.shape[0]}"
                )
            km = KMeans(
                self.k,
                n_init=self.n_init,
                random_state=self.random_state,
                device=self.device,
                backend=self.backend,
            )
            centres.append(km.fit(a).cluster_centers_)
        return self._set_centres(*centres)

    @classmethod
    def from_centres(
        cls, centers_used: Any, centers_not_used: Any, *, device: str = "auto"
    ) -> CentroidMembership:
        """A fitted model from its centres (e.g. a saved model's), without k-means."""
        used = to_numpy(centers_used, np.float32, "used centres")
        not_used = to_numpy(centers_not_used, np.float32, "not-used centres")
        if used.shape != not_used.shape:
            raise ValueError(f"centre shapes differ: {used.shape} vs {not_used.shape}")
        return cls(used.shape[0], device=device)._set_centres(used, not_used)

    def _set_centres(self, used: np.ndarray, not_used: np.ndarray) -> CentroidMembership:
        self.centers_used_, self.centers_not_used_ = used, not_used
        self.threshold_ = 0.0  # score >= 0: at least as close to a "used" centre
        d = used.shape[1]
        self.index_ = FlatIndex(d, metric="l1", device=self.device).add(np.vstack([used, not_used]))
        # Per-class indexes for the score: two 1-NN searches are far cheaper than a 2k-NN one.
        self.index_used_ = FlatIndex(d, metric="l1", device=self.device).add(used)
        self.index_not_used_ = FlatIndex(d, metric="l1", device=self.device).add(not_used)
        return self

    def score(self, x: Any, *, check_input: bool = True) -> np.ndarray:
        """(n,) L1 distance to the nearest not-used centre minus that to the nearest used one.

        Positive means closer to a "used" centre; use it for ROC-AUC. ``check_input=False``
        skips the finiteness check of a C-contiguous float32 ``x`` (a non-finite row then gets a
        non-finite score, which the caller checks: :func:`ctfp.score_shards` does).
        """
        if not hasattr(self, "index_"):
            raise ValueError("this CentroidMembership is not fitted yet; call fit first")
        fast = isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
        a = x if fast and not check_input and x.flags.c_contiguous else to_numpy(x, np.float32)
        score = np.zeros(len(a))
        for sign, index in ((-1.0, self.index_used_), (1.0, self.index_not_used_)):
            D, I = index.search_checked(a, 1)  # noqa: E741
            # FAISS reports a row with no finite distance (NaN/inf input) as neighbour -1.
            score += sign * np.where(I[:, 0] < 0, np.nan, D[:, 0].astype(np.float64))
        return score

    def predict(self, x: Any) -> np.ndarray:
        """(n,) 1 if the nearest of the 2k centres is a "used" centre, else 0 (the 1-NN label)."""
        if not hasattr(self, "index_"):
            raise ValueError("this CentroidMembership is not fitted yet; call fit first")
        _, I = self.index_.search(to_numpy(x, np.float32), 1)  # noqa: E741
        return (I[:, 0] < self.k).astype(np.int64)
