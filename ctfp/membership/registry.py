"""The membership methods by name: adding one is a module and a line here. Each class is
imported on first use, so that listing the methods imports neither scikit-learn nor FAISS.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ctfp.membership.options import (
    CountingSettings,
    DensitySettings,
    ProximitySettings,
    ReconstructionSettings,
)
from ctfp.settings import Settings

if TYPE_CHECKING:
    from ctfp.membership.base import MembershipMethod

#: name -> (its class as ``module:Class``, its options class or None), in the order
#: ``--method auto`` tries them (each with its ``grid()`` of settings)
REGISTRY: dict[str, tuple[str, type[Settings] | None]] = {
    "centroid": ("ctfp.membership.centroid:CentroidMembership", None),
    "proximity": ("ctfp.membership.proximity:ProximityMembership", ProximitySettings),
    "counting": ("ctfp.membership.counting:CountingMembership", CountingSettings),
    "reconstruction": (
        "ctfp.membership.reconstruction:ReconstructionMembership",
        ReconstructionSettings,
    ),
    "density": ("ctfp.membership.density:DensityRatioMembership", DensitySettings),
}


class _Methods(Mapping[str, "type[MembershipMethod]"]):
    """The registered classes by name; a class is imported when it is first looked up."""

    def __getitem__(self, name: str) -> type[MembershipMethod]:
        module, _, attr = REGISTRY[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return f"METHODS({', '.join(REGISTRY)})"


METHODS: Mapping[str, type[MembershipMethod]] = _Methods()


def get_method(name: str) -> type[MembershipMethod]:
    """The method class registered as ``name``; an unknown name lists the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown membership method {name!r}; choose one of {', '.join(REGISTRY)}")
    return METHODS[name]


def options_of(name: str) -> type[Settings] | None:
    """The options class of method ``name`` (None: it has no options), without importing it."""
    if name not in REGISTRY:
        get_method(name)  # the error that lists the valid names
    return REGISTRY[name][1]


def parameter_names(cls: type[MembershipMethod]) -> set[str]:
    """The keyword parameters of a method's ``__init__`` (its ``get_params`` keys)."""
    signature = inspect.signature(cls.__init__)
    return {n for n, p in signature.parameters.items() if n != "self" and p.kind != p.VAR_KEYWORD}


def instantiate(
    cls: type[MembershipMethod], params: Mapping[str, Any], seed: Any, device: str
) -> MembershipMethod:
    """``cls(**params)``, seeded with ``seed`` and on ``device`` where ``cls`` takes a
    ``random_state`` and a ``device`` that ``params`` does not set."""
    params = dict(params)
    names = parameter_names(cls)
    if "random_state" in names:
        params.setdefault("random_state", seed)
    if "device" in names:
        params.setdefault("device", device)
    return cls(**params)


__all__ = ["METHODS", "REGISTRY", "get_method", "instantiate", "options_of", "parameter_names"]
