"""The options of each membership method and of ``--method auto`` (the command line's options
and each method's ``__init__`` defaults), importable without NumPy, scikit-learn or FAISS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctfp.index import KINDS, METRICS
from ctfp.settings import Settings, option

ESTIMATORS = ("knn", "kde")

CRITERIA = ("f1", "accuracy", "balanced")
#: How the command line describes a criterion: one of CRITERIA, or ``fpr:ALPHA``.
CRITERIA_HELP = (
    "balanced, f1, accuracy, or fpr:ALPHA (a new non-member is flagged with probability at "
    "most ALPHA; needs 1/ALPHA - 1 known non-members)"
)


def parse_criterion(criterion: str) -> tuple[str, float | None]:
    """``"balanced"`` -> ``("balanced", None)``; ``"fpr:0.05"`` -> ``("fpr", 0.05)``.

    Raises
    ------
    ValueError
        Anything else, or an ALPHA outside (0, 1).
    """
    if criterion in CRITERIA:
        return criterion, None
    name, sep, value = str(criterion).partition(":")
    if name == "fpr" and sep:
        try:
            alpha = float(value)
        except ValueError:
            alpha = float("nan")
        if 0.0 < alpha < 1.0:
            return "fpr", alpha
        raise ValueError(f"criterion {criterion!r}: fpr:ALPHA needs 0 < ALPHA < 1")
    raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA_HELP}")


def check_criterion(criterion: str) -> None:
    """The ``check`` of the settings' ``calibrate`` options."""
    parse_criterion(criterion)


def _in_unit_interval(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value!r}")


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")


def _metric(method: str, default: str) -> Any:
    """A method's ``metric`` option."""
    help = f"{method} distance: l1, l2, or cosine (L2 distance of unit vectors)"
    return option(default, help, choices=METRICS)


def _calibrate(method: str) -> Any:
    """A method's ``calibrate`` option: its threshold criterion on the training reals."""
    help = f"{method}: threshold criterion on the training reals: balanced, f1, accuracy, or "
    return option("balanced", help + "fpr:ALPHA", check=check_criterion, metavar="CRITERION")


#: How ``--method auto`` turns its table into one answer (see :class:`SelectionSettings`).
COMBINE = ("forward", "tied", "simplest")


@dataclass(frozen=True)
class SelectionSettings(Settings):
    """The options of ``--method auto``."""

    stage = "auto"

    folds: int = option(5, "auto: folds of the stratified cross-validation", minimum=2)
    repeats: int = option(
        3, "auto: repeats of the cross-validation, each with other folds", minimum=1
    )
    bootstrap: int = option(
        200, "auto: bootstrap resamples for each candidate's AUC interval", minimum=20
    )
    calibrate: str = option(
        "balanced",
        f"auto: threshold criterion on the winner's out-of-fold scores: {CRITERIA_HELP}",
        check=check_criterion,
        metavar="CRITERION",
    )
    permutations: int = option(
        99,
        "auto: label shuffles of the permutation test of the whole choice (its p-value is at "
        "least 1/(N+1); 0: no test)",
        minimum=0,
    )
    combine: str = option(
        "forward",
        "auto: forward = start from the best and add, with replacement, the candidate on its "
        "features that most raises the out-of-fold ROC-AUC of the weighted mean of standardised "
        "scores, until none raises it (Caruana et al. 2004); tied = the equal mean of every "
        "candidate on the best's features within one paired standard error of it; simplest = "
        "the simplest such setting of the best's method alone",
        choices=COMBINE,
    )


@dataclass(frozen=True)
class ProximitySettings(Settings):
    """The options of ``--method proximity``."""

    stage = "proximity"

    metric: str = _metric("proximity", "cosine")
    neighbours: int = option(
        1, "proximity: mean over this many nearest generated slices", minimum=1
    )
    reference: bool = option(
        True,
        "proximity: the score subtracts the distance to the not-used reference set (GAN-Leaks "
        "calibration); --no-reference turns it off",
        flag="--no-reference",
    )
    calibrate: str = _calibrate("proximity")
    index: str = option(
        "flat",
        "proximity: exact (flat) or approximate (ivf, hnsw; CPU) search over the generated set",
        choices=KINDS,
    )
    recall_target: float | None = option(
        0.99,
        "ivf/hnsw: tune nprobe/efSearch to the least effort reaching this recall@1 on the "
        "training reals (default 0.99)",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True)
class DensitySettings(Settings):
    """The options of ``--method density``."""

    stage = "density"

    estimator: str = option(
        "knn",
        "density: knn (k-th neighbour distance) or kde (Gaussian kernel) density estimates",
        choices=ESTIMATORS,
    )
    neighbours: int = option(5, "density knn: k of the k-th neighbour distance", minimum=1)
    bandwidth: float = option(
        1.0,
        "density kde: kernel bandwidth as a multiple of the median distance of the generated "
        "slices to their nearest other generated slice",
        check=_positive,
    )
    metric: str = _metric("density", "l2")
    calibrate: str = _calibrate("density")


@dataclass(frozen=True)
class CountingSettings(Settings):
    """The options of ``--method counting``."""

    stage = "counting"

    radius_quantile: float = option(
        0.5,
        "counting: the radius is this quantile, in (0, 1], of the training reals' distances to "
        "their nearest generated slice",
        check=_in_unit_interval,
    )
    metric: str = _metric("counting", "l2")
    calibrate: str = _calibrate("counting")


@dataclass(frozen=True)
class ReconstructionSettings(Settings):
    """The options of ``--method reconstruction``."""

    stage = "reconstruction"

    components: int = option(
        16,
        "reconstruction: principal directions of the generated set kept by the surrogate "
        "(at most generated slices - 1 and the dimension; fewer are used if so)",
        minimum=1,
    )
    normalize: bool = option(
        False,
        "reconstruction: L2-normalise every slice first, so the residual compares directions",
    )
    calibrate: str = _calibrate("reconstruction")


__all__ = [
    "COMBINE",
    "CRITERIA",
    "CRITERIA_HELP",
    "ESTIMATORS",
    "CountingSettings",
    "DensitySettings",
    "ProximitySettings",
    "ReconstructionSettings",
    "SelectionSettings",
    "check_criterion",
    "parse_criterion",
]
