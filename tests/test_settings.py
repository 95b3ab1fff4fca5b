"""The settings machinery: typed fields validated once, dict round trips, clear refusals."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, dataclass

import pytest

from ctfp.settings import Settings, SettingsError, option, parse_ints, parse_range


@dataclass(frozen=True)
class Example(Settings):
    name: str = option("a", "a name", choices=("a", "b"))
    count: int = option(2, "a count", minimum=1, maximum=10)
    rate: float = option(0.5, "a rate", minimum=0.0)
    limit: int | None = option(None, "an optional limit", minimum=0)
    flags: tuple[int, ...] = option((1, 2), "some ints", parse=parse_ints)
    on: bool = option(False, "a switch")


def test_valid_values_round_trip() -> None:
    e = Example(name="b", count=3, rate=1, limit=0, flags=(4,), on=True)
    assert e.rate == 1.0 and isinstance(e.rate, float)
    assert e.to_dict() == {
        "name": "b", "count": 3, "rate": 1.0, "limit": 0, "flags": [4], "on": True
    }  # fmt: skip
    assert Example.from_dict(e.to_dict()) == e
    assert e.replace(count=4).count == 4 and e.count == 3
    with pytest.raises(FrozenInstanceError):
        e.count = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(name="c"), "unknown name 'c' .*choose one of a, b"),
        (dict(count=0), "Example.count must be at least 1"),
        (dict(count=11), "Example.count must be at most 10"),
        (dict(count=2.5), "Example.count must be int"),
        (dict(count=True), "Example.count must be int"),
        (dict(rate=math.nan), "Example.rate must be a finite number"),
        (dict(rate=math.inf), "Example.rate must be a finite number"),
        (dict(rate="fast"), "Example.rate must be float"),
        (dict(name=None), "Example.name must not be None"),
        (dict(on="yes"), "Example.on must be bool"),
        (dict(limit=-1), "Example.limit must be at least 0"),
    ],
)
def test_bad_values_are_refused_naming_the_field(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Example(**changes)


def test_unknown_keys_and_parsers() -> None:
    with pytest.raises(SettingsError, match="has no setting 'cuont'"):
        Example.from_dict({"cuont": 3})
    assert parse_ints("1, 2,4") == (1, 2, 4) and parse_range("2-8") == (2, 8)
    for bad in ("", "0", "a", "1,-2"):
        with pytest.raises(SettingsError):
            parse_ints(bad)
    for bad in ("8-2", "2", "a-b", "0-3"):
        with pytest.raises(SettingsError):
            parse_range(bad)
    assert issubclass(SettingsError, ValueError)
