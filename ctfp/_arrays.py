"""Array plumbing at the API boundary: validate once (as scikit-learn does on the host), convert
once, give back what came in."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def to_numpy(x: Any, dtype: Any = np.float32, name: str = "X") -> np.ndarray:
    """``x`` as a C-contiguous 2-D numpy array of ``dtype``; clear errors for bad input."""
    if is_torch(x):
        x = x.detach().cpu().numpy()
    elif is_cupy(x):
        x = x.get()
    a = np.ascontiguousarray(np.asarray(x, dtype=dtype))
    check_matrix(a, name)
    return a


def check_matrix(a: Any, name: str = "X") -> None:
    """Raise ValueError unless ``a`` is a non-empty 2-D array of finite numbers."""
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(a.shape)}")
    if is_torch(a):
        finite = bool(a.isfinite().all())
    else:  # NaN and infinity show in min or max, without a boolean array as large as a
        finite = bool(np.isfinite(np.min(a)) and np.isfinite(np.max(a)))
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")


def host(x: Any, dtype: Any = None) -> np.ndarray:
    """``x`` (array-like, or a torch tensor on any device) as a numpy array of ``dtype``."""
    return np.asarray(x.cpu() if is_torch(x) else x, dtype=dtype)


def like(result: Any, template: Any) -> Any:
    """``result`` (numpy, or a torch tensor) as the array type of ``template``: numpy in, numpy
    out; torch in, torch out on template's device; CuPy in, CuPy out."""
    if is_torch(template):
        import torch

        if not is_torch(result):
            result = torch.from_numpy(np.asarray(result))
        return result.to(template.device)
    if is_cupy(template):
        import cupy

        return cupy.from_dlpack(result) if is_torch(result) else cupy.asarray(result)
    return result.cpu().numpy() if is_torch(result) else result


def check_input(estimator: Any, X: Any, *, reset: bool, dtype: Any) -> Any:
    """``X`` (n_samples, n_features) checked the way scikit-learn checks input, and the
    ``estimator``'s ``n_features_in_`` set (``reset``, in ``fit``) or compared.

    Host data goes through :func:`sklearn.utils.validation.validate_data` (for its messages)
    and comes back as a C-contiguous numpy array of ``dtype`` (one or a list of accepted ones).
    A torch tensor or CuPy array is checked where it is and returned as it is.
    """
    if not (is_torch(X) or is_cupy(X)):
        from sklearn.utils.validation import validate_data

        return validate_data(estimator, X, reset=reset, dtype=dtype, order="C", accept_sparse=False)
    if is_torch(X):
        import torch  # already loaded: X is a tensor

        if X.layout is not torch.strided:
            raise TypeError("sparse torch tensors are not supported; pass a dense tensor")
    if (is_torch(X) and X.is_complex()) or (is_cupy(X) and X.dtype.kind == "c"):
        raise ValueError("Complex data not supported")
    check_matrix(X)
    n_features = int(X.shape[1])
    if reset:
        estimator.n_features_in_ = n_features
        # Refitting on a tensor after a DataFrame: the old column names no longer apply.
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def device_tensor(x: Any, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """A checked ``x`` (numpy, torch or CuPy) as a ``dtype`` tensor on ``device``. A CuPy array
    becomes a CUDA tensor through DLPack, without a copy; a read-only numpy array (a memmap) is
    taken quietly: the cluster estimators only read their input."""
    import torch

    if is_cupy(x):
        x = torch.from_dlpack(x)
    if not is_torch(x):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            x = torch.from_numpy(x)
    return x.detach().to(device, dtype)
