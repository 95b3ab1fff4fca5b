"""What a task 2 (attribution) fit does: the Gaussian mixture's settings, in memory or streamed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctfp.cluster.options import COVARIANCE_TYPES, INIT_PARAMS
from ctfp.device import check_device_name
from ctfp.settings import Settings, SettingsError, option, parse_ints, parse_range


def parse_k(text: str) -> int | str:
    """``--k``: a positive integer or ``auto``."""
    return "auto" if str(text).strip() == "auto" else parse_ints(text)[0]


@dataclass(frozen=True)
class MixtureSettings(Settings):
    """The Gaussian mixture of task 2: components (or ``auto``: lowest BIC over ``k_range``),
    covariance, initialisation, regularisation, an optional PCA first, seed and device."""

    stage = "mixture"

    k: int | str = option(4, "number of components, or auto (lowest BIC)", parse=parse_k)
    k_range: tuple[int, ...] = option(
        (2, 8), "range searched by --k auto (default 2-8)", parse=parse_range, metavar="LOW-HIGH"
    )
    covariance_type: str = option(
        "full", "GMM covariance", choices=COVARIANCE_TYPES, flag="--covariance"
    )
    init: str = option("kmeans", "GMM initialisation", choices=INIT_PARAMS)
    reg_covar: float = option(1e-6, "added to covariance diagonals", minimum=0.0)
    pca: int | None = option(None, "project onto N principal components first", minimum=1)
    seed: int = option(0, "seed of the fit (initialisation, PCA, sampling)")
    device: str = option("auto", "auto|cpu|cuda or cuda:N for EM", check=check_device_name)

    def validate(self) -> None:
        if isinstance(self.k, str) and self.k != "auto":
            raise SettingsError(f"{type(self).__name__}.k must be a positive integer or 'auto'")
        if isinstance(self.k, int) and self.k < 1:
            raise SettingsError(f"{type(self).__name__}.k must be at least 1, got {self.k}")
        if len(self.k_range) != 2 or not 1 <= self.k_range[0] <= self.k_range[1]:
            raise SettingsError(
                f"{type(self).__name__}.k_range must be (low, high) with 1 <= low <= high, got "
                f"{self.k_range!r}"
            )

    @property
    def ks(self) -> range:
        """The k tried by ``k="auto"``."""
        return range(self.k_range[0], self.k_range[1] + 1)

    @property
    def gmm_kwargs(self) -> dict[str, Any]:
        """The :class:`~ctfp.cluster.GaussianMixture` settings these hold."""
        return dict(
            covariance_type=self.covariance_type,
            init_params=self.init,
            reg_covar=self.reg_covar,
            random_state=self.seed,
            device=self.device,
        )


#: ``--method`` (what each does: :attr:`Task2Settings.method`'s help).
TASK2_METHODS = ("auto", "classify", "semi", "gmm")


@dataclass(frozen=True)
class SelectionSettings(Settings):
    """How task 2 chooses with labels (cross-validation) and when it says "unknown"."""

    stage = "auto"

    folds: int = option(5, "folds of the stratified cross-validation on train/", minimum=2)
    repeats: int = option(2, "repeats of the cross-validation, each with other folds", minimum=1)
    bootstrap: int = option(200, "bootstrap resamples for the ARI intervals", minimum=20)
    reject: float = option(
        0.05,
        "open set: the fraction of held-out labelled slices that would be called unknown; test "
        "slices less likely than that under every known group get cluster -1 in "
        "open_set.csv (0: off)",
        minimum=0.0,
        maximum=0.5,
    )


@dataclass(frozen=True)
class Task2Settings(MixtureSettings, SelectionSettings):
    """A task 2 run on test slices in memory."""

    stage = "task2"

    method: str = option(
        "auto",
        "auto (train/<group>/ present: cross-validated choice of classify or semi and of the "
        "features; absent: gmm), classify, semi, gmm",
        choices=TASK2_METHODS,
    )
    classifier: str = option("lr", "--method classify: lr (logistic) or lda", choices=("lr", "lda"))
    k: int | str = option(
        "auto",
        "number of components, or auto (labels: the number of groups; none: lowest BIC)",
        parse=parse_k,
    )

    n_init: int = option(1, "GMM initialisations (best kept)", minimum=1)
    semi_supervised: bool = option(
        False, "start one component per train/<group>/ at the group's mean (--method semi)"
    )
    allow_collapse: bool = option(
        False,
        "accept a fit that puts every test slice in one component although k > 1 (refused by "
        "default: such a clustering attributes nothing)",
    )

    @property
    def selection(self) -> SelectionSettings:
        """The cross-validation and open-set part of these settings."""
        return SelectionSettings(
            folds=self.folds, repeats=self.repeats, bootstrap=self.bootstrap, reject=self.reject
        )


@dataclass(frozen=True)
class ClusterSettings(MixtureSettings):
    """A mixture over shards too large for memory (``ctfp cluster``): a seeded sample starts
    it, then each EM pass streams the shards."""

    stage = "cluster"

    sample: int = option(50_000, "rows that start the fit", minimum=1)
    passes: int = option(20, "most EM passes over the shards", minimum=1)
    tol: float = option(1e-3, "stop when the mean log-likelihood moves less", minimum=0.0)
    batch_size: int = option(65_536, "rows per batch (memory)", minimum=1)
    allow_collapse: bool = option(
        False,
        "accept a fit that puts every sampled row in one component although k > 1 (refused by "
        "default: such a clustering separates nothing)",
    )


__all__ = [
    "TASK2_METHODS",
    "ClusterSettings",
    "MixtureSettings",
    "SelectionSettings",
    "Task2Settings",
    "parse_k",
]
