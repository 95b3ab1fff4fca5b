"""The job an engine runs: its shard metadata, and settings built from keyword overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctfp.embed.job import Job, settings_with
from ctfp.embed.settings import CacheSettings, EmbedSettings
from ctfp.io.window import parse_window
from ctfp.settings import SettingsError


def test_metadata_is_the_shard_contract(pixel_job, tmp_path: Path) -> None:
    job: Job = pixel_job([], tmp_path, window=parse_window("bone"))
    identity = job.outputs[0].factory().identity.to_dict()
    meta = job.metadata(identity)
    # Exactly these fields: shards written before the redesign must still resume.
    assert set(meta) == {
        *("format", "model", "weights", "weights_sha256", "dim", "preprocessing", "dtype"),
        *("decode", "ctfp_version"),
    }
    assert meta["format"] == "ctfp-embeddings/1" and meta["dtype"] == "float32"
    assert meta["decode"] == {"window": "hu:400,1800"} and meta["model"] == "pixels"
    cache = pixel_job([], tmp_path, dtype="uint8").metadata(identity)
    assert cache["format"] == "ctfp-slices/1"


def test_overrides_apply_to_the_defaults_or_to_given_settings() -> None:
    assert settings_with(EmbedSettings, None, {}, "embed") == EmbedSettings()
    base = EmbedSettings(weights="random")
    got = settings_with(EmbedSettings, base, {"image_size": 64}, "embed")
    assert got == EmbedSettings(weights="random", image_size=64) and base.image_size == 224
    with pytest.raises(SettingsError, match=r"EmbedSettings\.image_size must be at least 32"):
        settings_with(EmbedSettings, base, {"image_size": 8}, "embed")


def test_unknown_and_moved_options_say_what_to_do() -> None:
    with pytest.raises(SettingsError, match=r"embed\(\) got an unknown option 'colour'.*weights"):
        settings_with(EmbedSettings, None, {"colour": 1}, "embed")
    with pytest.warns(FutureWarning, match=r"seed= is deprecated.*use weights_seed="):
        renamed = settings_with(EmbedSettings, None, {"seed": 3}, "embed")
    assert renamed == EmbedSettings(weights_seed=3)  # the old spelling still works, for a release
    with pytest.raises(SettingsError, match=r"EngineSettings\(engine='ray', actors=\.\.\.\)"):
        settings_with(EmbedSettings, None, {"actors": 2}, "embed")
    with pytest.raises(SettingsError, match=r"build_cache\(\) got an unknown option 'features'"):
        settings_with(CacheSettings, None, {"features": "pixels"}, "build_cache")
    with pytest.raises(SettingsError, match=r"embed\(\) takes EmbedSettings settings, got Cache"):
        settings_with(EmbedSettings, CacheSettings(), {}, "embed")


def test_combined_features_embed(tmp_path, lung_pngs) -> None:
    # A combination has no single input side: the decoding record must not trip over it.
    from ctfp.embed.runner import embed
    from ctfp.store.reader import read_embeddings

    src = lung_pngs[:3]
    result = embed(src, tmp_path / "o", features="pixels:16+residual:32", progress=False)
    data = read_embeddings(tmp_path / "o")
    assert result.rows == 3 and data.matrix.shape == (3, 16 * 16 + 16 + 4)
    assert data.metadata["decode"] == {"window": "auto:-600,1500"}
