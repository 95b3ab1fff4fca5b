"""One run, engine-neutral: what the runner (or the cache builder) hands to an engine."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ctfp.io.fs import PathLike
from ctfp.io.sources import InputFile, Unreadable
from ctfp.io.window import MAX_PIXELS, Window, parse_window
from ctfp.settings import Settings, SettingsError
from ctfp.store.schema import make_metadata

if TYPE_CHECKING:
    import torch

    from ctfp.embed.settings import InputSettings

# Builds a feature extractor, (b, 1, s, s) uint8 -> (b, dim) with .preprocessing and .identity,
# once per process that runs it (every Ray actor): it must pickle.
ModelFactory = Callable[[], "torch.nn.Module"]

S = TypeVar("S", bound=Settings)

# Keyword arguments renamed in 0.3: still taken, with a warning, until the next release.
_RENAMED = {"seed": "weights_seed"}
# Keyword arguments of the old embed() that moved: the error says where they went.
_MOVED = {
    "actors": "engine=EngineSettings(engine='ray', actors=...)",
    "ray_address": "engine=EngineSettings(engine='ray', ray_address=...)",
    "size": "build_cache (ctfp.embed.cache) for the decoded-slice cache",
}


@dataclass(frozen=True)
class Output:
    """One shard folder of a job and the model whose rows go there."""

    out: str
    factory: ModelFactory
    #: The stage settings that made this output (kept in its result).
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """Everything an engine needs: the inputs, how to build the models, where and how rows
    are stored. ``outputs`` are filled from the same decoded slices, each as a job of that
    output alone would fill it. The other fields are the settings of the same names
    (``window`` parsed; ``dtype`` ``uint8`` for a cache); engines resolve ``auto`` and None.
    """

    files: Sequence[InputFile]
    outputs: Sequence[Output]
    window: Window
    dtype: str
    rows_per_shard: int
    commit_seconds: float = 30.0
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    compile: bool = False
    progress: bool = True
    unreadable: Sequence[Unreadable] = ()
    # How the pixels were made, when not by decoding files with ``window`` here (cache rows).
    decoding: dict[str, Any] | None = None
    # Largest slice a decoder may produce (declared width x height), checked before decoding.
    max_pixels: int = MAX_PIXELS

    def metadata(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The shard metadata of this job for a model of ``identity`` (the same for every
        engine)."""
        decoding = dict(self.decoding or {"window": self.window.describe()})
        size = (identity.get("preprocessing") or {}).get("image_size")
        if "cached_size" in decoding and decoding["cached_size"] == size:
            # Cached at the model's size: the same pixels as decoding the files (tested).
            del decoding["cached_size"]
        return make_metadata(identity, self.dtype, decoding)


def input_job(
    sources: Sequence[PathLike] | PathLike,
    settings: InputSettings,
    outputs: Sequence[Output],
    **fields: Any,
) -> Job:
    """The job of ``outputs`` over the inputs behind ``sources``, its fields from ``settings``
    and ``fields``."""
    from ctfp.embed.reader import find_inputs  # torch: not for importing the job alone

    unreadable: list[Unreadable] = []
    files = find_inputs(sources, settings, unreadable)
    names = {f.name for f in dataclasses.fields(Job)} & set(settings.field_names())
    given = {name: getattr(settings, name) for name in names}
    given.update(window=parse_window(settings.window), **fields)
    return Job(files=files, unreadable=unreadable, outputs=tuple(outputs), **given)


def settings_with(
    cls: type[S],
    settings: S | None,
    overrides: dict[str, Any],
    caller: str,
    keywords: Sequence[str] = ("engine", "progress"),
) -> S:
    """``settings`` (default ``cls()``) with ``overrides`` applied and validated; an unknown
    name is refused with the valid ones and ``keywords`` (the caller's other arguments)."""
    if settings is None:
        settings = cls()
    elif not isinstance(settings, cls):
        raise SettingsError(
            f"{caller}() takes {cls.__name__} settings, got {type(settings).__name__}"
        )
    overrides = dict(overrides)
    for old, new in _RENAMED.items():
        if old in overrides and new in cls.field_names() and old not in cls.field_names():
            warnings.warn(
                f"{caller}(): {old}= is deprecated and will be removed in the next release; "
                f"use {new}=",
                FutureWarning,
                stacklevel=3,
            )
            overrides.setdefault(new, overrides.pop(old))
    unknown = sorted(set(overrides) - set(cls.field_names()))
    if unknown:
        name = unknown[0]
        moved = f"; use {_MOVED[name]}" if name in _MOVED else ""
        raise SettingsError(
            f"{caller}() got an unknown option {name!r}{moved}; options: "
            f"{', '.join(cls.field_names())} (and {', '.join(keywords)})"
        )
    return settings.replace(**overrides) if overrides else settings


__all__ = ["Job", "ModelFactory", "Output", "input_job", "settings_with"]
