"""Task 1 beyond the seed: membership by proximity to the generated set (and its calibrated form).

A generator that memorised a training slice produces near-copies of it, so a real slice close to
its nearest generated slice was likely used for training (the strongest ImageCLEF 2023 approach).
The calibrated score of the membership-inference literature (GAN-Leaks, Chen et al. 2020)
subtracts the distance to a reference set of known non-members, removing "this slice is simply
typical" from the signal. The decision threshold is chosen on labelled training reals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._arrays import to_numpy
from ctfp.index.ann import make_index, recall_at_1
from ctfp.index.flat import FlatIndex

METRICS = ("l1", "l2", "cosine")
CRITERIA = ("f1", "accuracy", "balanced")


def choose_threshold(scores: np.ndarray, y: np.ndarray, criterion: str = "balanced") -> float:
    """The threshold t (predict 1 when score >= t) that maximises ``criterion`` on (scores, y).

    ``f1`` (used = positive), ``accuracy``, or ``balanced`` accuracy (mean of the two recalls,
    i.e. Youden's J; robust to unbalanced training labels). Midpoints between sorted scores are
    tried; ties go to the higher threshold.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both used (1) and not-used (0) training slices")
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    pred = scores[None, :] >= candidates[:, None]
    tp = (pred & (y == 1)).sum(1)
    fp = (pred & (y == 0)).sum(1)
    pos, neg = (y == 1).sum(), (y == 0).sum()
    tn = neg - fp
    if criterion == "f1":
        value = 2 * tp / np.maximum(2 * tp + fp + (pos - tp), 1)
    elif criterion == "accuracy":
        value = (tp + tn) / len(y)
    else:
        value = (tp / pos + tn / neg) / 2
    best = np.flatnonzero(value == value.max())
    return float(candidates[best[-1]])


class ProximityMembership:
    """Score real slices by their distance to the nearest generated slices.

    Parameters
    ----------
    metric
        ``l1``, ``l2`` or ``cosine`` (distances on L2-normalised vectors).
    neighbours
        Mean distance over this many nearest generated slices.
    reference
        If true, ``fit`` keeps the training "not used" slices as a reference set and the score
        becomes ``d(x, reference) - d(x, generated)`` (GAN-Leaks calibration); training slices
        of the reference set are scored leave-one-out.
    calibrate
        Criterion for the threshold chosen on the training reals: f1, accuracy, balanced.
    index
        ``flat`` (exact), ``ivf`` or ``hnsw`` (approximate, for millions of generated slices;
        ``recall_`` holds recall@1 against exact search on the training reals).
    recall_target
        Approximate indexes only: the search effort (IVF nprobe, HNSW efSearch) is tuned on the
        training reals to the least that reaches this recall@1 (None: FAISS-style defaults,
        nprobe 16 / efSearch 128).

    Attributes
    ----------
    threshold_ : float, slices with ``score >= threshold_`` are predicted used
    train_scores_ : (n_train,) scores of the training reals used to choose it
    recall_ : float or None
    """

    def __init__(
        self,
        *,
        metric: str = "cosine",
        neighbours: int = 1,
        reference: bool = True,
        calibrate: str = "balanced",
        index: str = "flat",
        recall_target: float | None = 0.99,
        device: str = "auto",
    ) -> None:
        self.recall_target = recall_target
        self.metric = metric
        self.neighbours = neighbours
        self.reference = reference
        self.calibrate = calibrate
        self.index = index
        self.device = device

    def _prep(self, x: Any, name: str) -> np.ndarray:
        a = to_numpy(x, np.float32, name)
        if self.metric == "cosine":
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        return a

    def _distance(self, D: np.ndarray) -> np.ndarray:
        D = np.asarray(D, dtype=np.float64)
        return np.sqrt(np.maximum(D, 0)) if self.metric in ("l2", "cosine") else D

    def fit(self, generated: Any, train_x: Any, train_y: Any) -> ProximityMembership:
        """Index ``generated`` (m, d); calibrate on training reals ``train_x`` (n, d) with labels
        ``train_y`` (1 = used, 0 = not used)."""
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        g = self._prep(generated, "generated embeddings")
        if len(g) < self.neighbours:
            raise ValueError(f"{self.neighbours} neighbours need at least as many generated slices")
        x = self._prep(train_x, "training embeddings")
        y = np.asarray(train_y, dtype=int)
        if len(y) != len(x):
            raise ValueError("train_x and train_y have different lengths")
        faiss_metric = "l1" if self.metric == "l1" else "l2"
        self.index_ = make_index(
            g.shape[1], kind=self.index, metric=faiss_metric, device=self.device
        )
        self.index_.add(g)
        self.recall_ = None
        if self.index != "flat":  # recall against a brute-force search of g (no second copy)
            if self.recall_target is None:
                self.recall_ = recall_at_1(self.index_, g, x)
            else:  # the least search effort that finds the exact neighbour of the training reals
                self.recall_ = self.index_.tune(g, x, self.recall_target)
        self.reference_ = None
        ref_rows = np.flatnonzero(y == 0)
        if self.reference:
            if len(ref_rows) < 2:
                raise ValueError("the reference set needs at least 2 not-used training slices")
            self.reference_ = FlatIndex(g.shape[1], metric=faiss_metric, device="cpu")
            self.reference_.add(x[ref_rows])
        self.train_scores_ = self._score(x, leave_out=ref_rows)
        self.threshold_ = choose_threshold(self.train_scores_, y, self.calibrate)
        return self

    def _score(self, x: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        D, _ = self.index_.search(x, self.neighbours)
        d_gen = self._distance(D).mean(1)
        if self.reference_ is None:
            return -d_gen
        k = min(self.neighbours + 1, self.reference_.ntotal)
        D_ref, I_ref = self.reference_.search(x, k)
        d_ref = self._distance(D_ref)
        use = np.ones_like(d_ref, dtype=bool)
        if leave_out is not None and len(leave_out):
            # A reference slice must not count itself: drop its own entry (position in ref set).
            own = np.full(len(x), -1)
            own[leave_out] = np.arange(len(leave_out))
            use &= np.asarray(I_ref) != own[:, None]
        use &= np.cumsum(use, axis=1) <= self.neighbours
        d_ref = np.where(use, d_ref, 0).sum(1) / np.maximum(use.sum(1), 1)
        return d_ref - d_gen

    def score(self, x: Any) -> np.ndarray:
        """(n,) membership score, higher = more likely used (closer to the generated set)."""
        if not hasattr(self, "index_"):
            raise ValueError("this ProximityMembership is not fitted yet; call fit first")
        return self._score(self._prep(x, "embeddings"))

    def predict(self, x: Any) -> np.ndarray:
        """(n,) 1 where ``score >= threshold_``."""
        return (self.score(x) >= self.threshold_).astype(np.int64)
