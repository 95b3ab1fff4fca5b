"""Data as partitions: how the clustering estimators read data, in memory, streamed or on Ray.

A partition is a zero-argument callable that returns a fresh iterable of (b, d) batches (one
shard, say); an array in memory is one partition of one batch. A pass maps a picklable
per-partition function over the partitions with an ordered map (the builtin one, or
:func:`ctfp.engine.parallel_map`) and sums the results in partition order, so the sum does not
depend on where they ran.
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
    """The data as ``partitions`` and the ordered map ``map_(function, partitions)`` that runs
    a function over them (lazily is best: the results are summed as they come)."""

    def __init__(self, partitions: Sequence[Partition], map_: MapFn = map) -> None:
        self.partitions = list(partitions)
        self.map = map_

    @classmethod
    def of(
        cls, batches: Partition | Sequence[Partition], map_fn: MapFn | None = None
    ) -> Partitions:
        """The ``batches`` of a ``fit_stream``: one partition or a sequence of them (only then
        ``map_fn``, default the builtin map)."""
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
        summed with ``add`` in partition order; ValueError where no partition has rows."""
        total = None
        for part in self.map(function, self.partitions):
            if part is not None:
                total = part if total is None else add(total, part)
        if total is None:
            raise ValueError("the batches hold no data")
        return total
