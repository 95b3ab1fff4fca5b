"""The one interface every membership (task 1) method implements."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ctfp._arrays import to_numpy
from ctfp.exceptions import InputError
from ctfp.settings import Settings


class MembershipMethod(BaseEstimator):
    """Was this real slice used to train the generator? The contract of a task 1 method.

    A method is a scikit-learn estimator (settings stored unchanged in ``__init__``, validated
    in ``fit``, fitted state ending in ``_``; ``sklearn.clone`` and ``get_params`` work) with:

    - ``fit(train_x, train_y, generated=None)``: labelled training reals (1 = used, 0 = not
      used) and, for methods that need them (``needs_generated``), the generated slices;
      chooses ``threshold_``.
    - ``score_samples(x)``: (n,) float64, higher = more likely used.
    - ``predict(x)``: (n,) int64, 1 where ``score_samples(x) >= threshold_``.
    - ``to_state()`` / ``from_state()``: the fitted model as JSON-ready values and numpy
      arrays, nothing pickled (:mod:`ctfp.runs.models` writes them).

    A new method is one module with a subclass and one line in :mod:`ctfp.membership.registry`;
    its user-facing options are the fields of its ``settings_class`` (the command line offers
    them), passed to ``__init__`` under the same names.
    """

    #: The registry name (``--method``) and the name saved models record as their kind.
    name: ClassVar[str] = ""
    task: ClassVar[str] = "task1"
    #: Whether ``fit`` needs the generated slices.
    needs_generated: ClassVar[bool] = False
    #: The options this method takes from the command line, or None.
    settings_class: ClassVar[type[Settings] | None] = None
    #: Scoring a row costs about as much as reading it (a few centres), so archive scoring gives
    #: the reader a core of its own; heavy methods (large searches) keep every core.
    light_scoring: ClassVar[bool] = False

    # -- the interface ------------------------------------------------------------------------
    def fit(self, train_x: Any, train_y: Any, generated: Any = None) -> MembershipMethod:
        raise NotImplementedError

    def score_samples(self, x: Any, *, check_input: bool = True) -> np.ndarray:
        """(n,) membership score of each row of ``x`` (n, d), higher = more likely used.

        ``check_input=False``: ``x`` is a C-contiguous float32 matrix the caller has checked
        (or whose non-finite scores the caller refuses); methods may skip their own checks.
        """
        raise NotImplementedError

    def predict(self, x: Any) -> np.ndarray:
        """(n,) 1 where the score reaches ``threshold_`` (predicted used), else 0."""
        self._check_fitted()
        return (self.score_samples(x) >= self.threshold_).astype(np.int64)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted model: (JSON-ready parameters and fitted scalars, numpy arrays)."""
        raise NotImplementedError

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, device: str = "auto"
    ) -> MembershipMethod:
        """The fitted model :meth:`to_state` described, with its indexes on ``device``."""
        raise NotImplementedError

    # -- shared plumbing ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _fit_inputs(
        self, train_x: Any, train_y: Any, generated: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validated (x float32 (n, d), y int (n,) of 0/1, generated float32 (m, d) or None)."""
        x = to_numpy(train_x, np.float32, "training embeddings")
        y = np.asarray(train_y)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"train_y must be one 0/1 label per training row: {len(x)} rows, labels of "
                f"shape {y.shape}"
            )
        if not np.isin(y, (0, 1)).all():
            raise ValueError("train_y must hold 1 (used) and 0 (not used) only")
        y = y.astype(np.int64)
        g = None
        if generated is not None and len(generated):
            g = to_numpy(generated, np.float32, "generated embeddings")
            if g.shape[1] != x.shape[1]:
                raise ValueError(
                    f"generated embeddings have {g.shape[1]} dimensions, the training ones "
                    f"{x.shape[1]}"
                )
        if self.needs_generated and g is None:
            raise InputError(f"method {self.name!r} needs generated slices (DATA/generated/)")
        return x, y, g


__all__ = ["MembershipMethod"]
