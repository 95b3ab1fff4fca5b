"""Approximate FAISS indexes (IVF, HNSW) for millions of vectors; recall measured vs exact."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._arrays import to_numpy
from ctfp.exceptions import DeviceError
from ctfp.index import KINDS
from ctfp.index.flat import FlatIndex, faiss_metric, metric_name, reconstruct
from ctfp.progress import logger


class ApproximateIndex:
    """IVF-Flat or HNSW-Flat over ``d``-dim vectors; ``search`` has FlatIndex's contract.

    IVF keeps ``nlist`` cells (default ~4 sqrt(n)) and visits ``nprobe``; HNSW links each node
    to ``m`` others and searches with ``ef_search``. :func:`recall_at_1` measures the recall.
    """

    def __init__(
        self,
        d: int,
        *,
        kind: str = "ivf",
        metric: str = "l2",
        nlist: int | None = None,
        nprobe: int = 16,
        m: int = 32,
        ef_search: int = 128,
    ) -> None:
        if kind not in ("ivf", "hnsw"):
            raise ValueError(f"unknown approximate index {kind!r}; choose ivf or hnsw")
        faiss_metric(metric)  # ValueError for an unknown one
        self.d, self.kind, self.metric = d, kind, metric
        self.nlist, self.nprobe, self.m, self.ef_search = nlist, nprobe, m, ef_search
        self.index: Any = None

    def add(self, x: Any) -> ApproximateIndex:
        import faiss

        a = to_numpy(x, np.float32)
        if self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.d, self.m, faiss_metric(self.metric))
            self.index.hnsw.efSearch = self.ef_search
        else:
            nlist = self.nlist or max(1, min(len(a) // 39, int(4 * np.sqrt(len(a)))))
            quantizer = faiss.IndexFlat(self.d, faiss_metric(self.metric))
            self.index = faiss.IndexIVFFlat(quantizer, self.d, nlist, faiss_metric(self.metric))
            self.index.train(a)
            self.index.nprobe = min(self.nprobe, nlist)
            self._quantizer = quantizer  # FAISS does not own it; keep it alive
        self.index.add(a)
        return self

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def _built(self) -> Any:
        """The FAISS index, or ValueError before :meth:`add`."""
        if self.index is None:
            raise ValueError("the index is empty; add vectors first")
        return self.index

    @property
    def effort(self) -> int:
        """How much of the index a search visits: IVF ``nprobe``, HNSW ``efSearch``."""
        index = self._built()
        return int(index.hnsw.efSearch if self.kind == "hnsw" else index.nprobe)

    @effort.setter
    def effort(self, value: int) -> None:
        index = self._built()
        if self.kind == "hnsw":
            self.ef_search = index.hnsw.efSearch = int(value)
        else:
            self.nprobe = index.nprobe = int(min(value, index.nlist))

    def tune(self, exact: FlatIndex | Any, queries: Any, target: float = 0.99) -> float:
        """Set the smallest search effort (powers of 2: IVF nprobe from 1, HNSW efSearch from
        16) whose recall@1 on ``queries`` reaches ``target``; returns that recall. ``exact``: an
        exact index or the (m, d) array of the indexed vectors."""
        limit = int(self.index.nlist) if self.kind == "ivf" else 4096
        effort = 1 if self.kind == "ivf" else 16
        truth = exact_nearest(exact, queries, self.metric)
        while True:
            self.effort = effort
            _, found = self.search(queries, 1)
            recall = float(np.mean(np.asarray(found)[:, 0] == truth))
            if recall >= target or effort >= limit:
                return recall
            effort *= 2

    def search(self, x: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        return self._built().search(to_numpy(x, np.float32), k)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (n, k) as (n, k, d) float32 (-1: a row of NaN)."""
        index = self._built()
        if self.kind == "ivf" and not index.direct_map.type:
            index.make_direct_map()  # id -> (list, offset), so stored rows can be read back
        return reconstruct(index, ids, self.d)

    def to_bytes(self) -> np.ndarray:
        """The index serialised by FAISS (a uint8 array)."""
        import faiss

        return faiss.serialize_index(self._built())

    @classmethod
    def from_bytes(cls, data: np.ndarray, *, device: str = "cpu") -> ApproximateIndex:
        """Rebuild an index written by :meth:`to_bytes` (on the CPU: ``device="cuda"`` is
        refused)."""
        import faiss

        index = faiss.deserialize_index(np.asarray(data, dtype=np.uint8))
        hnsw = isinstance(index, faiss.IndexHNSW)
        approximate_device("hnsw" if hnsw else "ivf", device)
        self = cls(index.d, kind="hnsw" if hnsw else "ivf", metric=metric_name(index.metric_type))
        if hnsw:
            self.ef_search = int(index.hnsw.efSearch)
        else:  # deserialize_index already returns the concrete (owning) IndexIVFFlat
            self.nlist, self.nprobe = int(index.nlist), int(index.nprobe)
        self.index = index
        return self


def approximate_device(kind: str, device: str) -> None:
    """Refuse ``cuda`` for an approximate index (they run on the CPU); ``auto`` means the CPU,
    logged when a GPU was there."""
    name = str(device).split(":")[0]
    if name == "cuda":
        raise DeviceError(
            f"the {kind} index runs on the CPU only; use device='cpu' (or auto), or the exact "
            "flat index on the GPU (index='flat')"
        )
    if name == "auto":
        from ctfp.device import resolve_device

        if resolve_device("auto").type == "cuda":
            logger.info(f"the {kind} index runs on the CPU (approximate indexes have no GPU path)")


def make_index(d: int, *, kind: str = "flat", metric: str = "l2", device: str = "auto") -> Any:
    """An exact FlatIndex (``kind="flat"``, on ``device``) or an ApproximateIndex (``"ivf"``,
    ``"hnsw"``: CPU only, ``device="cuda"`` is refused)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "flat":
        return FlatIndex(d, metric=metric, device=device)
    approximate_device(kind, device)
    return ApproximateIndex(d, kind=kind, metric=metric)


def exact_nearest(exact: FlatIndex | Any, queries: Any, metric: str) -> np.ndarray:
    """(n,) id of each query's exact nearest neighbour in ``exact``: an index, or the (m, d)
    array of indexed vectors searched by brute force (no second copy of them)."""
    if isinstance(exact, FlatIndex):
        _, ids = exact.search(queries, 1)
        return np.asarray(ids)[:, 0]
    import faiss

    _, ids = faiss.knn(
        to_numpy(queries, np.float32), to_numpy(exact, np.float32), 1, metric=faiss_metric(metric)
    )
    return ids[:, 0]


def recall_at_1(index: Any, exact: FlatIndex | Any, queries: Any) -> float:
    """Fraction of ``queries`` whose nearest neighbour in ``index`` is the exact one
    (``exact``: an exact index or the array of the indexed vectors)."""
    _, i_approx = index.search(queries, 1)
    truth = exact_nearest(exact, queries, index.metric)
    return float(np.mean(np.asarray(i_approx)[:, 0] == truth))
