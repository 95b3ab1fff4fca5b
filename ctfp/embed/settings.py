"""What an embedding run does: the one settings object of the embedding stage."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ctfp.device import DEVICES, PRECISIONS, check_device_name
from ctfp.io.sources import LAYOUTS
from ctfp.io.window import MAX_PIXELS, MIN_SIDE, parse_window
from ctfp.settings import Settings, SettingsError, option

#: Feature extractors (:mod:`ctfp.embed.features`); several may be joined by ``+``.
FEATURES = ("resnet50", "pixels", "spectrum", "residual")
#: Storage types of the embedding column.
EMBEDDING_DTYPES = ("float16", "float32")


#: Features whose input side may be given as ``name:size`` (``pixels:32``): no learned weights.
SIZED_FEATURES = ("pixels", "spectrum", "residual")


def parse_feature(name: str) -> tuple[str, int | None]:
    """``"pixels:32"`` -> ``("pixels", 32)``; ``"resnet50"`` -> ``("resnet50", None)``.

    Raises
    ------
    ValueError
        An unknown name, or a size on resnet50 (its side is ``image_size``) or outside 8..1024.
    """
    base, sep, size = name.strip().partition(":")
    if base not in FEATURES:
        raise ValueError(f"unknown feature {name.strip()!r}")
    if not sep:
        return base, None
    if base not in SIZED_FEATURES:
        raise ValueError(f"{base} takes no :size (its input side is --image-size)")
    if not size.isdigit() or not 8 <= int(size) <= 1024:
        raise ValueError(f"feature {name.strip()!r}: the size must be an integer from 8 to 1024")
    return base, int(size)


def check_features(spec: str) -> None:
    """Refuse a feature spec that is neither FEATURES names (``pixels:32`` with a side) joined
    by ``+`` nor ``auto``."""
    if spec.strip() == "auto":
        return
    try:
        if not spec.strip():
            raise ValueError("empty")
        for name in spec.split("+"):
            parse_feature(name)
    except ValueError as exc:
        raise ValueError(
            f"unknown features {spec!r} ({exc}); choose from {', '.join(FEATURES)} (pixels, "
            "spectrum and residual also as name:size, e.g. pixels:32), joined by +, or auto in "
            "ctfp run"
        ) from None


def refuse_auto(features: str) -> None:
    """Refuse ``auto`` where slices are embedded: it lets ``ctfp run`` choose the features."""
    if features.strip() == "auto":
        raise SettingsError(
            "features 'auto' let `ctfp run` choose among feature types by cross-validation; "
            f"embedding needs one of {', '.join(FEATURES)} (or name:size), not auto"
        )


def parse_pixels(text: str) -> int:
    """A pixel count: ``67108864`` or ``WIDTHxHEIGHT`` (``8192x8192``)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p.strip().replace("_", "").replace(",", "")) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a pixel count (N or WIDTHxHEIGHT)") from None
    if len(values) > 2 or any(v <= 0 for v in values):
        raise ValueError(f"{text!r} is not a pixel count (N or WIDTHxHEIGHT)")
    return math.prod(values)


@dataclass(frozen=True)
class InputSettings(Settings):
    """How inputs are found and decoded, and how rows are sharded: shared by embedding and the
    decoded-slice cache."""

    stage = "input"

    workers: int | None = option(
        None,
        "decoding processes (default: on CPU 0 behind resnet50, one per core for the "
        "fingerprint features from 256 inputs on; up to 8 on CUDA)",
        minimum=0,
    )
    rows_per_shard: int = option(10_000, "rows per Parquet shard", minimum=1)
    commit_seconds: float = option(
        30.0,
        "commit a shard at least this often (seconds), so a killed run loses little",
        minimum=0.001,
    )
    window: str | None = option(
        None,
        "DICOM/NIfTI window: LEVEL,WIDTH, lung (-600,1500, the CT default), mediastinum, bone, "
        "brain, minmax, or auto",
        check=parse_window,
    )
    max_pixels: int = option(
        MAX_PIXELS,
        "largest slice decoded, in pixels (width x height, e.g. 12000x12000), checked against each "
        "file's declared size before decoding: larger files are errors of that file, not memory "
        "bombs (a file may hold 4x this in all frames)",
        minimum=MIN_SIDE * MIN_SIDE,
        metavar="PIXELS",
        parse=parse_pixels,
    )
    label_from_dirs: bool = option(False, "take each file's parent folder name as its label")
    layout: str = option(
        "auto",
        "auto: detect the ImageCLEF layout (train/<label>/, generated/, test/)",
        choices=LAYOUTS,
    )


@dataclass(frozen=True)
class EmbedSettings(InputSettings):
    """How CT slices become embedding rows: the extractor, its weights and input size, the
    device and precision, batching, and (inherited) decoding and sharding."""

    stage = "embed"

    features: str = option(
        "resnet50",
        "resnet50 (default), pixels, spectrum, residual, or several joined by +",
        check=check_features,
    )
    weights: str = option(
        "imagenet",
        "resnet50 weights: imagenet (torchvision IMAGENET1K_V2), random (seeded), or a "
        "state-dict PATH",
    )
    weights_seed: int = option(0, "seed of --weights random (default 0)")
    image_size: int = option(224, "network input side (default 224)", minimum=32, maximum=4096)
    batch_size: int | None = option(
        None,
        "slices per forward pass (default on CPU: 16 for resnet50, 64 for fingerprint features; "
        "128 on CUDA)",
        minimum=1,
    )
    device: str = option(
        "auto", f"{'|'.join(DEVICES)} or cuda:N (default auto)", check=check_device_name
    )
    precision: str = option(
        "auto",
        "auto: bf16 on CUDA and on CPUs with bf16 hardware, else fp32",
        choices=PRECISIONS,
    )
    dtype: str = option(
        "float16",
        "storage type of the embedding column (default float16)",
        choices=EMBEDDING_DTYPES,
    )
    compile: bool = option(
        False,
        "torch.compile the model: a one-off compilation for faster batches (large runs)",
    )


@dataclass(frozen=True)
class CacheSettings(InputSettings):
    """The decoded-slice cache (``ctfp cache``): slices decoded once, padded and resized."""

    stage = "cache"

    size: int = option(256, "side of the cached slices (default 256)", minimum=8, maximum=4096)


__all__ = [
    "EMBEDDING_DTYPES",
    "FEATURES",
    "SIZED_FEATURES",
    "CacheSettings",
    "EmbedSettings",
    "InputSettings",
    "check_features",
    "parse_feature",
    "refuse_auto",
]
