"""Task 1, membership: one interface, a registry of methods, thresholds and run settings.

The methods load scikit-learn and FAISS, so they are imported on first use: the settings and
options (which the command line's parser reads) stay light.
"""

from __future__ import annotations

from ctfp._lazy import lazy

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


__getattr__ = lazy(__name__, _LAZY)


__all__ = sorted(_LAZY)
