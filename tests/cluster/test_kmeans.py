"""KMeans: scikit-learn contract, FAISS and scikit-learn backends agree, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from ctfp.cluster import KMeans
from ctfp.exceptions import DeviceError
from tests.cluster.test_gmm import blobs
from tests.conftest import cuda


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
    with pytest.raises(ValueError, match="2-D"):
        KMeans(2).fit(x[:, 0])
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
