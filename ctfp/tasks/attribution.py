"""Task 2: cluster synthetic slices by the model that made them with a Gaussian mixture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctfp.cluster.gmm import GaussianMixture


def select_components(
    x: Any, k_range: Sequence[int], **gmm_kwargs: Any
) -> tuple[int, dict[int, float]]:
    """Fit one mixture per k in ``k_range`` and return the k with the lowest BIC, and all BICs."""
    ks = [k for k in k_range if k <= len(x)]
    if not ks:
        raise ValueError(f"no k in {list(k_range)} fits {len(x)} samples")
    bics = {k: GaussianMixture(k, **gmm_kwargs).fit(x).bic(x) for k in ks}
    return min(bics, key=bics.__getitem__), bics
