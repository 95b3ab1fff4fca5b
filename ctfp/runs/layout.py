"""A run's input: an ImageCLEF-style data folder, embedded into the run folder, split by role."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.runner import embed
from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError
from ctfp.io.fs import is_remote
from ctfp.runs.folder import embeddings_dir, split_test_rows
from ctfp.store.reader import Embeddings, read_embeddings

PathLike = str | os.PathLike[str]


def embed_layout(
    data: PathLike,
    out: PathLike,
    required: Sequence[str],
    settings: EmbedSettings,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
) -> Embeddings:
    """Embed the ImageCLEF folder ``data`` into ``out``'s embeddings folder (resuming what is
    there; ``out`` may be on an object store) and read it back; ``required`` sub-folders must
    exist."""
    check_local_data(data)
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"data folder {str(root)!r} does not exist")
    missing = [r for r in required if not (root / r).is_dir()]
    if missing:
        raise InputError(
            f"{str(root)!r} lacks {', '.join(f'{m}/' for m in missing)}; the ImageCLEF layout is "
            "train/used/, train/not_used/, generated/ and test/ (task 1) or test/ with optional "
            "train/<group>/ (task 2)"
        )
    shards = embeddings_dir(out, settings.features)
    embed(root, shards, settings.replace(layout="imageclef"), engine=engine, progress=progress)
    data = read_embeddings(shards)
    finite = np.isfinite(data.matrix).all(axis=1)
    if not finite.all():  # a damaged shard: say which row, not scikit-learn's "Input X ..."
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"{shards} holds non-finite embeddings (NaN or infinity) in {len(bad)} row(s), e.g. "
            f"id {data.ids[bad[0]]!r}; remove that folder and rerun to embed again"
        )
    return data


def check_local_data(data: PathLike) -> None:
    """A run's labelled ImageCLEF folder is read from a local or mounted path: refuse a store
    URI up front, saying what works."""
    if is_remote(data):
        raise InputError(
            f"ctfp run reads its labelled data folder from a local or mounted path, not "
            f"{os.fspath(data)!r}; copy the labelled set here (its run folder, --out, may be on "
            "the store), or embed the archive with `ctfp embed URI --out URI` and score it with "
            "`ctfp score`"
        )


def rows_of(data: Embeddings, mask: np.ndarray, what: str) -> np.ndarray:
    """The embeddings of the rows in ``mask``; InputError naming ``what`` when there are none."""
    if not mask.any():
        raise InputError(f"no readable {what} images were embedded")
    return data.matrix[mask]


def test_part(data: Embeddings) -> tuple[list[str], np.ndarray]:
    """Run-file ids (relative to test/, without suffix) and embeddings of the test slices."""
    mask, ids = split_test_rows(list(data.ids))
    return ids, rows_of(data, mask, "test/")


def model_identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a summary records of the embedding model."""
    return {key: metadata.get(key) for key in ("model", "weights", "weights_sha256")}


__all__ = ["check_local_data", "embed_layout", "model_identity", "rows_of", "test_part"]
