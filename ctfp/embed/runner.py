"""The embedding runner: settings and sources become a job, which the chosen engine runs."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ctfp.embed.features import build_features
from ctfp.embed.job import Job, ModelFactory, Output, settings_with
from ctfp.embed.reader import find_inputs
from ctfp.embed.settings import EmbedSettings
from ctfp.embed.writer import EmbedResult
from ctfp.engine import resolve_engine, run
from ctfp.engine.settings import EngineSettings
from ctfp.io.fs import PathLike, as_local
from ctfp.io.sources import Unreadable
from ctfp.io.window import parse_window
from ctfp.settings import SettingsError
from ctfp.store.cache import cache_decoding


def embed(
    sources: Sequence[PathLike] | PathLike,
    out: PathLike,
    settings: EmbedSettings | None = None,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    backbone_factory: ModelFactory | None = None,
    **overrides: Any,
) -> EmbedResult:
    """Embed every CT slice behind ``sources`` into Parquet shards in ``out``.

    Rerunning the same call resumes: files already in finished shards are skipped, files that
    failed are tried again. Unreadable files are listed in ``out/_errors/errors.parquet`` with
    their reason and never stop the run.

    Parameters
    ----------
    sources
        Folders, globs, manifests (CSV/Parquet with ``path``, optional ``id``, ``label``), files,
        or decoded-slice caches (``ctfp cache``; read instead of decoding images again).
    out
        Output folder of ``part-NNNNN.parquet`` shards.
    settings
        What to compute (:class:`~ctfp.embed.settings.EmbedSettings`; default: its defaults).
    engine
        ``"local"`` (this process and its DataLoader workers), ``"ray"`` (Ray Data: decoding in
        CPU tasks, the model in an actor pool; needs ``pip install 'ctfp[ray]'``) or an
        :class:`~ctfp.engine.settings.EngineSettings` (``actors``, ``ray_address``). Both engines
        write the same shards and resume each other's runs.
    progress
        Show a progress bar on stderr.
    backbone_factory
        Builds the model (default: :func:`~ctfp.embed.features.build_features` from
        ``settings``); called once per process that runs it, so on Ray it must pickle.
    **overrides
        ``EmbedSettings`` fields, applied to ``settings``: ``embed(src, out, weights="random",
        features="pixels")``. An unknown name is an error.

    Raises
    ------
    ctfp.settings.SettingsError
        An unknown option or an invalid value (the message names the field).
    """
    if isinstance(overrides.get("weights"), os.PathLike):  # a state-dict path given as a Path
        overrides["weights"] = os.fspath(overrides["weights"])
    settings = settings_with(
        EmbedSettings, settings, overrides, "embed", ("engine", "progress", "backbone_factory")
    )
    if settings.features.strip() == "auto":
        raise SettingsError(
            "features 'auto' let `ctfp run` choose among feature types by cross-validation; "
            "embedding needs one (resnet50, pixels, spectrum, residual, or name:size)"
        )
    factory = backbone_factory or _factory(settings.features, settings)
    output = Output(os.fspath(as_local(out)), factory, settings.to_dict())
    [result] = _run(sources, [output], settings, engine, progress)
    return result


def embed_many(
    sources: Sequence[PathLike] | PathLike,
    outs: Mapping[str, PathLike],
    settings: EmbedSettings | None = None,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    **overrides: Any,
) -> dict[str, EmbedResult]:
    """Embed every CT slice behind ``sources`` with several feature types, each slice decoded
    once: ``outs`` maps a feature type (``residual``, ``pixels:16``, ``residual+spectrum``) to
    its shard folder.

    Each folder gets exactly what :func:`embed` with ``features=`` that type writes there (the
    same rows, ids, order, parts, metadata and errors table) and resumes the same way: a
    folder already complete is left alone, a partial one gets what it lacks. Each type resizes
    the decoded slice to its own input side; a joined type is its parts joined, each part
    computed once however many types use it. ``settings.features`` is not used; the other
    settings (and ``overrides``, its fields) apply to every type. With ``engine="ray"`` each
    type is a run of its own (the same rows; the inputs are decoded once per type).

    Returns
    -------
    dict
        The result of each type, keyed as ``outs``.
    """
    if isinstance(overrides.get("weights"), os.PathLike):
        overrides["weights"] = os.fspath(overrides["weights"])
    settings = settings_with(EmbedSettings, settings, overrides, "embed_many")
    if not outs:
        raise SettingsError("embed_many() needs at least one feature type and its folder")
    outputs = []
    for features, out in outs.items():
        if features.strip() == "auto":
            raise SettingsError(
                "embed_many() needs the feature types to embed, not auto (which lets `ctfp run` "
                "choose among them)"
            )
        typed = settings.replace(features=features)  # validated: an unknown type is refused
        outputs.append(Output(os.fspath(as_local(out)), _factory(features, typed), typed.to_dict()))
    results = _run(sources, outputs, settings, engine, progress)
    return dict(zip(outs, results, strict=True))


def _factory(features: str, settings: EmbedSettings) -> ModelFactory:
    """The extractor of ``features`` with the weights and input side of ``settings``."""
    return functools.partial(
        build_features,
        features,
        weights=settings.weights,
        seed=settings.weights_seed,
        image_size=settings.image_size,
    )


def _run(
    sources: Sequence[PathLike] | PathLike,
    outputs: list[Output],
    settings: EmbedSettings,
    engine: str | EngineSettings,
    progress: bool,
) -> list[EmbedResult]:
    """The job of ``outputs`` over the inputs behind ``sources``, run on ``engine``."""
    # Before anything is read: an unknown engine or a missing Ray fails first.
    engine_settings = resolve_engine(engine)
    unreadable: list[Unreadable] = []
    files = find_inputs(sources, settings, unreadable)
    first, *also = outputs
    job = Job(
        files=files,
        unreadable=unreadable,
        decoding=cached_decoding(sources, settings) if files and files[0].cache else None,
        out=first.out,
        factory=first.factory,
        also=also,
        window=parse_window(settings.window),
        max_pixels=settings.max_pixels,
        dtype=settings.dtype,
        rows_per_shard=settings.rows_per_shard,
        commit_seconds=settings.commit_seconds,
        device=settings.device,
        precision=settings.precision,
        batch_size=settings.batch_size,
        workers=settings.workers,
        compile=settings.compile,
        progress=progress,
        settings=first.settings,
    )
    return run(job, engine_settings)


def cached_decoding(
    sources: Sequence[PathLike] | PathLike, settings: EmbedSettings
) -> dict[str, Any]:
    """How the cached slices in ``sources`` were decoded; a ``--window`` other than the cache's
    is refused (cached slices are 8-bit already: they cannot be windowed again)."""
    decoding = cache_decoding(sources)
    assert decoding is not None
    if settings.window is not None:
        wanted = parse_window(settings.window).describe()
        if wanted != decoding["window"]:
            raise SettingsError(
                f"window {settings.window!r} ({wanted}) differs from the window the cache was "
                f"decoded with ({decoding['window']}); cached slices cannot be windowed again: "
                "leave the window out, or build a cache with this window"
            )
    return decoding


__all__ = ["EmbedResult", "EmbedSettings", "embed", "embed_many"]
