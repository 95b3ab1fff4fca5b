"""Array plumbing at the API boundary: validate once, convert once, give back what came in."""

from __future__ import annotations

from typing import Any

import numpy as np


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
    else:
        # NaN propagates through min and max and an infinity becomes one of them: two
        # allocation-free reductions instead of a boolean array as large as the data.
        finite = bool(np.isfinite(np.min(a)) and np.isfinite(np.max(a)))
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")


def like(result: np.ndarray, template: Any) -> Any:
    """``result`` as the array type of ``template`` (numpy in, numpy out; torch in, torch out)."""
    if is_torch(template):
        import torch

        return torch.from_numpy(np.asarray(result)).to(template.device)
    if is_cupy(template):
        import cupy

        return cupy.asarray(result)
    return result
