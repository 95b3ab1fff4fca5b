"""Data as partitions: the one way the clustering estimators read data, in memory, streamed
from disk or on Ray (faiss contrib's DatasetAssign idea).

A partition is a zero-argument callable that returns a fresh iterable of (b, d) batches on
every call (one shard, say); an array in memory is one partition of one batch. A pass maps a
picklable per-partition function (k-means' Lloyd statistics, the mixture's E-step statistics)
over the partitions with an ordered map (the builtin one here, :func:`ctfp.engine.parallel_map`
on Ray) and sums the results in partition order, so the sum does not depend on where the
partitions ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

Partition = Callable[[], Iterable[Any]]
MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class InMemory:
    """Data already in memory as one partition of one batch."""

    data: Any

    def __call__(self) -> tuple[Any]:
        return (self.data,)


class Partitions:
    """The data as a sequence of ``partitions`` and the ordered map that runs a function over
    them, ``map_(function, partitions)``: the results in partition order (lazily is best: they
    are summed as they come)."""

    def __init__(self, partitions: Sequence[Partition], map_: MapFn = map) -> None:
        self.partitions = list(partitions)
        self.map = map_

    @classmethod
    def of(
        cls, batches: Partition | Sequence[Partition], map_fn: MapFn | None = None
    ) -> Partitions:
        """The ``batches`` argument of a ``fit_stream``: one callable (a single partition) or a
        sequence of them; ``map_fn`` only with a sequence (the builtin map by default)."""
        if callable(batches):
            if map_fn is not None:
                raise TypeError("map_fn needs batches as a sequence of partitions")
            return cls([batches])
        return cls(batches, map if map_fn is None else map_fn)

    @classmethod
    def in_memory(cls, data: Any) -> Partitions:
        """``data`` as one partition of one batch, run here."""
        return cls([InMemory(data)])

    def reduce(self, function: Callable[[Partition], T | None], add: Callable[[T, T], T]) -> T:
        """``function`` over every partition, the results (None for a partition without rows)
        summed with ``add`` in partition order.

        Raises
        ------
        ValueError
            Where no partition has rows.
        """
        total = None
        for part in self.map(function, self.partitions):
            if part is not None:
                total = part if total is None else add(total, part)
        if total is None:
            raise ValueError("the batches hold no data")
        return total
