"""Choosing an engine: one chooser, loud failures (never a fallback), a clean import graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import ctfp
from ctfp.embed.cache import build_cache
from ctfp.embed.runner import embed
from ctfp.engine import ENGINES, resolve_engine, run
from ctfp.engine.ray_map import RAY_INSTALL
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import CtfpError
from ctfp.settings import SettingsError
from tests.conftest import LUNG

PNG = LUNG / "png" / "A0001_s2_001.png"
PACKAGE = Path(ctfp.__file__).parent


def test_engines_are_named_or_given_as_settings() -> None:
    assert ENGINES == ("local", "ray")
    assert resolve_engine("local") == EngineSettings()
    given = EngineSettings(engine="ray", actors=3)
    assert resolve_engine(given) is given
    with pytest.raises(SettingsError, match="engine must be one of local, ray"):
        resolve_engine(3)  # type: ignore[arg-type]


def test_unknown_engine_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"unknown engine 'spark'.*choose one of local, ray"):
        embed(PNG, tmp_path / "out", weights="random", engine="spark", progress=False)
    with pytest.raises(SettingsError, match="unknown engine 'spark'"):
        run(None, "spark")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_without_ray_the_ray_engine_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(CtfpError, match=r"pip install 'ctfp\[ray\]'.*--engine local"):
        embed(PNG, tmp_path / "out", weights="random", engine="ray", progress=False)
    with pytest.raises(CtfpError, match="Ray Data"):
        build_cache(PNG, tmp_path / "cache", engine=EngineSettings(engine="ray"), progress=False)
    assert RAY_INSTALL == "pip install 'ctfp[ray]'"
    # Nothing was written, and the local engine was not run instead.
    assert not any((tmp_path / name).exists() for name in ("out", "cache"))


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"actors, ray_address\) need --engine ray"):
        EngineSettings(actors=2)
    with pytest.raises(SettingsError, match="need --engine ray"):
        EngineSettings(engine="local", ray_address="auto")
    with pytest.raises(SettingsError, match=r"EngineSettings\(engine='ray', ray_address"):
        embed(PNG, tmp_path / "o", weights="random", ray_address="auto", progress=False)
    assert not (tmp_path / "o").exists()


def test_the_local_engine_is_chosen_by_default(tmp_path: Path) -> None:
    result = embed(PNG, tmp_path / "out", weights="random", image_size=32, progress=False)
    assert result.engine == "local" and result.rows == 1


# -- the import graph of the embedding stages and the engines -------------------------------------
def _module_file(name: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every ctfp import of module ``name``, at any level, except
    those under ``if TYPE_CHECKING:``; a dynamic ``ctfp.engine.{...}`` import counts as all
    engines."""
    tree = ast.parse(_module_file(name).read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from ctfp import exceptions` imports a module
                sub = f"{node.module}.{a.name}"
                found.append((sub, []) if _module_file(sub) else (node.module, [a.name]))
        elif isinstance(node, ast.JoinedStr) and ast.unparse(node).startswith("f'ctfp.engine."):
            found += [(f"ctfp.engine.{engine}", []) for engine in ENGINES]
    return [(m, names) for m, names in found if m.split(".")[0] in ("ctfp", "ray")]


def _graph() -> dict[str, list[tuple[str, list[str]]]]:
    roots = [
        f"ctfp.{p.parent.name}.{p.stem}"
        for d in ("embed", "engine")
        for p in sorted((PACKAGE / d).glob("*.py"))
    ]
    graph: dict[str, list[tuple[str, list[str]]]] = {}
    todo = [r.removesuffix(".__init__") for r in roots] + ["ctfp.store.cache"]
    while todo:
        name = todo.pop()
        if name in graph or _module_file(name) is None:
            continue
        graph[name] = _imports(name)
        todo += [m for m, _ in graph[name]]
    return graph


def test_the_layers_point_one_way() -> None:
    graph = _graph()

    def reach(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for module, _ in graph.get(todo.pop(), []):
                if module not in seen:
                    seen.add(module)
                    todo.append(module)
        return seen

    upper = {"ctfp.embed.runner", "ctfp.embed.cache", "ctfp.engine", "ctfp.engine.local"}
    upper |= {"ctfp.engine.ray", "ctfp.engine.ray_map"}
    for stage in ("reader", "mapper", "writer", "job", "settings", "features", "backbone"):
        assert not reach(f"ctfp.embed.{stage}") & upper, stage
    assert not {m for m in reach("ctfp.store.cache") if m.startswith("ctfp.embed")}
    # The runner and the cache builder reach the engines only through the chooser.
    for name in ("ctfp.embed.runner", "ctfp.embed.cache"):
        direct = {m for m, _ in graph[name]}
        assert "ctfp.engine" in direct and not direct & {"ctfp.engine.local", "ctfp.engine.ray"}
    assert not reach("ctfp.engine.local") & {"ctfp.engine.ray", "ray", "ray.data"}
    assert "ray" in {m for m, _ in graph["ctfp.engine.ray_map"]}  # the check sees Ray imports
    assert "ray" in reach("ctfp.engine.ray")
