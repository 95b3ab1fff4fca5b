"""Device and precision choice, resolved once at the edge and never silently changed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ctfp.exceptions import DeviceError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device_name(device: str) -> None:
    """Refuse a device name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (without
    importing torch: settings objects validate with it)."""
    name, _, number = str(device).partition(":")
    if name not in DEVICES or (number and (name != "cuda" or not number.isdigit())):
        raise DeviceError(
            f"unknown device {device!r}; choose one of {', '.join(DEVICES)} or cuda:N"
        )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device; asking for missing CUDA is an error."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    check_device_name(device)
    name = device.split(":")[0]
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} was asked for but CUDA is not available here "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN can run bf16 convolutions in hardware (AMX or AVX512-BF16): there bf16
    is faster than fp32, elsewhere it is emulated and slower."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return torch.backends.mkldnn.is_available() and any(
        bool(getattr(cpu, name, lambda: False)()) for name in checks
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """Resolve ``auto`` to a concrete precision for ``device``; refuse what cannot run there."""
    import torch

    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            raise DeviceError("this GPU has no bf16 support; use --precision fp16 or fp32")
        return precision
    if precision == "auto":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> Callable[[], AbstractContextManager[object]]:
    """A factory of autocast contexts for ``precision`` (fp32: a no-op context)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
