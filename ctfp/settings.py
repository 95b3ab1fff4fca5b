"""Settings objects: one frozen, typed dataclass per stage, validated once when it is made.

Each field is declared with :func:`option`: its default, help text, valid choices and bounds live
there and nowhere else. The command line builds its options from these fields
(:mod:`ctfp.cli.options`), the Python API takes the objects, and run folders record
:meth:`Settings.to_dict`, so what ran is always written down the same way.

    @dataclass(frozen=True)
    class ScoreSettings(Settings):
        batch_size: int = option(16_384, "rows per batch (memory)", minimum=1)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from ctfp.exceptions import CtfpError

S = TypeVar("S", bound="Settings")


class SettingsError(CtfpError, ValueError):
    """A setting has a value outside what its stage accepts."""


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], None] | None = None,
    cli: bool = True,
) -> Any:
    """A settings field: its ``default`` (immutable: tuples, not lists) and one ``help`` line
    for ``--help`` and the README. ``choices``: the valid values; ``minimum``, ``maximum``:
    inclusive bounds of a number (a float must be finite too); ``flag`` (default
    ``--field-name``), ``metavar`` and ``parse`` (of the text): the command line's; ``check``:
    extra validation of a non-None value, raising ``ValueError``; ``cli=False``: API only."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "choices": tuple(choices) if choices is not None else None,
            "minimum": minimum,
            "maximum": maximum,
            "flag": flag,
            "metavar": metavar,
            "parse": parse,
            "check": check,
            "cli": cli,
        },
    )


def field_types(annotation: Any) -> tuple[tuple[type, ...], bool]:
    """The runtime types a field annotation admits, and whether None is one of them."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        found = [t for arg in args if arg is not type(None) for t in field_types(arg)[0]]
        return tuple(found), type(None) in args
    if origin is not None:  # tuple[int, ...] and the like
        return (origin,), False
    if annotation is Any:
        return (object,), True
    return (annotation,), False


class Settings:
    """Base of the settings dataclasses: validation on creation, dict round trips, replace."""

    #: The stage these settings belong to, as recorded in summaries (e.g. ``"embed"``).
    stage: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            self._check_field(f, hints[f.name], getattr(self, f.name))
        self.validate()

    def validate(self) -> None:
        """Rules across fields; override in a stage's settings (called after the field checks)."""

    def _check_field(self, f: dataclasses.Field, annotation: Any, value: Any) -> None:
        where = f"{type(self).__name__}.{f.name}"
        allowed, nullable = field_types(annotation)
        if value is None:
            if not nullable:
                raise SettingsError(f"{where} must not be None")
            return
        if isinstance(value, bool) and bool not in allowed and object not in allowed:
            raise SettingsError(f"{where} must be {_names(allowed)}, got {value!r}")
        if tuple in allowed and isinstance(value, list):  # JSON gives lists back
            value = tuple(value)
        elif float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        object.__setattr__(self, f.name, value)
        if not isinstance(value, allowed):
            raise SettingsError(f"{where} must be {_names(allowed)}, got {value!r}")
        meta = f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{where} must be a finite number, got {value!r}")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise SettingsError(
                f"unknown {f.name.replace('_', ' ')} {value!r} ({where}); choose one of "
                f"{', '.join(map(str, choices))}"
            )
        low, high = meta.get("minimum"), meta.get("maximum")
        if isinstance(value, int | float):
            if low is not None and value < low:
                raise SettingsError(f"{where} must be at least {low:g}, got {value!r}")
            if high is not None and value > high:
                raise SettingsError(f"{where} must be at most {high:g}, got {value!r}")
        check = meta.get("check")
        if check is not None:
            try:
                check(value)
            except (ValueError, CtfpError) as exc:
                raise SettingsError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples become lists)."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        """Settings from :meth:`to_dict` output; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(
                f"{cls.__name__} has no setting {', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(sorted(names))}"
            )
        return cls(**values)  # lists become tuples where a tuple is due (_check_field)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _names(types_: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types_)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Settings):
        return value.to_dict()
    return value


def parse_ints(text: str) -> tuple[int, ...]:
    """``"4"`` or ``"1,2,4,8"`` -> a tuple of positive integers."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SettingsError(f"expected integers like 4 or 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise SettingsError(f"expected positive integers like 4 or 1,2,4,8, got {text!r}")
    return values


def parse_range(text: str) -> tuple[int, int]:
    """``"2-8"`` -> ``(2, 8)``, with 1 <= low <= high."""
    try:
        lo, hi = (int(v) for v in str(text).split("-"))
    except ValueError:
        raise SettingsError(f"expected LOW-HIGH like 2-8, got {text!r}") from None
    if not 1 <= lo <= hi:
        raise SettingsError(f"a range needs 1 <= LOW <= HIGH, got {text!r}")
    return lo, hi


__all__ = ["Settings", "SettingsError", "option", "parse_ints", "parse_range"]
