"""A run's input: an ImageCLEF-style data folder, embedded into the run folder, split by role."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.runner import embed_many
from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.fs import PathLike, is_remote
from ctfp.runs.folder import embeddings_dir, split_test_rows
from ctfp.store.reader import Embeddings, read_embeddings


def check_layout(data: PathLike, required: Sequence[str]) -> Path:
    """``data`` as a local folder holding the ``required`` sub-folders: checked before anything
    slow (fetching weights, embedding), with what the layout should be."""
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
    return root


def embed_features(
    data: PathLike,
    out: PathLike,
    required: Sequence[str],
    settings: EmbedSettings,
    features: Sequence[str],
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
) -> dict[str, Embeddings]:
    """Embed the ImageCLEF folder ``data`` with each feature type of ``features`` into ``out``'s
    embeddings folder of that type (:func:`~ctfp.runs.folder.embeddings_dir`; what is there is
    resumed; ``out`` may be on an object store) and read each back. Every type holds the same
    slices (an InputError otherwise; callers align rows by id); ``required`` sub-folders must
    exist.

    Each slice is decoded once for all the types (:func:`~ctfp.embed.runner.embed_many`), and
    each folder holds what embedding that type alone writes; a joined type joins parts
    computed once (``residual``, ``spectrum`` and ``residual+spectrum``: two extractors run).
    """
    root = check_layout(data, required)
    folders = {f: embeddings_dir(out, f) for f in dict.fromkeys(features)}
    try:
        embed_many(
            root, folders, settings.replace(layout="imageclef"), engine=engine, progress=progress
        )
    except ShardMismatchError as exc:
        raise ShardMismatchError(
            f"{exc} (a run keeps each feature type in its own folder: remove the one named to "
            "embed that type again)"
        ) from None
    found = {f: _read_finite(shards) for f, shards in folders.items()}
    first = next(iter(found.values()), None)
    for f, emb in found.items():
        if first is not None and set(emb.ids.tolist()) != set(first.ids.tolist()):
            raise InputError(
                f"the {f} and {features[0]} embeddings hold different slices; remove "
                f"{embeddings_dir(out, f)} and rerun"
            )
    return found


def embed_layout(
    data: PathLike,
    out: PathLike,
    required: Sequence[str],
    settings: EmbedSettings,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
) -> Embeddings:
    """:func:`embed_features` of the one feature type of ``settings``."""
    found = embed_features(
        data, out, required, settings, [settings.features], engine=engine, progress=progress
    )
    return found[settings.features]


def _read_finite(shards: PathLike) -> Embeddings:
    """The embeddings of ``shards``; an InputError naming a row that is not finite."""
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


def rows_by_id(data: Embeddings, ids: Sequence[str]) -> np.ndarray:
    """(len(ids), d) the embeddings of ``ids``, in that order (feature types of one run hold
    the same slices, not always in the same order)."""
    where = {i: n for n, i in enumerate(data.ids)}
    return data.matrix[[where[i] for i in ids]] if len(ids) else data.matrix[:0]


def model_identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a summary records of the embedding model."""
    return {key: metadata.get(key) for key in ("model", "weights", "weights_sha256")}


__all__ = [
    "check_layout",
    "check_local_data",
    "embed_features",
    "embed_layout",
    "model_identity",
    "rows_by_id",
    "rows_of",
    "test_part",
]
