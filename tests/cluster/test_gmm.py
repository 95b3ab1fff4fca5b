"""GaussianMixture against scikit-learn: same start, same answers; the four inits; bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ctfp.cluster import GaussianMixture, em
from ctfp.exceptions import DeviceError
from tests.conftest import blobs, cuda


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


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ctfp.cluster.gmm.ConvergenceWarning")
def test_parity_in_2048_dimensions_with_fewer_samples_than_dimensions() -> None:
    # Two components of 300 samples each: every 2048 x 2048 covariance is singular without
    # reg_covar (four would only double the Cholesky factorisations, the test's cost).
    x, truth = blobs(600, 2048, k=2, spread=0.3)
    kw = dict(covariance_type="full", reg_covar=1e-3, max_iter=2, tol=0.0)
    start = shared_start(x, truth, "full", reg=1e-3)
    sk = SkGaussianMixture(2, **kw, **start).fit(x)
    for dtype in (torch.float64, torch.float32):
        ours = GaussianMixture(2, **kw, **start, device="cpu", dtype=dtype).fit(x)
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
    with pytest.raises(NotFittedError):
        GaussianMixture(2).score_samples(x)
    with pytest.raises(TypeError, match="Sparse data"):
        GaussianMixture(2, device="cpu").fit(scipy.sparse.csr_array(x))
    with pytest.raises(ValueError, match="dtype must be"):
        GaussianMixture(2, dtype="float16").fit(x)
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


# Every scikit-learn check applies and passes: none is expected to fail.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [
        GaussianMixture(device="cpu"),
        GaussianMixture(2, covariance_type="diag", dtype="float32", device="cpu"),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_clone_pipeline_and_grid_search() -> None:
    start = np.zeros((2, 3))
    gmm = GaussianMixture(2, dtype=torch.float32, means_init=start, random_state=4, device="cpu")
    copy = clone(gmm)
    assert copy is not gmm and copy.dtype is torch.float32 and copy.random_state == 4
    np.testing.assert_array_equal(copy.means_init, start)
    x = np.random.default_rng(0).permutation(blobs(400, 3, spread=6.0)[0])  # for the folds
    pipe = make_pipeline(StandardScaler(), GaussianMixture(4, random_state=0, device="cpu"))
    assert pipe.fit(x).predict(x).shape == (400,)
    search = GridSearchCV(
        GaussianMixture(random_state=0, device="cpu"), {"n_components": [1, 4]}, cv=2
    ).fit(x)
    assert search.best_params_ == {"n_components": 4}


def test_dtype_strings_and_torch_dtypes_are_the_same_setting() -> None:
    x, _ = blobs(400, 6, spread=3.0)
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        by_name = GaussianMixture(3, dtype=name, random_state=0, device="cpu").fit(x)
        by_dtype = GaussianMixture(3, dtype=dtype, random_state=0, device="cpu").fit(x)
        np.testing.assert_array_equal(by_name.means_, by_dtype.means_)
        assert by_name.predict_proba(x).dtype == np.dtype(name)


def _json_npz_round_trip(params: dict, arrays: dict) -> tuple[dict, dict]:
    """Through the formats a saved model uses: JSON and an .npz without pickles."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as npz:
        return json.loads(json.dumps(params)), {name: npz[name] for name in npz.files}


@pytest.mark.parametrize(
    ("covariance_type", "dtype"),
    [("full", "float64"), ("tied", "float64"), ("diag", "float32"), ("spherical", "float64")],
)
def test_state_round_trip_gives_identical_answers(covariance_type: str, dtype: str) -> None:
    x, _ = blobs(400, 5, spread=2.0)
    gmm = GaussianMixture(
        3, covariance_type=covariance_type, dtype=dtype, random_state=0, device="cpu"
    ).fit(x)
    loaded = GaussianMixture.from_state(*_json_npz_round_trip(*gmm.to_state()), device="cpu")
    for method in ("predict", "predict_proba", "score_samples"):
        np.testing.assert_array_equal(getattr(loaded, method)(x), getattr(gmm, method)(x))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gmm, name))
    assert loaded.get_params() == {**gmm.get_params(), "dtype": dtype}
    assert (loaded.n_iter_, loaded.converged_) == (gmm.n_iter_, gmm.converged_)
    assert loaded.lower_bound_ == gmm.lower_bound_
    assert loaded.bic(x) == gmm.bic(x)


def test_state_keeps_given_starts_and_a_model_from_params() -> None:
    x, truth = blobs(400, 4, spread=3.0)
    start = shared_start(x, truth, "diag")
    gmm = GaussianMixture(4, covariance_type="diag", device="cpu", **start).fit(x)
    params, arrays = _json_npz_round_trip(*gmm.to_state())
    np.testing.assert_array_equal(arrays["means_init"], start["means_init"])
    loaded = GaussianMixture.from_state(params, arrays, device="cpu")
    np.testing.assert_array_equal(loaded.precisions_init, start["precisions_init"])
    np.testing.assert_array_equal(loaded.predict_proba(x), gmm.predict_proba(x))
    # A model built from its parameters (no EM, no lower bound) saves and loads too.
    built = GaussianMixture.from_params(
        gmm.weights_, gmm.means_, gmm.covariances_, covariance_type="diag", device="cpu"
    )
    params, arrays = _json_npz_round_trip(*built.to_state())
    assert params["lower_bound_"] is None
    again = GaussianMixture.from_state(params, arrays, device="cpu")
    np.testing.assert_array_equal(again.score_samples(x), built.score_samples(x))
    np.testing.assert_allclose(again.score_samples(x), gmm.score_samples(x), rtol=1e-12)


def test_float32_m_step_is_redone_in_float64_when_a_covariance_is_not_pd(monkeypatch) -> None:
    """The one M-step's fallback, in memory and streamed: when the covariance from float32
    products is not positive definite, the same E-step's statistics are taken again with
    float64 products (in memory from that E-step's responsibilities, without a second E-step;
    streamed by another pass). A float64 fit has no fallback and reports the error."""
    x, truth = blobs(800, 6, spread=3.0)
    kw = dict(max_iter=3, tol=0.0, device="cpu", **shared_start(x, truth, "full"))
    reference = GaussianMixture(4, dtype="float32", **kw).fit(x)
    real_cholesky = em.precision_cholesky
    real_e_step = em.PartitionStatistics.__call__
    real_precise = em.PartitionStatistics.precise
    factorised: list[bool] = []
    products: list[bool] = []
    redone: list[bool] = []

    def cholesky(cov, covariance_type):  # fails at the first two M-steps of each fit
        factorised.append(True)
        if len(factorised) in (1, 3):
            raise ValueError("ill-defined empirical covariance")
        return real_cholesky(cov, covariance_type)

    def e_step(self, partition):
        products.append(self.float64)
        return real_e_step(self, partition)

    def precise(self, data):
        redone.append(True)
        return real_precise(self, data)

    monkeypatch.setattr(em, "precision_cholesky", cholesky)
    monkeypatch.setattr(em.PartitionStatistics, "__call__", e_step)
    monkeypatch.setattr(em.PartitionStatistics, "precise", precise)
    with pytest.warns(UserWarning, match="did not converge"):
        refit = GaussianMixture(4, dtype="float32", **kw).fit(x)
    assert products == [False, False, False] and len(redone) == 2  # no second E-step
    factorised.clear()
    products.clear()
    redone.clear()
    streamed = GaussianMixture(4, dtype="float32", **kw)
    streamed.fit_stream(lambda: np.array_split(x, 3), x, init_max_iter=0)
    assert products == [False, True, False, True, False] and len(redone) == 2
    for model in (refit, streamed):
        np.testing.assert_allclose(model.means_, reference.means_, rtol=1e-5)
        np.testing.assert_allclose(model.covariances_, reference.covariances_, rtol=1e-5, atol=1e-6)
    factorised.clear()
    with pytest.raises(ValueError, match="ill-defined"):
        GaussianMixture(4, dtype="float64", **kw).fit(x)


def test_cuda_is_refused_not_ignored() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    x, _ = blobs(40, 4)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        GaussianMixture(2, device="cuda").fit(x)
    gmm = GaussianMixture(2, random_state=0, device="cpu").fit(x)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        GaussianMixture.from_state(*gmm.to_state(), device="cuda")


@cuda
@pytest.mark.gpu
def test_kmeans_start_stays_on_cuda_without_a_gpu_kmeans(monkeypatch) -> None:
    import ctfp.cluster.kmeans

    monkeypatch.setattr(ctfp.cluster.kmeans, "gpu_kmeans_available", lambda: False)
    x, truth = blobs(2000, 16, spread=3.0)
    gmm = GaussianMixture(4, covariance_type="diag", random_state=0, device="cuda").fit(x)
    assert gmm.device_.type == "cuda"
    assert adjusted_rand_score(truth, gmm.predict(x)) > 0.95
    loaded = GaussianMixture.from_state(*gmm.to_state(), device="cuda")
    np.testing.assert_array_equal(loaded.predict_proba(x), gmm.predict_proba(x))
