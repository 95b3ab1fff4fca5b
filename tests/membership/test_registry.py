"""The registry: every method by name, unknown names refused with the list."""

from __future__ import annotations

import pytest

from ctfp.membership.base import MembershipMethod
from ctfp.membership.registry import METHODS, get_method, parameter_names


def test_registered_methods_name_themselves_and_take_their_options() -> None:
    assert {"centroid", "proximity"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert issubclass(cls, MembershipMethod) and cls.name == name and get_method(name) is cls
        if cls.settings_class is not None:
            # Every command-line option is an __init__ parameter with the same default.
            defaults = cls().get_params()
            for field, value in cls.settings_class().to_dict().items():
                assert field in parameter_names(cls) and defaults[field] == value


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="choose one of centroid, proximity"):
        get_method("ensemble")


def test_the_documented_new_method_is_one_module_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch, memorised
) -> None:
    """docs/development.md's example method, as a module, and one line in the registry:
    --method auto tries its grid, and it saves, loads and scores like the others."""
    import re
    import sys
    import types
    from pathlib import Path

    import numpy as np

    from ctfp.membership import registry
    from ctfp.membership.options import SelectionSettings
    from ctfp.membership.selection import build, default_candidates, select

    doc = (Path(__file__).parents[2] / "docs" / "development.md").read_text()
    section = doc.split("## Adding a method", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("ctfp_doc_method")
    monkeypatch.setitem(sys.modules, "ctfp_doc_method", module)  # importable, as a module is
    exec(compile(code, "docs/development.md", "exec"), module.__dict__)
    line = re.search(r'`("mine": \(.*?\))`', section).group(1)
    name, entry = eval(
        "{" + line.replace("ctfp.membership.mine", "ctfp_doc_method") + "}"
    ).popitem()
    monkeypatch.setitem(registry.REGISTRY, name, entry)

    reals, y, generated = memorised(n=60)
    mine = [c for c in default_candidates(["f"], 30, True) if c.method == "mine"]
    assert [c.params for c in mine] == [{"neighbours": 1}, {"neighbours": 5}]
    selection = select({"f": (reals, generated)}, y, mine, SelectionSettings(bootstrap=20))
    assert selection.best.score > 0.9  # the memorised slices are found
    model = build(selection.best.candidate, 0, "cpu").fit(reals, y, generated)
    params, arrays = model.to_state()
    again = registry.get_method("mine").from_state(params, arrays, device="cpu")
    np.testing.assert_allclose(again.score_samples(reals), model.score_samples(reals))
    assert (again.predict(reals) == model.predict(reals)).all()
