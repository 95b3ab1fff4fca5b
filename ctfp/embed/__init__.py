"""Embedding: settings, reader -> mapper -> writer, the runner and the cache builder (lazy)."""

from __future__ import annotations

import sys
import types
from typing import Any

from ctfp._lazy import lazy

# Lazy, so that importing one stage (ctfp.embed.mapper in a Ray actor, say) does not import
# the runner, the engines or the other stages.
_LAZY = {
    "embed": "ctfp.embed.runner",
    "embed_many": "ctfp.embed.runner",
    "build_cache": "ctfp.embed.cache",
    "EmbedResult": "ctfp.embed.writer",
    "Job": "ctfp.embed.job",
    "Output": "ctfp.embed.job",
    "Mapper": "ctfp.embed.mapper",
    "forward": "ctfp.embed.mapper",
    "build_features": "ctfp.embed.features",
    "Backbone": "ctfp.embed.backbone",
    "Identity": "ctfp.embed.backbone",
    "Preprocessing": "ctfp.embed.backbone",
    "build_backbone": "ctfp.embed.backbone",
    "CacheSettings": "ctfp.embed.settings",
    "EmbedSettings": "ctfp.embed.settings",
    "InputSettings": "ctfp.embed.settings",
    "FEATURES": "ctfp.embed.settings",
}
__all__ = sorted(_LAZY)


__getattr__ = lazy(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _CallableModule(types.ModuleType):
    """``ctfp.embed`` is both this subpackage and the function: once the subpackage is imported,
    Python binds the name ``ctfp.embed`` to it, so calling it must still embed."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ctfp.embed.runner import embed

        return embed(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
