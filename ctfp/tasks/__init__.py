"""The two tasks: membership (was a slice used for training?) and attribution (which model?)."""

from ctfp.tasks.attribution import select_components
from ctfp.tasks.membership import CentroidMembership
from ctfp.tasks.runs import run_task1, run_task2

__all__ = ["CentroidMembership", "run_task1", "run_task2", "select_components"]
