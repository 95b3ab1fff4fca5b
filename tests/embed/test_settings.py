"""EmbedSettings and CacheSettings: defaults, round trips, and bad values refused by name."""

from __future__ import annotations

import dataclasses

import pytest

from ctfp.embed.settings import (
    EMBEDDING_DTYPES,
    FEATURES,
    CacheSettings,
    EmbedSettings,
    InputSettings,
    check_features,
)
from ctfp.settings import SettingsError


def test_defaults_are_the_documented_ones() -> None:
    s = EmbedSettings()
    assert (s.features, s.weights, s.weights_seed, s.image_size) == ("resnet50", "imagenet", 0, 224)
    assert (s.batch_size, s.workers, s.device, s.precision) == (None, None, "auto", "auto")
    assert (s.dtype, s.compile, s.rows_per_shard, s.window) == ("float16", False, 10_000, None)
    assert CacheSettings().size == 256 and isinstance(CacheSettings(), InputSettings)
    assert FEATURES == ("resnet50", "pixels", "spectrum", "residual")
    assert EMBEDDING_DTYPES == ("float16", "float32")


def test_round_trip_and_replace() -> None:
    s = EmbedSettings(features="pixels+residual", window="bone", batch_size=8)
    assert EmbedSettings.from_dict(s.to_dict()) == s
    changed = s.replace(dtype="float32")
    assert changed.dtype == "float32" and s.dtype == "float16"  # frozen: a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.dtype = "float32"  # type: ignore[misc]
    with pytest.raises(SettingsError, match="has no setting 'seed'"):
        EmbedSettings.from_dict({"seed": 1})


@pytest.mark.parametrize("spec", ["sift", "", "pixels+", "resnet50+sift", "slices"])
def test_bad_features_are_refused_naming_the_field(spec: str) -> None:
    with pytest.raises(SettingsError, match=r"EmbedSettings\.features.*unknown features"):
        EmbedSettings(features=spec)


def test_feature_specs_joined_by_plus() -> None:
    check_features("pixels + spectrum")
    assert EmbedSettings(features="resnet50+residual").features == "resnet50+residual"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", float("nan"), "must be int, got nan"),
        ("image_size", float("inf"), "must be int, got inf"),
        ("rows_per_shard", 2.5, "must be int, got 2.5"),
        ("batch_size", 0, "must be at least 1"),
        ("image_size", 16, "must be at least 32"),
        ("rows_per_shard", 0, "must be at least 1"),
        ("workers", -1, "must be at least 0"),
        ("weights_seed", True, "must be int, got True"),
        ("compile", "yes", "must be bool"),
        ("dtype", "float64", "unknown dtype 'float64'.*float16, float32"),
        ("dtype", "uint8", "unknown dtype 'uint8'"),  # the cache's storage: not an embedding
        ("precision", "int8", "unknown precision 'int8'"),
        ("device", "gpu", "unknown device 'gpu'"),
        ("device", "cuda:x", "unknown device 'cuda:x'"),
        ("window", "-600", "cannot read window"),
        ("layout", "flat", "unknown layout 'flat'"),
        ("weights", None, "must not be None"),
        ("max_pixels", 63, "must be at least 64"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        EmbedSettings(**{field: value})
    assert f"EmbedSettings.{field}" in str(info.value)


def test_cache_settings_are_checked_too() -> None:
    with pytest.raises(SettingsError, match=r"CacheSettings\.size must be at least 8, got 4"):
        CacheSettings(size=4)
    with pytest.raises(SettingsError, match=r"CacheSettings\.window"):
        CacheSettings(window="nonsense")
    assert CacheSettings(size=64, workers=2).replace(size=32).size == 32


def test_the_pixel_limit_reads_as_a_count_or_a_size() -> None:
    from ctfp.embed.settings import parse_pixels

    assert EmbedSettings().max_pixels == 8192 * 8192
    assert parse_pixels("12000x12000") == parse_pixels("12000 X 12000") == 144_000_000
    assert parse_pixels("67_108_864") == parse_pixels("67108864") == 8192 * 8192
    for bad in ("abc", "0", "-5x5", "2x3x4", "", "1.5e6"):
        with pytest.raises(ValueError, match="not a pixel count"):
            parse_pixels(bad)
