"""A run's input: an ImageCLEF-style data folder (local, or a prefix on an object store: a
:class:`~ctfp.io.fs.Location`), embedded into the run folder, split by role; and the steps of
both tasks on it (the logged cross-validation, the recorded settings)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.runner import embed_many
from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.fs import Location, PathLike, as_local, is_remote, resolve
from ctfp.progress import logger, progress_bar
from ctfp.runs.folder import TEST_PREFIX, embeddings_dir
from ctfp.store.reader import Embeddings, read_embeddings
from ctfp.store.schema import input_of

#: The feature types ``--method auto`` tries when the features are ``auto``: those that need no
#: learned weights, at several resolutions, and ResNet50 when its weights can be loaded.
AUTO_FEATURES = ("pixels:16", "pixels:32", "pixels", "residual", "spectrum", "resnet50")


def data_folder(data: PathLike | Location) -> Location:
    """The data folder ``data`` (a local path, ``file://`` or a store URI) resolved once; a
    store prefix is named without its trailing ``/``, as runs record it."""
    if isinstance(data, Location):
        return data
    text = os.fspath(as_local(data))
    return resolve(text.rstrip("/") if is_remote(text) else text)


def is_folder(where: Location) -> bool:
    """Whether ``where`` is a folder (on a store: a prefix with objects under it)."""
    import pyarrow.fs as pafs

    with where.failing():
        return where.filesystem.get_file_info(where.path).type == pafs.FileType.Directory


def files_under(where: Location) -> list[str]:
    """The files under the folder ``where`` (none where there is none), relative to it and
    ``/``-separated, as the embed step lists them: folder links followed, hidden names
    (``.x``) left out."""
    import pyarrow.fs as pafs

    base = where.path.rstrip("/")
    with where.failing():
        infos = where.filesystem.get_file_info(
            pafs.FileSelector(base, allow_not_found=True, recursive=True)
        )
    found = [
        i.path[len(base) + 1 :]
        for i in infos
        if i.type == pafs.FileType.File and i.path.startswith(base + "/")
    ]
    return sorted(f for f in found if not any(part.startswith(".") for part in f.split("/")))


def check_layout(data: PathLike | Location, required: Sequence[str]) -> Location:
    """``data`` (:func:`data_folder`) as a folder holding the ``required`` sub-folders: checked
    before anything slow (fetching weights, embedding), with what the layout should be."""
    root = data_folder(data)
    if not is_folder(root):
        raise InputError(f"data folder {root.uri!r} does not exist")
    missing = [r for r in required if not is_folder(root.join(r))]
    if missing:
        raise InputError(
            f"{root.uri!r} lacks {', '.join(f'{m}/' for m in missing)}; the ImageCLEF layout is "
            "train/used/, train/not_used/, generated/ and test/ (task 1) or test/ with optional "
            "train/<group>/ (task 2)"
        )
    return root


def embed_features(
    data: PathLike | Location,
    out: PathLike,
    required: Sequence[str],
    settings: EmbedSettings,
    features: Sequence[str],
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    unread: dict[str, str] | None = None,
) -> dict[str, Embeddings]:
    """Embed the ImageCLEF folder ``data`` with each feature type of ``features`` into ``out``'s
    embeddings folder of that type (:func:`~ctfp.runs.folder.embeddings_dir`, resumed; each
    slice decoded once, :func:`~ctfp.embed.runner.embed_many`) and read each back. Every type
    holds the same slices (an InputError otherwise; callers align rows by id); ``required``
    sub-folders must exist.

    The rows read back are those of the files the embed step listed now, so rows of files
    removed or moved since an earlier run are left out. The inputs that could not be read go
    to ``unread`` (id: reason).
    """
    root = check_layout(data, required)
    folders = {f: embeddings_dir(out, f) for f in dict.fromkeys(features)}
    try:
        results = embed_many(
            root.uri,
            folders,
            settings.replace(layout="imageclef"),
            engine=engine,
            progress=progress,
        )
    except ShardMismatchError as exc:
        raise ShardMismatchError(
            f"{exc} (a run keeps each feature type in its own folder: remove the one named to "
            "embed that type again)"
        ) from None
    found = {f: _read_finite(shards, results[f].inputs) for f, shards in folders.items()}
    first = next(iter(found.values()), None)
    for f, emb in found.items():
        if set(emb.ids.tolist()) != set(first.ids.tolist()):
            raise InputError(
                f"the {f} and {features[0]} embeddings hold different slices; remove "
                f"{embeddings_dir(out, f)} and rerun"
            )
    if unread is not None and first is not None:
        result = next(iter(results.values()))
        frames = first.table.column("frame").to_pylist()
        have = {*first.ids, *map(input_of, first.ids, frames)}  # a volume's rows: vol#<frame>
        reasons = {e["id"]: (str(e["reason"]).splitlines() or [""])[0] for e in result.errors}
        missing = sorted({*result.inputs, *reasons} - have)
        unread.update({i: reasons.get(i, "no row was embedded") for i in missing})
    return found


def unread_warnings(data: PathLike | Location, unread: dict[str, str]) -> list[str]:
    """The summary's warning naming the inputs of ``data`` that could not be read (the first
    ten), if any."""
    if not unread:
        return []
    names = sorted(unread)
    listed = "; ".join(f"{n} ({unread[n]})" for n in names[:10])
    more = f"; and {len(names) - 10} more" if len(names) > 10 else ""
    return [
        f"{len(names)} input(s) of {data} could not be read and are left out of the run and its "
        f"counts: {listed}{more}"
    ]


def unread_note(n: int) -> str:
    """What a verdict adds where ``n`` inputs could not be read."""
    return f"; {n} input(s) could not be read and are not counted (see warnings)" if n else ""


def auto_features(
    settings: EmbedSettings, candidates: Sequence[str] = AUTO_FEATURES
) -> tuple[list[str], dict[str, str]]:
    """The feature types of ``candidates`` to try, and those left out with the reason: ResNet50
    with ImageNet weights only where they load."""
    if settings.features != "auto":
        return [settings.features], {}
    features = [f for f in candidates if f != "resnet50"]
    if "resnet50" not in candidates:
        return features, {}
    if settings.weights == "imagenet":
        from ctfp.embed.backbone import imagenet_unavailable

        reason = imagenet_unavailable()
        if reason is not None:
            return features, {"resnet50": reason}
    return [*features, "resnet50"], {}


@dataclass
class Run:
    """A run in progress, as :func:`~ctfp.runs.remote.in_run_folder` gives it to the task, with
    the inputs that could not be read (id: reason) and when it started."""

    task: str
    data: Location
    out: Path
    root: PathLike
    claim: Callable[[], None]
    engine: str | EngineSettings
    progress: bool
    unread: dict[str, str] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def embed(
        self, required: Sequence[str], settings: EmbedSettings, candidates: Sequence[str]
    ) -> tuple[list[str], dict[str, str], dict[str, Embeddings]]:
        """Claim the run folder, then the feature types of :func:`auto_features`, those left
        out (logged) and the embeddings of each (:func:`embed_features`, filling ``unread``)."""
        self.claim()
        features, skipped = auto_features(settings, candidates)
        for name, reason in skipped.items():
            logger.warning(
                f"auto: {name} left out: {reason} (pass --weights PATH or --weights random to "
                "try it)"
            )
        found = embed_features(
            self.data,
            self.root,
            required,
            settings,
            features,
            engine=self.engine,
            progress=self.progress,
            unread=self.unread,
        )
        return features, skipped, found


def _read_finite(shards: PathLike, inputs: Collection[str]) -> Embeddings:
    """The embeddings of ``shards`` of the input files ``inputs``; an InputError naming a row
    that is not finite (not scikit-learn's "Input X ...")."""
    data = read_embeddings(shards, inputs=inputs)
    finite = np.isfinite(data.matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"{shards} holds non-finite embeddings (NaN or infinity) in {len(bad)} row(s), e.g. "
            f"id {data.ids[bad[0]]!r}; remove that folder and rerun to embed again"
        )
    return data


def require(mask: np.ndarray, what: str) -> None:
    """InputError naming ``what`` when ``mask`` selects no row."""
    if not mask.any():
        raise InputError(f"no readable {what} images were embedded")


def run_ids(data: Embeddings) -> tuple[list[str], list[str]]:
    """The test slices' run-file ids (relative to test/, without suffix) and ids in ``data``."""
    mask = np.char.startswith(data.ids.astype(str), TEST_PREFIX)
    require(mask, TEST_PREFIX)
    tests = data.ids[mask].tolist()
    return [i[len(TEST_PREFIX) :] for i in tests], tests


def rows_by_id(data: Embeddings, ids: Sequence[str]) -> np.ndarray:
    """(len(ids), d) the embeddings of ``ids``, in that order."""
    where = {i: n for n, i in enumerate(data.ids)}
    return data.matrix[[where[i] for i in ids]]


def cross_validate(
    run: Run,
    select: Callable[..., Any],
    data: dict[str, Any],
    y: Any,
    candidates: Sequence[Any],
    options: Any,
    features: Sequence[str],
    on: str,
    s: Any,
) -> Any:
    """``select`` (the task's selection) of ``candidates`` at ``options``, seeded and on the
    device of the task's settings ``s``, saying what it cross-validates ``on``."""
    logger.info(
        f"{run.task}: {len(candidates)} candidate(s) ({len(features)} feature type"
        f"{'s' if len(features) > 1 else ''}) cross-validated on {on}, "
        f"{options.folds} folds x {options.repeats} repeats"
    )
    bar = f"{run.task}: candidates"
    return select(
        data,
        y,
        candidates,
        options,
        seed=s.seed,
        device=s.device,
        progress=lambda items: progress_bar(
            len(items), bar, "cand", enabled=run.progress and len(items) > 1, iterable=items
        ),
    )


def settings_record(run: Run, s: Any, embed: EmbedSettings) -> dict[str, Any]:
    """The seed and the settings of each stage, as every run's summary records them."""
    engine = run.engine if isinstance(run.engine, EngineSettings) else EngineSettings(run.engine)
    stages = {run.task: s.to_dict(), "embed": embed.to_dict(), "engine": engine.to_dict()}
    return {"seed": s.seed, "settings": stages}


def model_identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a summary records of the embedding model."""
    return {key: metadata.get(key) for key in ("model", "weights", "weights_sha256")}


__all__ = [
    "AUTO_FEATURES",
    "Run",
    "auto_features",
    "check_layout",
    "cross_validate",
    "data_folder",
    "embed_features",
    "files_under",
    "is_folder",
    "model_identity",
    "require",
    "rows_by_id",
    "run_ids",
    "settings_record",
    "unread_note",
    "unread_warnings",
]
