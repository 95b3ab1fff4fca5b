"""Embedding: backbone (model + preprocessing + identity), loader (decode in workers), runner."""

import sys
import types
from typing import Any

from ctfp.embed.backbone import Backbone, Identity, Preprocessing, build_backbone
from ctfp.embed.runner import EmbedResult, embed

__all__ = ["Backbone", "EmbedResult", "Identity", "Preprocessing", "build_backbone", "embed"]


class _CallableModule(types.ModuleType):
    """``ctfp.embed`` is both this subpackage and the function: once the subpackage is imported,
    Python binds the name ``ctfp.embed`` to it, so calling it must still embed."""

    def __call__(self, *args: Any, **kwargs: Any) -> EmbedResult:
        return embed(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
