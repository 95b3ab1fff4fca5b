"""Embedding: backbone (model + preprocessing + identity), loader (decode in workers), runner."""

from ctfp.embed.backbone import Backbone, Identity, Preprocessing, build_backbone
from ctfp.embed.runner import EmbedResult, embed

__all__ = ["Backbone", "EmbedResult", "Identity", "Preprocessing", "build_backbone", "embed"]
