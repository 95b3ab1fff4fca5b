"""Task 1 ensemble: a small logistic model on the centroid and proximity scores.

Experimental. On the quality benchmark (benchmarks/quality.py) it ties the best proximity score and
never beats it, so `ctfp run` does not offer it; it stays for measurement and for data where the
two scores carry different information.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._arrays import to_numpy
from ctfp.tasks.membership import CentroidMembership
from ctfp.tasks.proximity import ProximityMembership, choose_threshold


class EnsembleMembership:
    """Logistic regression on [centroid score, proximity score], fitted on the training reals.

    The centroid model is fitted on the very slices it would score, so its training scores are
    cross-fitted (each fold scored by centres fitted on the other folds); proximity scores of
    training slices are leave-one-out already. The final centroid model uses all training reals.
    """

    def __init__(
        self,
        *,
        k: int = 4,
        folds: int = 5,
        calibrate: str = "balanced",
        random_state: int | None = 0,
        device: str = "auto",
        **proximity: Any,
    ) -> None:
        self.k = k
        self.folds = folds
        self.calibrate = calibrate
        self.random_state = random_state
        self.device = device
        self.proximity = proximity

    def fit(self, generated: Any, train_x: Any, train_y: Any) -> EnsembleMembership:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        x = to_numpy(train_x, np.float32, "training embeddings")
        y = np.asarray(train_y, dtype=int)
        self.proximity_ = ProximityMembership(
            calibrate=self.calibrate, device=self.device, **self.proximity
        ).fit(generated, x, y)
        centroid_scores = np.zeros(len(x))
        splitter = StratifiedKFold(self.folds, shuffle=True, random_state=self.random_state)
        for fit_rows, held_out in splitter.split(x, y):
            xf, yf = x[fit_rows], y[fit_rows]
            model = CentroidMembership(self.k, random_state=self.random_state, device=self.device)
            model.fit(xf[yf == 1], xf[yf == 0])
            centroid_scores[held_out] = model.score(x[held_out])
        self.centroid_ = CentroidMembership(
            self.k, random_state=self.random_state, device=self.device
        ).fit(x[y == 1], x[y == 0])
        features = np.column_stack([centroid_scores, self.proximity_.train_scores_])
        self.mean_, self.std_ = features.mean(0), features.std(0) + 1e-12
        self.model_ = LogisticRegression().fit((features - self.mean_) / self.std_, y)
        self.train_scores_ = self.model_.decision_function((features - self.mean_) / self.std_)
        self.threshold_ = choose_threshold(self.train_scores_, y, self.calibrate)
        return self

    def score(self, x: Any) -> np.ndarray:
        """(n,) logistic decision value, higher = more likely used."""
        if not hasattr(self, "model_"):
            raise ValueError("this EnsembleMembership is not fitted yet; call fit first")
        f = np.column_stack([self.centroid_.score(x), self.proximity_.score(x)])
        return self.model_.decision_function((f - self.mean_) / self.std_)

    def predict(self, x: Any) -> np.ndarray:
        return (self.score(x) >= self.threshold_).astype(np.int64)
