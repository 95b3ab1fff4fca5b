"""The embedding runner: settings and sources become a job, which the chosen engine runs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ctfp.embed.features import features_factory
from ctfp.embed.job import ModelFactory, Output, input_job, settings_with
from ctfp.embed.settings import EmbedSettings, refuse_auto
from ctfp.embed.writer import EmbedResult
from ctfp.engine import resolve_engine, run
from ctfp.engine.settings import EngineSettings
from ctfp.io.fs import PathLike, as_local
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

    Rerunning resumes: files in finished shards are skipped, failed ones tried again.
    Unreadable files are listed in ``out/_errors/errors.parquet`` and never stop the run.

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
        ``"local"`` (this process), ``"ray"`` (needs ``pip install 'ctfp[ray]'``) or an
        :class:`~ctfp.engine.settings.EngineSettings`. Both write the same shards.
    progress
        Show a progress bar on stderr.
    backbone_factory
        Builds the model (default: :func:`~ctfp.embed.features.build_features` from
        ``settings``), once per process that runs it (on Ray it must pickle).
    **overrides
        ``EmbedSettings`` fields applied to ``settings`` (``weights="random"``).

    Raises
    ------
    ctfp.settings.SettingsError
        An unknown option or an invalid value (the message names the field).
    """
    settings = _settings(settings, overrides, "embed", ("engine", "progress", "backbone_factory"))
    outs = {settings.features: out}
    [result] = _embed(sources, outs, settings, engine, progress, backbone_factory)
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
    once: ``outs`` maps a feature type (``pixels:16``, ``residual+spectrum``) to its shard
    folder; returns the result of each, keyed as ``outs``.

    Each folder gets exactly what :func:`embed` with ``features=`` that type writes there.
    ``settings.features`` is not used; the other settings apply to every type.
    """
    settings = _settings(settings, overrides, "embed_many", ("engine", "progress"))
    if not outs:
        raise SettingsError("embed_many() needs at least one feature type and its folder")
    return dict(zip(outs, _embed(sources, outs, settings, engine, progress), strict=True))


def _settings(
    settings: EmbedSettings | None,
    overrides: dict[str, Any],
    caller: str,
    keywords: tuple[str, ...],
) -> EmbedSettings:
    if isinstance(overrides.get("weights"), os.PathLike):  # a state-dict path given as a Path
        overrides["weights"] = os.fspath(overrides["weights"])
    return settings_with(EmbedSettings, settings, overrides, caller, keywords)


def _embed(
    sources: Sequence[PathLike] | PathLike,
    outs: Mapping[str, PathLike],
    settings: EmbedSettings,
    engine: str | EngineSettings,
    progress: bool,
    factory: ModelFactory | None = None,
) -> list[EmbedResult]:
    """One job: each feature type of ``outs`` into its folder (``factory``: the model of a
    one-type job), run on ``engine``."""
    outputs = []
    for features, out in outs.items():
        refuse_auto(features)
        typed = settings.replace(features=features)  # validated: an unknown type is refused
        model = factory or features_factory(typed)
        outputs.append(Output(os.fspath(as_local(out)), model, typed.to_dict()))
    # Before anything is read: an unknown engine or a missing Ray fails first.
    engine_settings = resolve_engine(engine)
    job = input_job(sources, settings, outputs, progress=progress)
    if job.files and job.files[0].cache:
        decoding = cache_decoding(sources)
        assert decoding is not None
        # Cached slices are 8-bit already: they cannot be windowed again.
        wanted = None if settings.window is None else parse_window(settings.window).describe()
        if wanted not in (None, decoding["window"]):
            raise SettingsError(
                f"window {settings.window!r} ({wanted}) differs from the window the cache was "
                f"decoded with ({decoding['window']}); cached slices cannot be windowed again: "
                "leave the window out, or build a cache with this window"
            )
        job = dataclasses.replace(job, decoding=decoding)
    return run(job, engine_settings)


__all__ = ["EmbedResult", "EmbedSettings", "embed", "embed_many"]
