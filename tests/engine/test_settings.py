"""EngineSettings: the engine by name, Ray's options only with the ray engine."""

from __future__ import annotations

import pytest

from ctfp.engine.settings import ENGINES, EngineSettings
from ctfp.settings import SettingsError


def test_defaults_and_round_trip() -> None:
    assert EngineSettings() == EngineSettings(engine="local", actors=None, ray_address=None)
    ray = EngineSettings(engine="ray", actors=2, ray_address="auto")
    assert EngineSettings.from_dict(ray.to_dict()) == ray and ENGINES == ("local", "ray")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engine": "spark"}, r"unknown engine 'spark' \(EngineSettings\.engine\)"),
        ({"engine": "ray", "actors": 0}, r"EngineSettings\.actors must be at least 1"),
        ({"engine": "ray", "actors": 1.5}, r"EngineSettings\.actors must be int"),
        ({"actors": 2}, "need --engine ray"),
        ({"ray_address": "auto"}, "need --engine ray"),
    ],
)
def test_bad_engine_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        EngineSettings(**fields)
