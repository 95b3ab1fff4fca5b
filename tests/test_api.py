"""The public Python API: every name ctfp exports resolves."""

from __future__ import annotations

import pytest

import ctfp


@pytest.mark.parametrize("name", ctfp.__all__)
def test_exports_resolve(name: str) -> None:
    assert getattr(ctfp, name) is not None


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        ctfp.does_not_exist  # noqa: B018
