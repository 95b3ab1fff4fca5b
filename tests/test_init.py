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


def test_embed_stays_callable_after_the_subpackage_is_imported(tmp_path) -> None:
    import ctfp.embed.runner  # binds the name ctfp.embed to the subpackage
    from tests.conftest import LUNG

    assert callable(ctfp.embed)
    png = str(LUNG / "png" / "A0001_s2_001.png")
    for expected in (1, 0):  # the second call resumes: nothing left to do
        result = ctfp.embed(png, tmp_path, weights="random", image_size=32, progress=False)
        assert result.rows == expected
