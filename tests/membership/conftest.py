"""Membership data: real slices, some memorised by the "generator" (near-copies)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _memorised(seed: int = 0, n: int = 200, d: int = 32):
    """Used slices have near-copies among the generated ones; not-used slices do not."""
    rng = np.random.default_rng(seed)
    reals = rng.normal(size=(n, d))
    y = (np.arange(n) % 2 == 0).astype(int)
    generated = np.concatenate(
        [reals[y == 1] + rng.normal(0, 0.3, ((y == 1).sum(), d)), rng.normal(size=(50, d))]
    )
    return reals, y, generated


@pytest.fixture
def memorised() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``memorised(seed=0, n=200, d=32)`` -> (reals (n, d), y (n,) 1 = used, generated)."""
    return _memorised
