"""cluster_slices: PCA, k=auto with BIC and silhouette, semi-supervised start, saved state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ctfp.attribution.clustering import Clustering, cluster_slices
from ctfp.attribution.settings import Task2Settings
from ctfp.settings import SettingsError
from tests.conftest import blobs


def test_pca_then_gmm_recovers_groups() -> None:
    x, truth = blobs(400, 256, spread=1.0)
    result = cluster_slices(x, k=4, pca=8, covariance_type="full", n_init=2, device="cpu")
    assert result.projection.n_components_ == 8
    assert adjusted_rand_score(truth, result.labels) > 0.95
    np.testing.assert_array_equal(result.predict(x), result.labels)


def test_k_auto_reports_bic_and_silhouette() -> None:
    x, _ = blobs(600, 6, spread=6.0)
    result = cluster_slices(
        x, k="auto", k_range=(2, 6), covariance_type="diag", n_init=2, device="cpu"
    )
    assert result.k == 4
    assert set(result.bics) == set(result.silhouettes) == set(range(2, 7))
    assert max(result.silhouettes, key=result.silhouettes.get) == 4


def test_semi_supervised_start_from_group_means() -> None:
    x, truth = blobs(800, 16, spread=1.2)
    names = np.array(["a", "b", "c", "d"])[truth]
    labelled = np.arange(800) % 20 == 0
    result = cluster_slices(
        x, train_x=x[labelled], train_groups=names[labelled], covariance_type="diag", device="cpu"
    )
    assert result.k == 4
    # Components keep the order of the sorted group names: cluster j is group j.
    assert (result.labels == truth).mean() > 0.9


def test_state_round_trip_and_settings() -> None:
    x, _ = blobs(400, 32, spread=2.0)
    result = cluster_slices(x, Task2Settings(k=4, pca=6, device="cpu"))
    params, arrays = result.to_state()
    again = Clustering.from_state(params, arrays, device="cpu")
    np.testing.assert_array_equal(again.predict(x), result.labels)
    np.testing.assert_allclose(again.predict_proba(x), result.predict_proba(x), atol=1e-8)
    with pytest.raises(SettingsError, match="k must be a positive integer or 'auto'"):
        Task2Settings(k="many")
    with pytest.raises(SettingsError, match="k_range"):
        Task2Settings(k_range=(5, 2))
    with pytest.raises(SettingsError, match="unknown covariance type"):
        Task2Settings(covariance_type="banded")
    with pytest.raises(SettingsError, match="reg_covar must be a finite number"):
        Task2Settings(reg_covar=float("nan"))
