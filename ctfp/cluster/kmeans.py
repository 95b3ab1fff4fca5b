"""K-means with the scikit-learn contract and backends: cuML, FAISS, scikit-learn."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ctfp._arrays import check_matrix, is_cupy, is_torch, like, to_numpy
from ctfp.device import resolve_device
from ctfp.exceptions import DeviceError

BACKENDS = ("auto", "faiss", "cuml", "sklearn")
INITS = ("k-means++", "random")


def _cuml_available() -> bool:
    try:
        import cuml  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_kmeans_available() -> bool:
    """Whether k-means can run on CUDA here: cuML, or a FAISS build with GPU support."""
    from ctfp.index.flat import faiss_has_gpu

    return _cuml_available() or faiss_has_gpu()


class KMeans:
    """Lloyd's k-means.

    Parameters
    ----------
    n_clusters
        Number of clusters.
    init
        ``"k-means++"`` or ``"random"`` (random data points).
    n_init
        Runs with different seeds; the one with the lowest inertia is kept.
    max_iter
        Iterations per run (FAISS runs exactly this many; cuML and scikit-learn stop at ``tol``).
    tol
        Relative tolerance of the cuML and scikit-learn backends.
    random_state
        Seed; the same seed and data give the same clustering on one backend.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``, resolved once in :meth:`fit`.
    backend
        ``"auto"`` (cuML on CUDA when installed, else FAISS), ``"faiss"``, ``"cuml"``,
        ``"sklearn"`` (CPU only).

    Attributes
    ----------
    cluster_centers_ : (n_clusters, d) float32
    labels_ : (n,) int64
    inertia_ : float, sum of squared distances to the closest centre
    backend_ : str, the backend that ran
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str = "k-means++",
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-4,
        random_state: int | None = 0,
        device: str = "auto",
        backend: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.backend = backend

    def _resolve_backend(self) -> tuple[str, Any]:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        device = resolve_device(self.device)
        backend = self.backend
        if backend == "auto":
            backend = "cuml" if device.type == "cuda" and _cuml_available() else "faiss"
        if backend == "cuml" and not _cuml_available():
            raise DeviceError("backend 'cuml' needs cuML: pip install 'ctfp[gpu]'")
        if backend == "cuml" and device.type != "cuda":
            raise DeviceError("backend 'cuml' runs on CUDA only; use device='cuda'")
        if backend == "sklearn" and device.type == "cuda":
            raise DeviceError("backend 'sklearn' runs on the CPU only; use device='cpu'")
        return backend, device

    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Cluster ``X`` : (n, d)."""
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.n_clusters < 1 or self.n_init < 1 or self.max_iter < 1:
            raise ValueError("n_clusters, n_init and max_iter must be at least 1")
        backend, device = self._resolve_backend()
        on_gpu = is_cupy(X) or (is_torch(X) and X.is_cuda)
        if backend == "cuml" and on_gpu:
            # Device arrays go to cuML as they are (DLPack, no copy to the host and back).
            import cupy

            check_matrix(X)
            x = cupy.ascontiguousarray(cupy.from_dlpack(X.detach() if is_torch(X) else X))
            x = x.astype(cupy.float32, copy=False)
        else:
            x = to_numpy(X, np.float32)
        if x.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={x.shape[0]} should be >= n_clusters={self.n_clusters}")
        fit = {"faiss": self._fit_faiss, "cuml": self._fit_cuml, "sklearn": self._fit_sklearn}
        centers, labels, inertia = fit[backend](x, device)
        self.cluster_centers_ = np.ascontiguousarray(centers, dtype=np.float32)
        self.labels_ = like(np.asarray(labels, dtype=np.int64), X)
        self.inertia_ = float(inertia)
        self.n_features_in_ = x.shape[1]
        self.backend_ = backend
        return self

    def _fit_faiss(self, x: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, float]:
        import faiss

        from ctfp.index.flat import faiss_has_gpu

        gpu = device.type == "cuda"
        if gpu and not faiss_has_gpu():
            raise DeviceError("FAISS has no GPU support here: pip install 'ctfp[gpu]'")
        km = faiss.Kmeans(
            x.shape[1],
            self.n_clusters,
            niter=self.max_iter,
            nredo=self.n_init,
            seed=1234 if self.random_state is None else int(self.random_state),
            gpu=gpu,
            # Use every point: FAISS subsamples to 256 per centroid by default.
            max_points_per_centroid=max(1, -(-x.shape[0] // self.n_clusters)),
            min_points_per_centroid=1,
            verbose=False,
        )
        km.cp.init_method = (
            faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
            if self.init == "k-means++"
            else faiss.ClusteringInitMethod_RANDOM
        )
        km.train(x)
        D, I = km.index.search(x, 1)  # noqa: E741
        return km.centroids, I[:, 0], float(D[:, 0].astype(np.float64).sum())

    def _fit_cuml(self, x: Any, device: Any) -> tuple[np.ndarray, np.ndarray, float]:
        from cuml.cluster import KMeans as CumlKMeans

        km = CumlKMeans(
            n_clusters=self.n_clusters,
            init="scalable-k-means++" if self.init == "k-means++" else "random",
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=0 if self.random_state is None else int(self.random_state),
            output_type="numpy",
        )
        km.fit(x)
        return np.asarray(km.cluster_centers_), np.asarray(km.labels_), float(km.inertia_)

    def _fit_sklearn(self, x: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, float]:
        from sklearn.cluster import KMeans as SkKMeans

        km = SkKMeans(
            n_clusters=self.n_clusters,
            init=self.init,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        ).fit(x)
        return km.cluster_centers_, km.labels_, km.inertia_

    def fit_stream(
        self,
        batches: Callable[[], Iterable[Any]],
        sample: Any,
        *,
        passes: int = 3,
        progress: bool = False,
    ) -> KMeans:
        """k-means over data larger than memory: fit on ``sample`` (a subset, any backend),
        then ``passes`` exact Lloyd iterations streamed over ``batches()`` (a fresh iterable of
        (b, d) arrays per call), accumulating per-centre sums and counts in float64.

        ``labels_`` is not kept (it would be as large as the data): use :meth:`predict` per
        batch. ``inertia_`` is that of the final centres over all the data. ``progress`` shows a
        bar of passes with the inertia.
        """
        from ctfp.index.flat import FlatIndex
        from ctfp.progress import progress_bar

        self.fit(sample)
        del self.labels_
        centres = self.cluster_centers_.astype(np.float64)
        k, d = centres.shape
        bar = progress_bar(passes + 1, "k-means", "pass", enabled=progress)
        for _ in range(passes + 1):  # the last pass only measures the inertia
            index = FlatIndex(d, metric="l2", device="cpu").add(centres.astype(np.float32))
            sums = np.zeros((k, d))
            counts = np.zeros(k)
            inertia = 0.0
            for batch in batches():
                x = to_numpy(batch, np.float32)
                D, I = index.search(x, 1)  # noqa: E741
                np.add.at(sums, I[:, 0], x.astype(np.float64))
                counts += np.bincount(I[:, 0], minlength=k)
                inertia += float(D.astype(np.float64).sum())
            if counts.sum() == 0:
                raise ValueError("batches() yielded no data")
            self.inertia_ = inertia
            bar.update(1)
            bar.set_postfix(inertia=f"{inertia:.6g}")
            if _ == passes:
                break
            # An empty cluster keeps its centre rather than collapsing to the origin.
            filled = counts > 0
            centres[filled] = sums[filled] / counts[filled, None]
        bar.close()
        self.cluster_centers_ = np.ascontiguousarray(centres, dtype=np.float32)
        return self

    def predict(self, X: Any) -> Any:
        """Index of the closest centre (L2) of each row of ``X``."""
        if not hasattr(self, "cluster_centers_"):
            raise ValueError("this KMeans is not fitted yet; call fit first")
        from ctfp.index.flat import FlatIndex

        index = FlatIndex(self.n_features_in_, metric="l2", device="cpu")
        index.add(self.cluster_centers_)
        _, I = index.search(to_numpy(X), 1)  # noqa: E741
        return like(I[:, 0], X)

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        return self.fit(X).labels_
