"""Task 1, membership: one interface, a registry of methods, thresholds and run settings.

The methods load scikit-learn and FAISS, so they are imported on first use: the settings and
options (which the command line's parser reads) stay light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "CRITERIA": "ctfp.membership.options",
    "METHODS": "ctfp.membership.registry",
    "CentroidMembership": "ctfp.membership.centroid",
    "MembershipMethod": "ctfp.membership.base",
    "ProximityMembership": "ctfp.membership.proximity",
    "ProximitySettings": "ctfp.membership.options",
    "Task1Settings": "ctfp.membership.settings",
    "choose_threshold": "ctfp.membership.threshold",
    "get_method": "ctfp.membership.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctfp.membership' has no attribute {name!r}")


__all__ = sorted(_LAZY)
