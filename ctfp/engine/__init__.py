"""Engines (distributors): where a job runs; ``local`` in this process, ``ray`` on Ray Data."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ctfp.engine.settings import ENGINES, EngineSettings
from ctfp.settings import SettingsError

if TYPE_CHECKING:
    from ctfp.embed.job import Job
    from ctfp.embed.writer import EmbedResult

T = TypeVar("T")


def resolve_engine(engine: str | EngineSettings = "local") -> EngineSettings:
    """Engine settings from a name or settings, checked up front: an unknown name, or ``ray``
    without Ray installed, is an error (never a silent fallback to the local engine)."""
    if isinstance(engine, str):
        engine = EngineSettings(engine=engine)
    elif not isinstance(engine, EngineSettings):
        raise SettingsError(
            f"engine must be one of {', '.join(ENGINES)} or an EngineSettings, got {engine!r}"
        )
    if engine.engine == "ray":
        from ctfp.engine.ray_map import require_ray

        require_ray()
    return engine


def run(job: Job, engine: str | EngineSettings = "local") -> list[EmbedResult]:
    """Run ``job`` on the engine ``engine`` names, whose module is imported only then and
    provides ``run(job, settings)``: one result per output of the job."""
    settings = resolve_engine(engine)
    module = importlib.import_module(f"ctfp.engine.{settings.engine}")
    return module.run(job, settings)


def parallel_map(
    function: Callable[[Any], T],
    items: Iterable[Any],
    engine: str | EngineSettings = "local",
    *,
    stateful: bool = False,
    gpu: bool | None = False,
) -> Iterator[T]:
    """``function(item)`` for each item, in item order: here (``local``: the builtin map,
    lazily) or on Ray (:func:`ctfp.engine.ray_map.ordered_map`, which says what ``stateful``
    and ``gpu`` do). Items should be small (shard paths): the workers read the data."""
    settings = resolve_engine(engine)
    if settings.engine == "local":
        return map(function, items)
    from ctfp.engine.ray_map import ordered_map

    return ordered_map(function, items, settings, stateful=stateful, gpu=gpu)


__all__ = ["ENGINES", "EngineSettings", "parallel_map", "resolve_engine", "run"]
