"""Command-line options built from the settings objects: one helper, no hand-written lists."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ctfp.settings import Settings, SettingsError, field_types

S = TypeVar("S", bound=Settings)


def _parser_of(parse: Callable[[str], Any] | None, types: tuple[type, ...]) -> Callable[[str], Any]:
    """A type function for argparse that keeps the settings' error message."""
    parse = parse or next((t for t in (int, float) if t in types), str)

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, SettingsError) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"cannot read {text!r}") from None

    return convert


def _help(meta: dict[str, Any], default: Any) -> str:
    text = meta["help"]
    if "default" not in text and default is not None and not isinstance(default, bool):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text += f" (default {shown})"
    return text


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type[Settings],
    *,
    exclude: Iterable[str] = (),
    seen: set[str] | None = None,
    help: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one option per command-line field of ``cls`` to ``parser`` and return their names.

    ``default=SUPPRESS``: the namespace holds only what the user typed, so :func:`from_args`
    can tell a given option from a default. ``seen`` collects the names added, so settings
    sharing a field add it once; ``help`` replaces the help of some fields.
    """
    hints = typing.get_type_hints(cls)
    excluded = set(exclude)
    added = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = f.metadata
        if not meta.get("cli", True) or f.name in excluded:
            continue
        if seen is not None:
            if f.name in seen:
                continue
            seen.add(f.name)
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        types, _ = field_types(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if bool in types:
            kwargs["action"] = "store_false" if f.default is True else "store_true"
        else:
            kwargs["type"] = _parser_of(meta.get("parse"), types)
            if meta.get("choices") is not None:
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        text = (help or {}).get(f.name) or _help(meta, f.default)
        parser.add_argument(flag, help=text, **kwargs)
        added.append(f.name)
    return added


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among ``names`` that the user gave."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def from_args(cls: type[S], args: argparse.Namespace, **fixed: Any) -> S:
    """``cls`` from the options the user gave (defaults for the rest) and ``fixed`` values."""
    return cls(**{**given(args, cls.field_names()), **fixed})


__all__ = ["add_settings", "from_args", "given"]
