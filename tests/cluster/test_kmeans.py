"""KMeans: scikit-learn contract, FAISS and scikit-learn backends agree, clear errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ctfp.cluster import KMeans
from ctfp.cluster.kmeans import _nearest_centres
from ctfp.exceptions import DeviceError
from tests.conftest import blobs, cuda


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_backends_find_the_clusters(backend: str) -> None:
    x, truth = blobs(1200, 32, spread=3.0)
    km = KMeans(4, n_init=3, random_state=0, backend=backend, device="cpu").fit(x)
    assert km.backend_ == backend
    assert km.cluster_centers_.shape == (4, 32) and km.labels_.shape == (1200,)
    assert adjusted_rand_score(truth, km.labels_) == 1.0
    np.testing.assert_array_equal(km.predict(x), km.labels_)
    reference = SkKMeans(4, n_init=3, random_state=0).fit(x)
    assert km.inertia_ == pytest.approx(reference.inertia_, rel=1e-4)


def test_torch_backend_finds_the_clusters_on_the_input_device() -> None:
    """Lloyd in plain torch: the mixture's "kmeans" start on CUDA without cuML or faiss-gpu."""
    x, truth = blobs(800, 8, spread=4.0)
    km = KMeans(4, n_init=3, random_state=0, backend="torch", device="cpu")
    labels = km.fit(torch.from_numpy(x)).labels_
    assert km.backend_ == "torch" and km.cluster_centers_.dtype == np.float32
    assert labels.shape == (800,) and labels.dtype == torch.int64
    assert adjusted_rand_score(truth, labels.numpy()) == 1.0
    np.testing.assert_array_equal(km.predict(x), labels.numpy())
    reference = SkKMeans(4, n_init=3, random_state=0).fit(x)
    assert km.inertia_ == pytest.approx(reference.inertia_, rel=1e-4)
    again = KMeans(4, n_init=3, random_state=0, backend="torch", device="cpu").fit(x)
    assert isinstance(again.labels_, np.ndarray)
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    random = KMeans(4, init="random", n_init=3, random_state=0, backend="torch", device="cpu")
    assert adjusted_rand_score(truth, random.fit(x).labels_) == 1.0


def test_same_seed_same_result_and_type_follows_input() -> None:
    x, _ = blobs(600, 8, spread=1.0)
    a = KMeans(5, random_state=3).fit(x)
    b = KMeans(5, random_state=3).fit(x)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.backend_ == "faiss"
    labels = KMeans(5, random_state=3).fit(torch.from_numpy(x)).labels_
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), a.labels_)


def test_errors() -> None:
    x, _ = blobs(40, 4)
    with pytest.raises(ValueError, match="n_samples=40 should be >= n_clusters=50"):
        KMeans(50).fit(x)
    with pytest.raises(ValueError, match="unknown backend"):
        KMeans(2, backend="magic").fit(x)
    with pytest.raises(ValueError, match="not fitted"):
        KMeans(2).predict(x)
    with pytest.raises(ValueError, match="2D array"):
        KMeans(2).fit(x[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        KMeans(2).fit(torch.from_numpy(x[:, 0]))
    with pytest.raises(TypeError, match="Sparse data"):
        KMeans(2, device="cpu").fit(scipy.sparse.csr_array(x))
    with pytest.raises(NotFittedError):
        KMeans(2).predict(x)
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 4"):
        KMeans(2, device="cpu").fit(x).predict(x[:, :3])
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            KMeans(2, device="cuda").fit(x)
        with pytest.raises(DeviceError, match="cuML"):
            KMeans(2, backend="cuml").fit(x)


@cuda
@pytest.mark.gpu
def test_gpu_backends_match_cpu() -> None:
    from ctfp.cluster.kmeans import gpu_kmeans_available

    if not gpu_kmeans_available():
        pytest.skip("no GPU k-means here: neither cuML nor faiss-gpu (pip install 'ctfp[gpu]')")
    x, _ = blobs(20000, 64, spread=2.0)
    cpu = KMeans(4, n_init=3, random_state=0, device="cpu").fit(x)
    gpu = KMeans(4, n_init=3, random_state=0, device="cuda").fit(x)
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.99
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-3)


def test_streaming_lloyd_passes_reach_the_in_memory_optimum() -> None:
    x, truth = blobs(6000, 16, spread=2.0)
    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), 400, replace=False)]
    km = KMeans(4, n_init=3, random_state=0, device="cpu")
    km.fit_stream(lambda: np.array_split(x, 9), sample, passes=5)
    assert not hasattr(km, "labels_")
    reference = SkKMeans(4, n_init=3, random_state=0).fit(x)
    assert km.inertia_ == pytest.approx(reference.inertia_, rel=1e-4)
    assert adjusted_rand_score(reference.labels_, km.predict(x)) > 0.999
    assert adjusted_rand_score(truth, km.predict(x)) > 0.98


@cuda
@pytest.mark.gpu
def test_cuml_takes_device_arrays() -> None:
    pytest.importorskip("cuml")
    cupy = pytest.importorskip("cupy")
    x, truth = blobs(2000, 32, spread=3.0)
    for arr in (cupy.asarray(x), torch.as_tensor(x, device="cuda")):
        km = KMeans(4, n_init=3, random_state=0, backend="cuml", device="cuda").fit(arr)
        assert adjusted_rand_score(truth, np.asarray(km.labels_.tolist())) > 0.99


# Every scikit-learn check applies and passes: none is expected to fail.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [KMeans(device="cpu")], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_clone_pipeline_and_grid_search() -> None:
    km = KMeans(3, n_init=2, random_state=5, device="cpu", backend="sklearn")
    copy = clone(km)
    assert copy is not km and copy.get_params() == km.get_params()
    assert not hasattr(copy, "cluster_centers_")
    x, truth = blobs(400, 4, spread=8.0)
    pipe = make_pipeline(StandardScaler(), KMeans(4, device="cpu")).fit(x)
    assert adjusted_rand_score(truth, pipe.predict(x)) > 0.95
    assert pipe.set_params(kmeans__n_clusters=2).get_params()["kmeans__n_clusters"] == 2
    search = GridSearchCV(
        KMeans(device="cpu"), {"n_clusters": [2, 4]}, cv=2, scoring=lambda e, X, y=None: 0.0
    ).fit(x)
    assert search.best_estimator_.n_features_in_ == 4


def test_state_round_trip_gives_the_same_labels() -> None:
    x, _ = blobs(600, 8, spread=2.0)
    km = KMeans(4, n_init=2, random_state=1, device="cpu").fit(x)
    params, arrays = km.to_state()
    # Through the formats a saved model uses: JSON and an .npz without pickles.
    params = json.loads(json.dumps(params))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    loaded = KMeans.from_state(params, arrays, device="cpu")
    np.testing.assert_array_equal(loaded.predict(x), km.predict(x))
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    assert loaded.get_params() == km.get_params()
    assert (loaded.inertia_, loaded.n_iter_, loaded.backend_) == (km.inertia_, 100, "faiss")
    with pytest.raises(ValueError, match="cluster_centers must have shape"):
        KMeans.from_state(params, {"cluster_centers": arrays["cluster_centers"][:2]})


def test_torch_assignment_matches_faiss() -> None:
    """The assignment predict and fit_stream use on CUDA, checked on the CPU against FAISS."""
    x, _ = blobs(3000, 16, spread=1.0)
    km = KMeans(6, random_state=0, device="cpu").fit(x)
    labels, distances = _nearest_centres(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(km.cluster_centers_)
    )
    assert labels.dtype == torch.int64 and distances.min() >= 0
    np.testing.assert_array_equal(labels.numpy(), km.labels_)
    inertia = float(distances.double().sum())
    assert inertia == pytest.approx(km.inertia_, rel=1e-5)


@cuda
@pytest.mark.gpu
def test_predict_and_streaming_run_on_cuda() -> None:
    x, truth = blobs(4000, 16, spread=3.0)
    km = KMeans(4, n_init=3, random_state=0, device="cpu").fit(x)
    state = km.to_state()
    gpu = KMeans.from_state(*state, device="cuda")
    xt = torch.as_tensor(x, device="cuda")
    labels = gpu.predict(xt)
    assert labels.is_cuda
    assert adjusted_rand_score(km.predict(x), labels.cpu().numpy()) > 0.999
    streamed = KMeans(4, n_init=3, random_state=0, device="cuda")
    try:
        streamed.fit_stream(lambda: np.array_split(x, 5), x[:500], passes=3)
    except DeviceError:
        pytest.skip("no GPU k-means here for the sample fit (pip install 'ctfp[gpu]')")
    assert streamed.device_.type == "cuda"
    assert adjusted_rand_score(truth, streamed.predict(x)) > 0.98


def test_cuda_is_refused_not_ignored() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    x, _ = blobs(40, 4)
    km = KMeans(2, device="cpu").fit(x)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        KMeans.from_state(*km.to_state(), device="cuda")
    with pytest.raises(DeviceError):
        KMeans(2, device="cuda", backend="sklearn").fit(x)
