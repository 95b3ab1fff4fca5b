"""What every distance-based membership method shares: its indexes of the generated slices and
of the known non-members, and the distances from real slices to their nearest rows,
leave-one-out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ctfp.index import distance
from ctfp.index.ann import ApproximateIndex, make_index
from ctfp.index.flat import FlatIndex
from ctfp.membership.base import MembershipMethod

#: Queries are searched in chunks of at most _CHUNK_ROWS rows whose (rows, k, d) neighbour
#: vectors hold at most _CHUNK_NUMBERS numbers (256 MB of float32), for deep, wide searches.
_CHUNK_NUMBERS = 1 << 26
_CHUNK_ROWS = 4096


def neighbour_distances(
    index: Any,
    x: np.ndarray,
    k: int,
    metric: str,
    *,
    leave_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances from queries ``x`` (n, d), :func:`~ctfp.index.distance.prepare`-d for
    ``metric``, to their ``k`` nearest rows of ``index`` (flat or approximate), best first,
    and which of them count.

    ``leave_out`` (ntotal,): row ``j`` of the index is query ``leave_out[j]`` itself and does
    not count as its neighbour. Whenever it is given, even empty, the search goes one row
    deeper, so every query sees the same ``k`` nearest rows in any such call.

    Returns ``D`` (n, w) float64 distances, ``w = min(k, ntotal)`` (``min(k + 1, ntotal)`` with
    ``leave_out``), and ``valid`` (n, w): at most the first ``k`` per query that are neither
    the query itself nor missing (an approximate index may find fewer rows).
    """
    depth = min(k + (leave_out is not None), index.ntotal)
    rows = _CHUNK_ROWS
    if rows * depth * x.shape[1] > _CHUNK_NUMBERS:
        rows = max(1, _CHUNK_NUMBERS // (depth * x.shape[1]))
    found = [
        distance.search(index, x[lo : lo + rows], depth, metric)
        for lo in range(0, max(len(x), 1), rows)
    ]
    D, I = map(np.concatenate, zip(*found, strict=True))  # noqa: E741
    valid = I >= 0
    if leave_out is not None and len(leave_out):
        own = np.full(len(x), -1, dtype=np.int64)
        own[np.asarray(leave_out)] = np.arange(len(leave_out))
        valid &= own[:, None] != I
    valid &= np.cumsum(valid, axis=1) <= k
    return D, valid


class NeighbourMethod(MembershipMethod):
    """A method that scores by distances to an index of the generated slices (``index_``, of
    kind ``index``) and maybe to a flat index of the known non-members (``reference_``), by
    its ``metric`` on its ``device``; every row is prepared for ``metric``."""

    needs_generated = True
    saved_state: ClassVar[Mapping[str, str]] = {
        "index_": "generated_index",
        "reference_": "reference_index",  # None where a method has no reference set
        **MembershipMethod.saved_state,
    }
    #: The kind of ``index_`` (:func:`~ctfp.index.ann.make_index`; proximity's option).
    index: str = "flat"
    metric: str
    device: str

    def _index_generated(
        self, x: np.ndarray, g: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, g) prepared for ``metric``, with ``index_`` holding ``g``."""
        assert g is not None  # needs_generated: _fit_inputs refuses a fit without
        g, x = distance.prepare(g, self.metric), distance.prepare(x, self.metric)
        searched = distance.search_metric(self.metric)
        self.index_ = make_index(g.shape[1], kind=self.index, metric=searched, device=self.device)
        self.index_.add(g)
        return x, g

    def _index_reference(self, rows: np.ndarray) -> FlatIndex:
        """A flat index of (prepared) ``rows``, beside ``index_``."""
        searched = distance.search_metric(self.metric)
        return FlatIndex(rows.shape[1], metric=searched, device=self._flat_device()).add(rows)

    def _flat_device(self) -> str:
        """The reference index's device: the generated index's (a flat index honours cuda)."""
        return self.device if self.index == "flat" else "cpu"

    # A score is a term of the generated slices minus, with a reference set, a term of that
    # set: cross-validation computes the generated term once and a reference term per fold.
    def _generated_term(self, x: np.ndarray) -> np.ndarray:
        """(n,) what the generated slices say of prepared rows ``x`` (higher: more used)."""
        raise NotImplementedError

    def _reference_term(self, reference: Any, x: np.ndarray, leave_out: np.ndarray) -> np.ndarray:
        """(n,) the same of the index ``reference`` (``leave_out``: :func:`neighbour_distances`,
        even empty, so that a slice scores the same in fit as in score_samples)."""
        raise NotImplementedError

    def _check_reference(self, n: int) -> None:
        """Refuse a reference set of ``n`` known non-members too small for the settings."""

    def _score(self, x: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        score = self._generated_term(x)
        if getattr(self, "reference_", None) is None:
            return score
        kept = np.empty(0, dtype=np.int64) if leave_out is None else leave_out
        return score - self._reference_term(self.reference_, x, kept)

    def _check_x(self, x: Any, check_input: bool = True) -> np.ndarray:
        return distance.prepare(super()._check_x(x, check_input), self.metric)

    def _restore(self, device: str) -> None:
        kind = FlatIndex if self.index == "flat" else ApproximateIndex
        self.index_ = kind.from_bytes(self.index_, device=device)
        if getattr(self, "reference_", None) is not None:
            self.reference_ = FlatIndex.from_bytes(self.reference_, device=self._flat_device())
        self.n_features_in_ = self.index_.d
        super()._restore(device)


__all__ = ["NeighbourMethod", "neighbour_distances"]
