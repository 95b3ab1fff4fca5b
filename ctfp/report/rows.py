"""What the report needs from a run's embedding shards, gathered in one streamed pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A scatter of more points says nothing more and makes the PNG heavy: the map is a sample.
MAP_POINTS = 5000


@dataclass
class Rows:
    """The map sample, the generated rows and the source, frame and vector of wanted ids
    (``map_x``, ``generated_x``: the embeddings, one block per batch)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0
    map_ids: list[str] = field(default_factory=list)
    map_labels: list[str | None] = field(default_factory=list)
    map_x: list[np.ndarray] = field(default_factory=list)
    generated_ids: list[str] = field(default_factory=list)
    generated_where: list[tuple[str, int]] = field(default_factory=list)
    generated_x: list[np.ndarray] = field(default_factory=list)
    where: dict[str, tuple[str, int]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def read_rows(folder: Path, wanted: set[str], *, generated: bool, vectors: bool, seed: int) -> Rows:
    """Stream the shards once: a random sample for the map, the generated rows and the source,
    frame and (``vectors``) embedding of the ``wanted`` ids."""
    from ctfp.store.reader import count_rows, iter_embeddings, shard_paths

    files = shard_paths(folder)
    total = count_rows(files)
    keep = min(1.0, MAP_POINTS / max(total, 1))
    rng = np.random.default_rng(seed)
    rows = Rows(n_rows=total)
    for batch in iter_embeddings(files):
        rows.metadata = batch.metadata
        ids = batch.ids.tolist()
        sources = batch.table.column("source").to_pylist()
        frames = batch.table.column("frame").to_pylist()
        labels = batch.labels.tolist()
        sample = np.flatnonzero(rng.random(len(ids)) < keep)
        rows.map_ids += [ids[i] for i in sample]
        rows.map_labels += [labels[i] for i in sample]
        rows.map_x.append(batch.matrix[sample])
        if generated:
            g = np.flatnonzero(np.asarray([lab == "generated" for lab in labels], dtype=bool))
            rows.generated_ids += [ids[i] for i in g]
            rows.generated_where += [(sources[i], frames[i]) for i in g]
            rows.generated_x.append(batch.matrix[g])
        for i, row_id in enumerate(ids):
            if row_id in wanted:
                rows.where[row_id] = (sources[i], frames[i])
                if vectors:
                    rows.vectors[row_id] = batch.matrix[i].copy()
    return rows


__all__ = ["MAP_POINTS", "Rows", "read_rows"]
