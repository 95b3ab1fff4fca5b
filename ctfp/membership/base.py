"""The one interface every membership (task 1) method implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ctfp._arrays import check_input as check_input_
from ctfp._arrays import to_numpy
from ctfp._state import SavedState
from ctfp.exceptions import InputError
from ctfp.membership.threshold import choose_threshold
from ctfp.settings import Settings


class MembershipMethod(SavedState, ClassifierMixin, BaseEstimator):
    """Was this real slice used to train the generator? The contract of a task 1 method.

    A method is a scikit-learn binary classifier (``clone``, ``get_params`` and ``score``
    work) with:

    - ``fit(X, y, generated=None)``: training reals ``X`` (n, d) with labels ``y`` (n,) (1 =
      used, 0 = not used; with any two labels the larger, ``classes_[1]``, is "used") and,
      where ``needs_generated``, the generated slices; chooses ``threshold_``.
    - ``score_samples(x)``: (n,) float64, higher = more likely used.
    - ``predict(x)``: (n,) ``classes_[1]`` where ``score_samples(x) >= threshold_``.
    - ``to_state()`` / ``from_state()``: JSON-ready values and numpy arrays, nothing pickled
      (:class:`ctfp._state.SavedState`).

    A new method is one module with a subclass and one line in :mod:`ctfp.membership.registry`;
    its command-line options are the fields of its ``settings_class``, passed to ``__init__``
    under the same names. Its parameters are dataclass fields
    (``@dataclass(kw_only=True, eq=False, repr=False)``): the generated ``__init__`` stores each
    as given, as scikit-learn wants, and equality, hashing and repr stay scikit-learn's. Fitted,
    a method holds ``threshold_`` and ``train_scores_`` (the training reals' scores the
    threshold was chosen on).
    """

    #: The registry name (``--method``) and the name saved models record as their kind.
    name: ClassVar[str] = ""
    task: ClassVar[str] = "task1"
    #: Whether the score uses the generated slices (``fit`` needs them).
    needs_generated: ClassVar[bool] = False
    #: Whether ``fit`` needs known members (``y == 1``); the others can fit on known
    #: non-members alone (with an ``fpr:ALPHA`` threshold).
    needs_members: ClassVar[bool] = False
    #: The options this method takes from the command line, or None.
    settings_class: ClassVar[type[Settings] | None] = None
    #: Scoring a row costs about as much as reading it: archive scoring gives the reader a core.
    light_scoring: ClassVar[bool] = False
    #: How simple the method is beside the others (lower first; breaks exact ties).
    rank: ClassVar[float] = 9.0

    @classmethod
    def grid(cls, n_small: int, ks: Sequence[int]) -> list[dict[str, Any]]:
        """The settings ``--method auto`` tries (``__init__`` keywords): ``n_small`` is the
        smaller training class, ``ks`` the k of the methods that take one."""
        return [{}]

    #: What a fitted method saves besides its own state (``train_scores_`` where it has them).
    saved_state: ClassVar[Mapping[str, str]] = {
        "train_scores_": "train_scores",
        "threshold_": "threshold",
        "classes_": "classes",
    }
    #: The threshold criterion on the training reals (:func:`_calibrate`), where a method has one.
    calibrate: str

    # -- the interface ------------------------------------------------------------------------
    @property
    def uses_labels(self) -> bool:
        """Whether ``fit`` learns from the labels ``y`` beyond choosing the threshold (centres
        per class, a reference set); if not, its training scores are already out of sample."""
        return True

    def fit(self, X: Any, y: Any, generated: Any = None) -> MembershipMethod:
        raise NotImplementedError

    def score_samples(self, x: Any, *, check_input: bool = True) -> np.ndarray:
        """(n,) membership score of each row of ``x`` (n, d), higher = more likely used.

        ``check_input=False``: ``x`` is a C-contiguous float32 matrix the caller has checked
        (or whose non-finite scores the caller refuses: such a row may then score NaN).
        """
        self._check_fitted()
        return self._score(self._check_x(x, check_input))

    def _score(self, x: np.ndarray) -> np.ndarray:
        """(n,) scores of rows ``x`` as :meth:`_check_x` returns them."""
        raise NotImplementedError

    def predict(self, x: Any) -> np.ndarray:
        """(n,) ``classes_[1]`` (1: used) where the score reaches ``threshold_``, else
        ``classes_[0]``."""
        self._check_fitted()
        return self.classes_[(self.score_samples(x) >= self.threshold_).astype(np.int64)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # used / not used
        return tags

    # -- shared plumbing ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _fit_inputs(
        self, X: Any, y: Any, generated: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validated (x float32 (n, d), y (n,) 1 = used / 0, generated float32 (m, d) or None);
        checks the options (``settings_class``); sets ``classes_`` and ``n_features_in_``."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        if self.settings_class is not None:  # the options, by the command line's own rules
            fields = self.settings_class.field_names()
            self.settings_class(**{name: getattr(self, name) for name in fields})
        x, y = validate_data(self, X, y, dtype=np.float32, order="C", accept_sparse=False)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) == 1 and classes[0] == 0 and not self.needs_members:
            classes = np.array([0, 1])  # known non-members only: 1 stays "used"
        if len(classes) != 2:
            raise ValueError(
                f"{type(self).__name__} needs used and not-used training slices: y holds "
                f"{len(classes)} class{'es' if len(classes) != 1 else ''} "
                f"({', '.join(map(str, classes[:5]))}). Only binary classification is supported "
                "(1 = used, 0 = not used)."
            )
        self.classes_ = classes
        y = (y == classes[1]).astype(np.int64)
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

    def _check_x(self, x: Any, check_input: bool = True) -> np.ndarray:
        """``x`` for scoring: checked as in ``fit`` (feature count included), or, with
        ``check_input=False`` and a C-contiguous float32 matrix, as it is."""
        fast = isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
        if fast and not check_input and x.flags.c_contiguous:
            return x
        return np.asarray(check_input_(self, x, reset=False, dtype=np.float32))

    def _calibrate(self, scores: np.ndarray, y: np.ndarray) -> Self:
        """Keep the training reals' ``scores`` as ``train_scores_`` and choose ``threshold_`` on
        them with their labels ``y`` by ``calibrate``."""
        self.train_scores_ = scores
        self.threshold_ = choose_threshold(scores, y, self.calibrate)
        return self

    def _check_saveable(self) -> None:
        self._check_fitted()

    def _restore(self, device: str) -> None:
        """What every saved method holds, back to its live form: the threshold, the classes
        (``[0, 1]`` in files that predate them) and the training scores."""
        self.threshold_ = float(self.threshold_ if self.threshold_ is not None else 0.0)
        self.classes_ = np.asarray(self.classes_ if self.classes_ is not None else [0, 1])
        if getattr(self, "train_scores_", None) is not None:
            self.train_scores_ = np.asarray(self.train_scores_, dtype=np.float64)


__all__ = ["MembershipMethod"]
