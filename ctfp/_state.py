"""Saving a fitted estimator without pickles: its settings (``get_params()``) and the fitted
attributes it declares in ``saved_state``, as JSON-ready values (``model.json``) and numpy arrays
(``arrays.npz``, :mod:`ctfp.runs.models`): loading one runs no code from the file.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ctfp._arrays import host

State = tuple[dict[str, Any], dict[str, np.ndarray]]


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: numpy scalars as Python numbers, tuples and arrays as
    lists, a non-finite float as None, a torch dtype by its name (``"float32"``); a seed
    generator (no JSON form) as None."""
    if isinstance(value, bool | str) or value is None:
        return value
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.random.Generator | np.random.RandomState):
        return None
    raise TypeError(f"cannot save {type(value).__name__} {value!r} in a model's JSON")


class SavedState:
    """``to_state()`` and ``from_state()`` from ``get_params()`` and ``saved_state``.

    Parameters go in the JSON part (``array_params`` in the arrays; ``unsaved_params``, such as
    the device, nowhere); a declared attribute goes in the arrays when it has ``to_bytes()`` (a
    FAISS index) or is a numeric array, else in the JSON part. Loading calls ``__init__`` with
    what was saved (defaults for what an older file lacks), sets each attribute (None where
    missing) and calls ``_restore(device)``.
    """

    #: The fitted attributes a saved model holds, each by the name it is saved under (the names
    #: of the files written before 0.4, so that those still load).
    saved_state: ClassVar[Mapping[str, str]] = {}
    #: ``__init__`` parameters a saved model does not hold.
    unsaved_params: ClassVar[tuple[str, ...]] = ("device",)
    #: ``__init__`` parameters saved, when given, as float64 arrays (after the attributes').
    array_params: ClassVar[tuple[str, ...]] = ()

    def to_state(self) -> State:
        """The fitted model: (JSON-ready parameters and fitted values, numpy arrays)."""
        self._check_saveable()
        params = {
            name: jsonable(value)
            for name, value in self.get_params(deep=False).items()  # type: ignore[attr-defined]
            if name not in self.unsaved_params + self.array_params
        }
        arrays: dict[str, np.ndarray] = {}
        for attr, key in self.saved_state.items():
            value = getattr(self, attr, None)
            if value is None:
                continue
            if hasattr(value, "to_bytes") and not isinstance(value, numbers.Number):  # an index
                arrays[key] = value.to_bytes()
            elif (
                isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and attr != "classes_"
            ):
                arrays[key] = value
            else:
                params[key] = jsonable(value)
        for name in self.array_params:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = host(value, np.float64)
        return params, arrays

    @classmethod
    def from_state(
        cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, device: str = "auto"
    ) -> Any:
        """The fitted model :meth:`to_state` described, its indexes and tensors on ``device``."""
        names = [
            n
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind is not p.VAR_KEYWORD
        ]
        init = {n: params[n] for n in names if n in params and n not in cls.unsaved_params}
        init.update((n, arrays[n]) for n in cls.array_params if n in arrays)
        if "device" in names:
            init["device"] = device
        self = cls(**init)
        for attr, key in cls.saved_state.items():
            setattr(self, attr, arrays[key] if key in arrays else params.get(key))
        self._restore(device)
        return self

    def _check_saveable(self) -> None:
        """Refuse to save an unfitted model (scikit-learn's check, or the class's own)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)

    def _restore(self, device: str) -> None:
        """Turn the saved values back into the live attributes and check them (a class whose
        saved values are its attributes as they are needs nothing here)."""


__all__ = ["SavedState", "State", "jsonable"]
