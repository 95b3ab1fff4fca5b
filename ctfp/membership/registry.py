"""The membership methods by name: adding one is a module and a line here."""

from __future__ import annotations

import inspect

from ctfp.membership.base import MembershipMethod
from ctfp.membership.centroid import CentroidMembership
from ctfp.membership.counting import CountingMembership
from ctfp.membership.density import DensityRatioMembership
from ctfp.membership.proximity import ProximityMembership
from ctfp.membership.reconstruction import ReconstructionMembership

METHODS: dict[str, type[MembershipMethod]] = {
    CentroidMembership.name: CentroidMembership,
    ProximityMembership.name: ProximityMembership,
    DensityRatioMembership.name: DensityRatioMembership,
    CountingMembership.name: CountingMembership,
    ReconstructionMembership.name: ReconstructionMembership,
}


def get_method(name: str) -> type[MembershipMethod]:
    """The method class registered as ``name``; an unknown name lists the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown membership method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def parameter_names(cls: type[MembershipMethod]) -> set[str]:
    """The keyword parameters of a method's ``__init__`` (its ``get_params`` keys)."""
    signature = inspect.signature(cls.__init__)
    return {n for n, p in signature.parameters.items() if n != "self" and p.kind != p.VAR_KEYWORD}


__all__ = ["METHODS", "get_method", "parameter_names"]
