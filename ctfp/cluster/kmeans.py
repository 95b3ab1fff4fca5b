"""K-means with the scikit-learn estimator contract; backends cuML, FAISS, scikit-learn, torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from ctfp._arrays import check_input, check_matrix, device_tensor, is_cupy, is_torch, like, to_numpy
from ctfp._state import SavedState
from ctfp.cluster.partitions import MapFn, Partition, Partitions
from ctfp.device import resolve_device
from ctfp.exceptions import DeviceError

BACKENDS = ("auto", "faiss", "cuml", "sklearn", "torch")
INITS = ("k-means++", "random")

# Rows per distance block when assigning on a GPU: bounds the (rows, k) temporaries.
_ASSIGN_ROWS = 65_536


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


class KMeans(SavedState, ClusterMixin, BaseEstimator):
    """Lloyd's k-means with scikit-learn's parameters (``init``: ``"k-means++"`` or
    ``"random"``; the same ``random_state`` and data give the same clustering on one backend),
    and:

    max_iter
        Iterations per run (FAISS runs exactly this many; cuML and scikit-learn stop at ``tol``,
        their relative tolerance; torch when no assignment changes).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``, resolved once in :meth:`fit`, else
        :class:`~ctfp.exceptions.DeviceError`.
    backend
        ``"auto"`` (cuML on CUDA when installed, else FAISS), ``"faiss"``, ``"cuml"``,
        ``"sklearn"`` (CPU only) or ``"torch"`` (plain torch: CUDA without ``ctfp[gpu]``).

    The fitted attributes are scikit-learn's (``cluster_centers_`` float32, ``labels_`` in the
    array type of the data), ``backend_``, the backend that ran, and ``device_``, where
    :meth:`predict` assigns.
    """

    saved_state: ClassVar[dict[str, str]] = {
        "cluster_centers_": "cluster_centers",
        "inertia_": "inertia_",
        "n_iter_": "n_iter_",
        "n_features_in_": "n_features_in_",
        "backend_": "backend_",
    }

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

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "cluster_centers_")

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
        """Cluster ``X`` : (n, d) array-like, torch tensor or CuPy array (``y`` is ignored)."""
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.n_clusters < 1 or self.n_init < 1 or self.max_iter < 1:
            raise ValueError("n_clusters, n_init and max_iter must be at least 1")
        backend, device = self._resolve_backend()
        x = check_input(self, X, reset=True, dtype=np.float32)
        if backend == "cuml" and (is_cupy(x) or (is_torch(x) and x.is_cuda)):
            # Device arrays go to cuML by DLPack, without a round trip through the host.
            import cupy

            x = cupy.ascontiguousarray(cupy.from_dlpack(x.detach() if is_torch(x) else x))
            x = x.astype(cupy.float32, copy=False)
        elif backend == "torch":
            self.device_ = device
            x = self._device_tensor(x)
        elif not isinstance(x, np.ndarray):
            x = to_numpy(x, np.float32)
        if x.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={x.shape[0]} should be >= n_clusters={self.n_clusters}")
        centers, labels, inertia, n_iter = getattr(self, f"_fit_{backend}")(x, device)
        self.cluster_centers_ = np.ascontiguousarray(_host(centers), dtype=np.float32)
        self.labels_ = like(labels if is_torch(labels) else np.asarray(labels, np.int64), X)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.backend_ = backend
        self.device_ = device
        return self

    def _fit_faiss(self, x: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, float, int]:
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
        return km.centroids, I[:, 0], float(D[:, 0].astype(np.float64).sum()), self.max_iter

    def _fit_cuml(self, x: Any, device: Any) -> tuple[np.ndarray, np.ndarray, float, int]:
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
        n_iter = int(np.max(np.asarray(getattr(km, "n_iter_", self.max_iter))))
        return np.asarray(km.cluster_centers_), np.asarray(km.labels_), float(km.inertia_), n_iter

    def _fit_sklearn(self, x: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, float, int]:
        from sklearn.cluster import KMeans as SkKMeans

        km = SkKMeans(
            n_clusters=self.n_clusters,
            init=self.init,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        ).fit(x)
        return km.cluster_centers_, km.labels_, km.inertia_, km.n_iter_

    def _fit_torch(self, x: Any, device: Any) -> tuple[Any, Any, float, int]:
        """The lowest inertia of ``n_init`` seeded Lloyd runs (the first of equal ones)."""
        rng = np.random.default_rng(self.random_state)
        return min((self._lloyd(x, rng) for _ in range(self.n_init)), key=lambda run: run[2])

    def _lloyd(self, x: Any, rng: np.random.Generator) -> tuple[Any, Any, float, int]:
        """One Lloyd run in torch until no assignment changes: (centres, labels, inertia,
        iterations)."""
        import torch

        if self.init == "k-means++":
            centres = x[kmeans_plusplus(x, self.n_clusters, rng)]
        else:
            chosen = rng.choice(len(x), self.n_clusters, replace=False)
            centres = x[torch.as_tensor(chosen, device=x.device)]
        labels, n_iter = None, 0
        for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - kept after the loop
            assigned, distances = _nearest_centres(x, centres)
            if labels is not None and torch.equal(assigned, labels):
                break
            labels = assigned
            sums = torch.zeros_like(centres).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=self.n_clusters).to(x.dtype)
            filled = counts > 0  # an empty cluster keeps its centre
            centres[filled] = sums[filled] / counts[filled, None]
        return centres, assigned, float(distances.double().sum()), n_iter

    def fit_stream(
        self,
        batches: Partition | Sequence[Partition],
        sample: Any,
        *,
        passes: int = 3,
        progress: bool = False,
        map_fn: MapFn | None = None,
    ) -> KMeans:
        """k-means over data larger than memory: :meth:`fit` on ``sample`` (m, d), then
        ``passes`` exact Lloyd iterations, one pass over the data each (float64 sums).

        ``batches`` and ``map_fn`` are those of :meth:`GaussianMixture.fit_stream
        <ctfp.cluster.gmm.GaussianMixture.fit_stream>`. ``labels_`` is not kept (use
        :meth:`predict` per batch); ``inertia_`` is that of the final centres over all the data;
        ``progress`` shows a bar of passes.
        """
        from ctfp.progress import progress_bar

        data = Partitions.of(batches, map_fn)
        self.fit(sample)
        del self.labels_
        centres = self.cluster_centers_.astype(np.float64)
        with progress_bar(passes + 1, "k-means", "pass", enabled=progress) as bar:
            for done in range(passes + 1):  # the last pass only measures the inertia
                self.cluster_centers_ = centres.astype(np.float32)
                sums, counts, self.inertia_ = data.reduce(self._lloyd_statistics, _add_lloyd)
                bar.update(1)
                bar.set_postfix(inertia=f"{self.inertia_:.6g}")
                if done == passes:
                    break
                filled = counts > 0  # an empty cluster keeps its centre
                centres[filled] = sums[filled] / counts[filled, None]
        self.n_iter_ = passes
        return self

    def predict(self, X: Any) -> Any:
        """(n,) int64 closest centre (L2) of each row of ``X`` (n, d), in X's array type."""
        check_is_fitted(self)
        labels, _ = self._assign(check_input(self, X, reset=False, dtype=np.float32))
        return like(labels, X)

    def _device_tensor(self, x: Any) -> Any:
        import torch

        return device_tensor(x, self.device_, torch.float32)

    def _assign(self, x: Any) -> tuple[Any, Any]:
        """Closest centre and squared distance of each row of the checked ``x``: FAISS on the
        CPU (as in training), torch on CUDA (no GPU build of FAISS needed)."""
        if self.device_.type == "cuda":
            import torch

            centres = torch.as_tensor(self.cluster_centers_, device=self.device_)
            return _nearest_centres(self._device_tensor(x), centres)
        from ctfp.index.flat import FlatIndex

        index = FlatIndex(self.n_features_in_, metric="l2", device="cpu")
        index.add(self.cluster_centers_)
        D, I = index.search_checked(_host_float32(x), 1)  # noqa: E741
        return I[:, 0], D[:, 0]

    def _lloyd_statistics(
        self, partition: Partition
    ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """One partition's Lloyd step under the current centres: (k, d) float64 sums, (k,)
        counts and the inertia, on the host, or None without rows. A bound method pickles with
        the model, so that an engine runs it where the data is."""
        k, d = self.cluster_centers_.shape
        on_gpu = self.device_.type == "cuda"
        if on_gpu:
            import torch

            sums: Any = torch.zeros((k, d), dtype=torch.float64, device=self.device_)
            counts: Any = torch.zeros(k, dtype=torch.float64, device=self.device_)
        else:
            sums, counts = np.zeros((k, d)), np.zeros(k)
        inertia, rows = 0.0, 0
        for batch in partition():
            x = check_input(self, batch, reset=False, dtype=np.float32)
            x = self._device_tensor(x) if on_gpu else _host_float32(x)
            labels, distances = self._assign(x)
            rows += len(x)
            if on_gpu:
                sums.index_add_(0, labels, x.double())
                counts += torch.bincount(labels, minlength=k)
                inertia += float(distances.double().sum())
            else:
                np.add.at(sums, labels, x.astype(np.float64))
                counts += np.bincount(labels, minlength=k)
                inertia += float(distances.astype(np.float64).sum())
        if rows == 0:
            return None
        return _host(sums), _host(counts), inertia  # float64 already

    def _restore(self, device: str) -> None:
        """The saved centres, checked, with :meth:`predict` on ``device`` (``labels_`` is not
        saved)."""
        centres = np.asarray(self.cluster_centers_, dtype=np.float32)
        check_matrix(centres, "cluster_centers")
        expected = (self.n_clusters, int(self.n_features_in_))
        if centres.shape != expected:
            raise ValueError(f"cluster_centers must have shape {expected}, got {centres.shape}")
        self.device_ = resolve_device(device)
        self.cluster_centers_ = np.ascontiguousarray(centres)
        self.inertia_ = float(self.inertia_)
        self.n_iter_ = int(self.n_iter_)
        self.n_features_in_ = expected[1]
        self.backend_ = str(self.backend_)


def _add_lloyd(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    """The Lloyd statistics of two disjoint parts of the data."""
    return tuple(x + y for x, y in zip(a, b, strict=True))


def kmeans_plusplus(x: Any, k: int, rng: np.random.Generator) -> Any:
    """(k,) int64 indices of k-means++ seeds (D^2 sampling, not sklearn's greedy variant) of
    the torch tensor ``x`` (n, d), on its device."""
    import torch

    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    closest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        p = closest.clamp_min(0).cpu().numpy()
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        closest = torch.minimum(closest, ((x - x[nxt]) ** 2).sum(1))
    return torch.as_tensor(chosen, device=x.device)


def _nearest_centres(x: Any, centres: Any) -> tuple[Any, Any]:
    """(n,) int64 closest of ``centres`` (k, d) to each row of ``x`` (n, d) and (n,) squared L2
    distances in x's dtype (torch tensors on one device)."""
    import torch

    c2 = (centres * centres).sum(1)
    labels = torch.empty(len(x), dtype=torch.int64, device=x.device)
    distances = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for i in range(0, len(x), _ASSIGN_ROWS):
        rows = x[i : i + _ASSIGN_ROWS]
        d2 = (rows * rows).sum(1, keepdim=True) - 2 * rows @ centres.T + c2
        distances[i : i + len(rows)], labels[i : i + len(rows)] = d2.min(1)
    # |x|^2 - 2 x.c + |c|^2 can round below zero for a point on its centre.
    return labels, distances.clamp_min(0)


def _host_float32(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    return to_numpy(x, np.float32)


def _host(a: Any) -> np.ndarray:
    return a.cpu().numpy() if is_torch(a) else np.asarray(a)
