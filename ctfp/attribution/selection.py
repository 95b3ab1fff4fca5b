"""Task 2's side of the selection core (:mod:`ctfp.selection`): the ways to attribute with
labels, how a candidate is measured, and the open set.

With labelled samples of each known generator in ``train/<group>/``, every candidate (a
feature type x a way to attribute x its settings) is scored on them by the adjusted Rand index
of its out-of-fold predictions (repeated k-fold stratified by group). The ways: ``classify``, a
linear classifier of the group (:class:`~ctfp.attribution.classify.GroupClassifier`), and
``semi``, the Gaussian mixture of the test slices started from the labelled group means. A new
way is a fit function and one line in :data:`WAYS`.

The open set is cross-conformal (Vovk 2015): in each fold of the first repeat the model gives
the held-out labelled slices and every test slice a log density under its best known group; a
test slice's p-value is ``(1 + the held-out slices at most as likely) / (n + 1)``, so
``p <= reject`` is "unknown" at about that false-rejection rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctfp.attribution.classify import GroupClassifier
from ctfp.attribution.clustering import Clustering, cluster_slices
from ctfp.attribution.settings import SelectionSettings
from ctfp.exceptions import InputError
from ctfp.progress import logger
from ctfp.selection import ARI, Candidate, Measured, Selection, out_of_fold
from ctfp.selection import select as select_among


@dataclass
class Attributor:
    """A fitted model and the group each of its outputs (class or component) stands for."""

    model: GroupClassifier | Clustering
    groups: list[str]
    density: GroupClassifier | None = None  # the open set's group densities, if not ``model``

    def predict_groups(self, x: np.ndarray) -> np.ndarray:
        """(n,) group name of each row."""
        return np.asarray(self.groups, dtype=object)[self.model.predict(x)]

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """(n,) log density under the most likely known group (:meth:`GroupClassifier.log_density`,
        never the mixture's, which also explains an unknown generator's test slices)."""
        model = self.density or self.model
        assert isinstance(model, GroupClassifier)
        return model.log_density(x)


def fit_classifier(
    params: Mapping[str, Any],
    x: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
    seed: int,
    device: str,
) -> Attributor:
    """``classify``: a linear classifier of the group (:class:`GroupClassifier`)."""
    model = GroupClassifier(random_state=seed, **params).fit(x, groups)
    return Attributor(model, [str(c) for c in model.classes_])


def fit_mixture(
    params: Mapping[str, Any],
    x: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
    seed: int,
    device: str,
) -> Attributor:
    """``semi``: the mixture of the test slices started from the labelled groups' means, its
    components named by :func:`name_components`."""
    clustering = cluster_slices(
        test,
        train_x=x,
        train_groups=groups,
        seed=seed,
        device=device,
        covariance_type=params.get("covariance", "full"),
        pca=params.get("pca"),
    )
    density = GroupClassifier(random_state=seed).fit(x, groups, density_only=True)
    return Attributor(clustering, name_components(clustering, x, groups), density)


@dataclass(frozen=True)
class Way:
    """A way to attribute with labels: ``fit(params, x, groups, test, seed, device)``, the
    settings ``--method auto`` tries, and its ``rank`` (lower is simpler)."""

    fit: Callable[..., Attributor]
    grid: tuple[Mapping[str, Any], ...]
    rank: float


#: The ways to attribute with labels, in the order ``--method auto`` tries them.
WAYS: dict[str, Way] = {
    "classify": Way(
        fit_classifier,
        tuple({"model": m, "pca": p} for m in ("lda", "lr") for p in (32, None)),
        rank=0,
    ),
    "semi": Way(fit_mixture, tuple({"pca": p} for p in (8, 16)), rank=1),
}


def _way(name: str) -> Way:
    if name not in WAYS:
        raise ValueError(f"unknown way to attribute {name!r}; choose from {', '.join(WAYS)}")
    return WAYS[name]


def complexity(way: str, params: Mapping[str, Any]) -> float:
    """Within a family: fewer PCA components first, none (every feature) last; LDA before
    logistic regression."""
    pca = params.get("pca")
    rank = 0.5 * (params.get("model") == "lr")
    return _way(way).rank + rank + (1.0 if pca is None else 0.01 * math.log2(pca))


def candidate(features: str, way: str, params: Mapping[str, Any] | None = None) -> Candidate:
    """The candidate of ``way`` with ``params`` on ``features``."""
    params = dict(params or {})
    return Candidate(features, way, params, complexity(way, params))


def fit(
    c: Candidate, x: np.ndarray, groups: np.ndarray, test: np.ndarray, seed: int, device: str
) -> Attributor:
    """Fit candidate ``c`` on labelled rows ``x`` of ``groups`` (and, for ``semi``, the test
    slices)."""
    return _way(c.method).fit(c.params, x, groups, test, seed, device)


def name_components(model: Clustering, x: np.ndarray, groups: np.ndarray) -> list[str]:
    """The group each mixture component stands for: the assignment of components to groups
    that agrees with most labelled rows (Hungarian); a component no group matches keeps its
    best-overlapping group."""
    from scipy.optimize import linear_sum_assignment

    names = sorted(set(groups.tolist()))
    pred = model.predict(x)
    table = np.zeros((model.k, len(names)))
    for j, g in enumerate(names):
        table[:, j] = np.bincount(pred[groups == g], minlength=model.k)[: model.k]
    rows, cols = linear_sum_assignment(-table)
    out = [names[int(table[c].argmax())] for c in range(model.k)]
    for r, c in zip(rows, cols, strict=True):
        out[r] = names[c]
    return out


def default_candidates(features: Sequence[str], n_labelled: int) -> list[Candidate]:
    """For each feature type, every way's grid, where the labelled slices allow the PCA."""
    out = [
        candidate(f, name, params)
        for f in features
        for name, way in WAYS.items()
        for params in way.grid
    ]
    return [c for c in out if c.params.get("pca") is None or c.params["pca"] < n_labelled]


def evaluator(
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    groups: np.ndarray,
    codes: np.ndarray,
    settings: SelectionSettings,
    seed: int,
    device: str,
) -> Callable[[Candidate], Measured]:
    """How a candidate is measured: its out-of-fold group names, accuracy, out-of-fold log
    densities and, per test slice, how many held-out slices of the first repeat are at most as
    likely under their fold's model (the open set)."""

    def evaluate(c: Candidate) -> Measured:
        x, test = data[c.features]
        density = np.empty(len(groups))
        counts = np.zeros(len(test), dtype=np.int64)

        def fit_predict(train: np.ndarray, held: np.ndarray, repeat: int) -> np.ndarray:
            model = fit(c, x[train], groups[train], test, seed, device)
            dens = model.log_density(x[held])
            if repeat == 0:
                density[held] = dens
                if settings.reject > 0:  # the open set: cross-conformal counts
                    on_test = model.log_density(test)
                    counts[:] += np.searchsorted(np.sort(dens), on_test, side="right")
            elif not np.isfinite(dens).all():
                raise ValueError("non-finite out-of-fold log densities")
            return model.predict_groups(x[held])

        runs = out_of_fold(fit_predict, codes, settings.folds, settings.repeats, seed, object)
        if not np.isfinite(density).all():
            raise ValueError("non-finite out-of-fold log densities")
        accuracy = float(np.mean([(r == groups).mean() for r in runs]))
        state = {"density": density, "test_counts": counts if settings.reject > 0 else None}
        return Measured(runs, {"accuracy": accuracy}, state)

    return evaluate


def select(
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    groups: Sequence[Any],
    candidates: Sequence[Candidate],
    settings: SelectionSettings | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[Sequence[Any]], Any] | None = None,
) -> Selection:
    """Cross-validate every candidate on the labelled slices and choose (the core's rule).
    ``data``: for each feature type, (labelled slices (n, d), test slices (m, d)), the same
    slices in the same order; ``groups`` (n,): each labelled slice's group name."""
    settings = settings or SelectionSettings()
    g = np.asarray([str(v) for v in groups], dtype=object)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise InputError(
            "attribution with labels needs readable examples of at least 2 groups in "
            f"train/<group>/, found {names or 'none'}"
        )
    small = min(int((g == n).sum()) for n in names)
    if small < 2:
        raise InputError(
            "cross-validation needs at least 2 labelled slices per group; "
            + ", ".join(f"train/{n}/ has {c}" for n in names if (c := int((g == n).sum())) < 2)
        )
    if small < settings.folds:  # every fold must hold a slice of every group
        logger.info(
            f"task2: {settings.folds} folds asked, but the smallest labelled group has {small} "
            f"slices: {small} folds"
        )
        settings = settings.replace(folds=small)
    codes = np.searchsorted(names, g.astype(str))
    selection = select_among(
        candidates,
        evaluator(data, g, codes, settings, seed, device),
        g,
        ARI,
        settings,
        codes=codes,
        features=data,
        seed=seed,
        progress=progress,
        what="attribution candidate",
    )
    selection.extra["groups"] = names
    return selection


def open_set_pvalues(selection: Selection) -> np.ndarray | None:
    """(m,) conformal p-value of each test slice under the winner (module docstring); small
    means it fits no known group. None when the open set is off (``reject`` 0)."""
    counts = selection.best.state.get("test_counts")
    if counts is None:
        return None
    return (1.0 + counts) / (selection.n_labelled + 1.0)


__all__ = [
    "WAYS",
    "Attributor",
    "Way",
    "candidate",
    "complexity",
    "default_candidates",
    "evaluator",
    "fit",
    "name_components",
    "open_set_pvalues",
    "select",
]
