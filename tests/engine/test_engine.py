"""Choosing an engine: unknown names and a missing Ray fail loudly, never fall back to local."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ctfp.cli import main
from ctfp.embed.runner import embed
from ctfp.engine import ENGINES, RAY_INSTALL, check_engine
from ctfp.exceptions import CtfpError
from ctfp.store.cache import build_cache
from tests.conftest import LUNG

PNG = LUNG / "png" / "A0001_s2_001.png"


def test_unknown_engine_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(CtfpError, match="unknown engine 'spark'; choose one of local, ray"):
        embed(PNG, tmp_path / "out", weights="random", engine="spark", progress=False)
    assert not (tmp_path / "out").exists()
    assert check_engine("local") == "local" and ENGINES == ("local", "ray")


def test_without_ray_the_ray_engine_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(CtfpError, match=r"pip install 'ctfp\[ray\]'"):
        embed(PNG, tmp_path / "out", weights="random", engine="ray", progress=False)
    with pytest.raises(CtfpError, match="Ray Data"):
        build_cache(PNG, tmp_path / "cache", engine="ray", progress=False)
    args = ["embed", str(PNG), "--out", str(tmp_path / "cli"), "--weights", "random"]
    assert main([*args, "--engine", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert RAY_INSTALL in err and "--engine local" in err
    # Nothing was written, and the local engine was not run instead.
    assert not any((tmp_path / name).exists() for name in ("out", "cache", "cli"))


def test_ray_options_need_the_ray_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["embed", str(PNG), "--out", str(tmp_path / "o"), "--weights", "random", "--quiet"]
    assert main([*args, "--actors", "2"]) == 2
    assert "--actors and --ray-address need --engine ray" in capsys.readouterr().err
    with pytest.raises(CtfpError, match="options of engine='ray'"):
        embed(PNG, tmp_path / "o", weights="random", ray_address="auto", progress=False)
    assert not (tmp_path / "o").exists()
