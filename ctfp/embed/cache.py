"""Building the decoded-slice cache: every slice decoded once into uint8 rows of Parquet shards."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from ctfp.embed.features import SliceCache
from ctfp.embed.job import Output, input_job, settings_with
from ctfp.embed.settings import CacheSettings
from ctfp.embed.writer import EmbedResult
from ctfp.engine import resolve_engine, run
from ctfp.engine.settings import EngineSettings
from ctfp.io.fs import PathLike
from ctfp.store.schema import PIXELS_DTYPE


def build_cache(
    sources: Sequence[PathLike] | PathLike,
    out: PathLike,
    settings: CacheSettings | None = None,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    **overrides: Any,
) -> EmbedResult:
    """Decode every slice behind ``sources`` once into ``out``: uint8, padded with air to a
    square and resized to ``settings.size``, one row per slice (:mod:`ctfp.store.cache`), which
    ``ctfp embed OUT`` reads instead of decoding again. Resumable like embedding; unreadable
    inputs go to ``out/_errors/errors.parquet``. ``overrides`` are
    :class:`~ctfp.embed.settings.CacheSettings` fields; ``engine``: ``"local"``, ``"ray"`` or an
    ``EngineSettings``.
    """
    settings = settings_with(CacheSettings, settings, overrides, "build_cache")
    # The "model" is the identity on the resized slice.
    factory = functools.partial(SliceCache, settings.size)
    engine_settings = resolve_engine(engine)
    job = input_job(
        sources,
        settings,
        [Output(os.fspath(out), factory, settings.to_dict())],
        dtype=PIXELS_DTYPE,
        # No GPU needed to copy bytes; fp32 keeps every uint8 value exact.
        device="cpu",
        precision="fp32",
        progress=progress,
    )
    [result] = run(job, engine_settings)
    return result


__all__ = ["CacheSettings", "build_cache"]
