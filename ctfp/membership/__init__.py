"""Task 1, membership: one interface, a registry of methods, thresholds and run settings."""

from ctfp.membership.base import MembershipMethod
from ctfp.membership.centroid import CentroidMembership
from ctfp.membership.proximity import ProximityMembership, ProximitySettings
from ctfp.membership.registry import METHODS, get_method
from ctfp.membership.settings import Task1Settings
from ctfp.membership.threshold import CRITERIA, choose_threshold

__all__ = [
    "CRITERIA",
    "METHODS",
    "CentroidMembership",
    "MembershipMethod",
    "ProximityMembership",
    "ProximitySettings",
    "Task1Settings",
    "choose_threshold",
    "get_method",
]
