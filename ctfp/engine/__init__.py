"""Engines (distributors): where a job runs; ``local`` in this process, ``ray`` on Ray Data."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ctfp.engine.settings import ENGINES, EngineSettings
from ctfp.settings import SettingsError

if TYPE_CHECKING:
    from ctfp.embed.job import Job
    from ctfp.embed.writer import EmbedResult


def resolve_engine(engine: str | EngineSettings = "local") -> EngineSettings:
    """Engine settings from a name or settings, checked up front: an unknown name, or ``ray``
    without Ray installed, is an error that says what to do (never a silent fallback to the
    local engine)."""
    if isinstance(engine, str):
        engine = EngineSettings(engine=engine)
    elif not isinstance(engine, EngineSettings):
        raise SettingsError(
            f"engine must be one of {', '.join(ENGINES)} or an EngineSettings, got {engine!r}"
        )
    if engine.engine == "ray":
        from ctfp.engine.ray import require_ray

        require_ray()
    return engine


def run(job: Job, engine: str | EngineSettings = "local") -> EmbedResult:
    """Run ``job`` on the engine ``engine`` names: the one place that chooses. An engine's
    module is imported only when it is chosen (a local run never imports Ray), and provides
    ``run(job, settings) -> EmbedResult``."""
    settings = resolve_engine(engine)
    module = importlib.import_module(f"ctfp.engine.{settings.engine}")
    return module.run(job, settings)


__all__ = ["ENGINES", "EngineSettings", "resolve_engine", "run"]
