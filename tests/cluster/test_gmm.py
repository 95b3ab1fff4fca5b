"""GaussianMixture against scikit-learn: same start, same answers; the four inits; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from ctfp.cluster import GaussianMixture
from tests.conftest import cuda


def blobs(n: int, d: int, k: int = 4, seed: int = 0, spread: float = 2.0) -> tuple:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d))
    scales = 1.0 + 0.3 * np.arange(k)
    x = np.concatenate(
        [rng.normal(c, s, (n // k, d)) for c, s in zip(centers, scales, strict=True)]
    )
    return x + 5.0, np.repeat(np.arange(k), n // k)


def shared_start(x: np.ndarray, labels: np.ndarray, covariance_type: str, reg: float = 1e-6):
    """weights, means, precisions from a hard labelling, computed with sklearn's own helpers."""
    from sklearn.mixture._gaussian_mixture import (
        _compute_precision_cholesky,
        _estimate_gaussian_parameters,
    )

    k = labels.max() + 1
    nk, means, cov = _estimate_gaussian_parameters(x, np.eye(k)[labels], reg, covariance_type)
    pc = _compute_precision_cholesky(cov, covariance_type)
    if covariance_type == "full":
        precisions = pc @ pc.transpose(0, 2, 1)
    elif covariance_type == "tied":
        precisions = pc @ pc.T
    else:
        precisions = pc**2
    return {"weights_init": nk / len(x), "means_init": means, "precisions_init": precisions}


@pytest.mark.parametrize(
    ("covariance_type", "n", "d"),
    [("full", 1200, 48), ("diag", 4000, 64), ("tied", 1200, 32), ("spherical", 1200, 32)],
)
def test_parity_with_sklearn_from_the_same_start(covariance_type: str, n: int, d: int) -> None:
    x, truth = blobs(n, d, spread=0.6)  # overlapping: EM has real work to do
    start_labels = (truth + (np.arange(n) % 7 == 0)) % 4  # a perturbed start
    start = shared_start(x, start_labels, covariance_type)
    kw = dict(covariance_type=covariance_type, max_iter=200, tol=1e-6, **start)
    sk = SkGaussianMixture(4, **kw).fit(x)
    ours = GaussianMixture(4, **kw, device="cpu").fit(x)
    assert sk.n_iter_ > 2
    assert adjusted_rand_score(sk.predict(x), ours.predict(x)) >= 0.99
    assert abs(ours.score(x) - sk.score(x)) <= 1e-3 * abs(sk.score(x))
    assert ours.converged_ == sk.converged_
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=1e-5)
    np.testing.assert_allclose(ours.precisions_, sk.precisions_, rtol=1e-4, atol=1e-6)
    assert ours.bic(x) == pytest.approx(sk.bic(x), rel=1e-6)
    assert ours.aic(x) == pytest.approx(sk.aic(x), rel=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-6)


@pytest.mark.filterwarnings("ignore::ctfp.cluster.gmm.ConvergenceWarning")
def test_parity_in_2048_dimensions_with_fewer_samples_than_dimensions() -> None:
    x, truth = blobs(600, 2048, spread=0.3)
    kw = dict(covariance_type="full", reg_covar=1e-3, max_iter=2, tol=0.0)
    start = shared_start(x, truth, "full", reg=1e-3)
    sk = SkGaussianMixture(4, **kw, **start).fit(x)
    for dtype in (torch.float64, torch.float32):
        ours = GaussianMixture(4, **kw, **start, device="cpu", dtype=dtype).fit(x)
        assert adjusted_rand_score(sk.predict(x), ours.predict(x)) >= 0.99
        assert abs(ours.score(x) - sk.score(x)) <= 1e-3 * abs(sk.score(x))


@pytest.mark.filterwarnings("ignore::ctfp.cluster.gmm.ConvergenceWarning")
def test_diag_parity_float32_in_2048_dimensions() -> None:
    x, _ = blobs(2000, 2048, spread=0.05)
    start = shared_start(x, np.arange(2000) % 4, "diag")
    kw = dict(covariance_type="diag", max_iter=20, tol=0.0, **start)
    sk = SkGaussianMixture(4, **kw).fit(x)
    ours = GaussianMixture(4, **kw, device="cpu", dtype=torch.float32).fit(x)
    assert adjusted_rand_score(sk.predict(x), ours.predict(x)) >= 0.99
    assert abs(ours.score(x) - sk.score(x)) <= 1e-3 * abs(sk.score(x))


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_the_four_inits_recover_separated_clusters(init: str) -> None:
    x, truth = blobs(800, 16, spread=4.0)
    gmm = GaussianMixture(4, covariance_type="diag", init_params=init, n_init=3, random_state=0)
    labels = gmm.fit_predict(x)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert gmm.converged_ and gmm.means_.shape == (4, 16) and gmm.weights_.sum() == pytest.approx(1)
    again = GaussianMixture(4, covariance_type="diag", init_params=init, n_init=3, random_state=0)
    np.testing.assert_array_equal(again.fit_predict(x), labels)


def test_fit_predict_equals_predict_and_types_follow_input() -> None:
    x, _ = blobs(400, 8, spread=3.0)
    gmm = GaussianMixture(4, random_state=1)
    labels = gmm.fit_predict(x)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, gmm.predict(x))
    t = gmm.predict(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), labels)
    assert gmm.predict_proba(x).shape == (400, 4)


def test_bic_prefers_the_true_number_of_components() -> None:
    x, _ = blobs(800, 4, spread=6.0)
    bics = {k: GaussianMixture(k, random_state=0, n_init=2).fit(x).bic(x) for k in (2, 3, 4, 5, 6)}
    assert min(bics, key=bics.get) == 4


def test_errors() -> None:
    x, _ = blobs(40, 4)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="banana").fit(x)
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(2, init_params="magic").fit(x)
    with pytest.raises(ValueError, match="not fitted"):
        GaussianMixture(2).predict(x)
    with pytest.raises(ValueError, match="n_samples=3"):
        GaussianMixture(4).fit(x[:3])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match="features"):
        GaussianMixture(2, random_state=0).fit(x).predict(x[:, :3])
    with pytest.raises(ValueError, match="means_init must have shape"):
        GaussianMixture(2, means_init=np.zeros((3, 4))).fit(x)
    # A collapsed component with no regularisation is reported, not returned as NaNs.
    dup = np.repeat(x[:2], 20, axis=0)
    with pytest.raises(ValueError, match="reg_covar"):
        GaussianMixture(2, reg_covar=0.0, init_params="random_from_data", random_state=0).fit(dup)


@cuda
@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x, truth = blobs(4000, 64, spread=0.8)
    start = shared_start(x, truth, "full")
    cpu = GaussianMixture(4, device="cpu", **start).fit(x)
    gpu = GaussianMixture(4, device="cuda", **start).fit(x)
    assert adjusted_rand_score(cpu.predict(x), gpu.predict(x)) >= 0.99
    assert gpu.score(x) == pytest.approx(cpu.score(x), rel=1e-6)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_streaming_em_matches_in_memory_em(covariance_type: str) -> None:
    x, truth = blobs(2000, 16, spread=0.8)
    start = shared_start(x, (truth + (np.arange(2000) % 5 == 0)) % 4, covariance_type)
    kw = dict(covariance_type=covariance_type, max_iter=15, tol=0.0, device="cpu", **start)
    with pytest.warns(UserWarning):
        memory = GaussianMixture(4, **kw).fit(x)
    streamed = GaussianMixture(4, **kw).fit_stream(
        lambda: (x[i : i + 300] for i in range(0, len(x), 300)), x[:500], init_max_iter=0
    )
    assert streamed.n_iter_ == 15
    np.testing.assert_allclose(streamed.means_, memory.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(streamed.covariances_, memory.covariances_, rtol=1e-6, atol=1e-8)
    assert streamed.score(x) == pytest.approx(memory.score(x), rel=1e-9)
    np.testing.assert_array_equal(streamed.predict(x), memory.predict(x))


def test_streaming_em_from_a_sample_start_converges() -> None:
    x, truth = blobs(3000, 8, spread=3.0)
    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), 300, replace=False)]
    gmm = GaussianMixture(4, covariance_type="diag", random_state=0, n_init=2, device="cpu")
    gmm.fit_stream(lambda: np.array_split(x, 7), sample)
    assert gmm.converged_ and adjusted_rand_score(truth, gmm.predict(x)) > 0.95


@cuda
@pytest.mark.gpu
def test_device_arrays_stay_on_the_device() -> None:
    """torch CUDA tensors and CuPy arrays go in without a host copy; results come back alike."""
    x, truth = blobs(2000, 16, spread=0.8)
    start = shared_start(x, truth, "diag")
    cpu = GaussianMixture(4, covariance_type="diag", device="cpu", **start).fit(x)
    xt = torch.as_tensor(x, device="cuda")
    gpu = GaussianMixture(4, covariance_type="diag", device="cuda", **start)
    labels = gpu.fit_predict(xt)
    assert torch.is_tensor(labels) and labels.is_cuda
    assert adjusted_rand_score(cpu.predict(x), labels.cpu().numpy()) >= 0.99
    cupy = pytest.importorskip("cupy")
    got = gpu.predict(cupy.asarray(x))
    assert type(got).__module__.startswith("cupy")
    np.testing.assert_array_equal(cupy.asnumpy(got), cpu.predict(x))


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_float32_em_survives_a_feature_constant_within_a_component(covariance_type: str) -> None:
    """A ReLU feature that is 0 in one component and ~400 in the others: its within-component
    variance is 0, and E[x^2] - E[x]^2 in float32 products rounded it below -reg_covar: the diag
    fit failed with 'ill-defined empirical covariance' on each of 10 seeds before variances
    were clamped at 0 (spherical averages it away, and is checked too)."""
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 3, 3000)
    x = rng.normal(0, 1, (3000, 8)) + blob[:, None] * 6
    relu = np.where(blob[:, None] == 0, 0.0, 400 + rng.normal(0, 5, (3000, 4)))
    x = np.concatenate([x, relu], 1).astype(np.float32)
    kwargs = dict(covariance_type=covariance_type, dtype=torch.float32, random_state=0)
    memory = GaussianMixture(3, device="cpu", **kwargs).fit(x)
    streamed = GaussianMixture(3, max_iter=10, device="cpu", **kwargs)
    streamed.fit_stream(lambda: np.array_split(x, 7), x[:500])
    for model in (memory, streamed):
        assert adjusted_rand_score(blob, model.predict(x)) > 0.99
        assert model.covariances_.min() >= model.reg_covar
