"""Exact flat FAISS index, CPU or GPU behind one device choice; L1 is the seed paper's metric."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ctfp._arrays import like, to_numpy
from ctfp.device import resolve_device
from ctfp.exceptions import DeviceError

METRICS = ("l1", "l2", "ip")
#: Distance terms (queries x stored rows x dimensions) below which a CPU search runs in one
#: thread: FAISS's spinning OpenMP threads made small searches three times slower.
ONE_THREAD_WORK = 2**25


def faiss_metric(metric: str) -> int:
    """The FAISS metric constant of ``"l1"``, ``"l2"`` or ``"ip"``."""
    import faiss

    codes = {"l1": faiss.METRIC_L1, "l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}
    if metric not in codes:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return codes[metric]


def metric_name(code: int) -> str:
    """The ctfp name of a FAISS metric constant (the inverse of :func:`faiss_metric`)."""
    return next(m for m in METRICS if faiss_metric(m) == code)


def faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def reconstruct(index: Any, ids: np.ndarray, d: int) -> np.ndarray:
    """(n, k, d) float32 vectors of ``ids`` (n, k) stored in a FAISS ``index`` (-1: NaN)."""
    ids = np.asarray(ids, dtype=np.int64)
    flat = ids.reshape(-1)
    found = flat >= 0
    out = np.full((len(flat), d), np.nan, dtype=np.float32)
    if found.any():
        out[found] = index.reconstruct_batch(np.ascontiguousarray(flat[found]))
    return out.reshape(*ids.shape, d)


@contextmanager
def threads_for(work: int) -> Iterator[None]:
    """FAISS's CPU searches in this block in one OpenMP thread when ``work`` (distance terms)
    is under :data:`ONE_THREAD_WORK`, in as many as before otherwise."""
    import faiss

    before = faiss.omp_get_max_threads()
    if work >= ONE_THREAD_WORK or before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class FlatIndex:
    """Brute-force k-NN over added vectors with FAISS ``IndexFlat``.

    Parameters
    ----------
    d
        Dimension of the vectors.
    metric
        ``"l1"`` (Manhattan, ``METRIC_L1``), ``"l2"`` (distances returned squared, as FAISS does)
        or ``"ip"`` (inner product, larger is closer).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``; on CUDA the index is a ``GpuIndexFlat``.
    """

    def __init__(self, d: int, *, metric: str = "l1", device: str = "auto") -> None:
        import faiss

        code = faiss_metric(metric)
        self.d = int(d)
        self.metric = metric
        self.device = resolve_device(device)
        index = faiss.IndexFlat(self.d, code)
        if self.device.type == "cuda":
            if not faiss_has_gpu():
                raise DeviceError(
                    "device cuda was asked for but this FAISS build has no GPU support; "
                    "pip install 'ctfp[gpu]' (faiss-gpu) or use device='cpu'"
                )
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, self.device.index or 0, index)
        self.index = index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, x: Any) -> FlatIndex:
        """Add vectors ``x`` : (n, d)."""
        self.index.add(self._check(x))
        return self

    def search(self, x: Any, k: int = 1) -> tuple[Any, Any]:
        """The ``k`` nearest added vectors of each row of ``x``: (n, k) float32 distances (L1,
        squared L2 or inner products), best first, and (n, k) int64 row numbers in insertion
        order."""
        self._check_k(k)
        D, I = self.search_checked(self._check(x), k)  # noqa: E741 - FAISS's names
        return like(D, x), like(I, x)

    def search_checked(self, x: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for a C-contiguous float32 numpy array already checked by the caller."""
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.ndim != 2 or x.shape[1] != self.d:
            return self.search(x, k)
        self._check_k(k)
        if self.device.type == "cuda":
            return self.index.search(x, k)
        with threads_for(len(x) * self.ntotal * self.d):
            return self.index.search(x, k)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (n, k) as (n, k, d) float32 (-1: a row of NaN)."""
        return reconstruct(self.index, ids, self.d)

    def _check_k(self, k: int) -> None:
        if self.ntotal == 0:
            raise ValueError("the index is empty; add vectors before searching")
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be between 1 and {self.ntotal}, got {k}")

    def to_bytes(self) -> np.ndarray:
        """The index serialised by FAISS (a uint8 array), copied to the host first if on a GPU."""
        import faiss

        index = faiss.index_gpu_to_cpu(self.index) if self.device.type == "cuda" else self.index
        return faiss.serialize_index(index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, *, device: str = "auto") -> FlatIndex:
        """Rebuild an index written by :meth:`to_bytes`, on ``device``."""
        import faiss

        cpu = faiss.deserialize_index(np.asarray(data, dtype=np.uint8))
        self = cls(cpu.d, metric=metric_name(cpu.metric_type), device=device)
        if self.device.type == "cuda":
            self.index.add(cpu.reconstruct_n(0, cpu.ntotal))
        else:
            self.index = cpu
        return self

    def _check(self, x: Any) -> np.ndarray:
        a = to_numpy(x, np.float32)
        if a.shape[1] != self.d:
            raise ValueError(f"vectors have {a.shape[1]} dimensions, the index has {self.d}")
        return a
