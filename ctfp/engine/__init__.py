"""Where an embedding run executes: ``local`` (this process and its DataLoader workers) or
``ray`` (Ray Data on a local or remote Ray cluster). Both write the same shards."""

from __future__ import annotations

from types import ModuleType

from ctfp.exceptions import CtfpError

ENGINES = ("local", "ray")
RAY_INSTALL = "pip install 'ctfp[ray]'"


def check_engine(engine: str) -> str:
    """Validate ``engine`` up front: an unknown name, or ``ray`` without Ray installed, is an
    error that says what to do (never a silent fallback to the local engine)."""
    if engine not in ENGINES:
        raise CtfpError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
    return engine


def require_ray() -> ModuleType:
    """Import Ray (with Ray Data), or raise a CtfpError naming the install command."""
    try:
        import ray
        import ray.data  # the part of Ray the engine needs
    except ImportError as exc:
        raise CtfpError(
            f"--engine ray needs Ray Data, which cannot be imported here ({exc}); install it with "
            f"{RAY_INSTALL} (or pip install 'ray[data]'), or use --engine local"
        ) from None
    return ray


__all__ = ["ENGINES", "RAY_INSTALL", "check_engine", "require_ray"]
