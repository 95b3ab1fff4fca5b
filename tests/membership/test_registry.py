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
