"""``ctfp run task2 --method auto``: choose how to attribute by cross-validation on the labels.

When ``train/<group>/`` holds labelled samples of each known generator, every candidate (a
feature type x a way to attribute x its few settings) is scored on them out of fold: repeated
stratified k-fold over the groups, so every training part holds samples of every generator
and a generator's samples are never only in the held-out fold. The ways to attribute:

- ``classify``: a linear classifier of the group (logistic regression or shrunk LDA, with or
  without PCA; :class:`~ctfp.attribution.classify.GroupClassifier`), fitted on the training part;
- ``semi``: the Gaussian mixture of the test slices started from the training part's group
  means (the paper's GMM, semi-supervised), its components named by the training part.

Each is measured by the adjusted Rand index (ARI) of its out-of-fold predictions against the
groups (mean over repeats), with a bootstrap interval. The winner: the best mean ARI,
simplified within its family (same features and way) by the one-standard-error rule on the
paired gap to the best, as for task 1 (:mod:`ctfp.membership.selection`).

The open set is cross-conformal (Vovk 2015): in each fold the winner's model gives the
held-out labelled slices and every test slice a log density under its best known group; a test
slice's p-value is ``(1 + the held-out slices at most as likely) / (n + 1)``, counted over the
folds of the first repeat. A slice of a known generator has ``p <= reject`` with probability
about ``reject``, so ``p <= reject`` is "unknown" at that false-rejection rate; the densities
are only compared within one fold's model, never across models of different sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctfp.attribution.classify import GroupClassifier
from ctfp.attribution.clustering import Clustering, cluster_slices
from ctfp.attribution.settings import SelectionSettings
from ctfp.evaluate import bootstrap_indices
from ctfp.exceptions import InputError
from ctfp.membership.selection import simplest_within_one_se, stratified_folds
from ctfp.progress import logger

#: The ways to attribute with labels, simplest first (it breaks exact ties between families).
WAYS = ("classify", "semi")


@dataclass(frozen=True)
class Candidate:
    """One way to attribute: a feature type, ``classify`` or ``semi``, and its settings."""

    features: str
    way: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def family(self) -> tuple[str, str]:
        return self.features, self.way

    @property
    def complexity(self) -> float:
        """Within a family: fewer PCA components first, none (every feature) last; LDA before
        logistic regression."""
        pca = self.params.get("pca")
        rank = 0.5 * (self.params.get("model") == "lr")
        return WAYS.index(self.way) + rank + (1.0 if pca is None else 0.01 * math.log2(pca))

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.features} / {self.way}" + (f" ({shown})" if shown else "")

    def fit(
        self, x: np.ndarray, groups: np.ndarray, test: np.ndarray, seed: int, device: str
    ) -> Attributor:
        """Fit on labelled rows ``x`` of ``groups`` (and, for ``semi``, the test slices)."""
        if self.way == "classify":
            model = GroupClassifier(random_state=seed, **self.params).fit(x, groups)
            return Attributor(model, [str(c) for c in model.classes_])
        if self.way == "semi":
            clustering = cluster_slices(
                test,
                train_x=x,
                train_groups=groups,
                seed=seed,
                device=device,
                covariance_type=self.params.get("covariance", "full"),
                pca=self.params.get("pca"),
            )
            density = GroupClassifier(random_state=seed).fit(x, groups, density_only=True)
            return Attributor(clustering, name_components(clustering, x, groups), density)
        raise ValueError(f"unknown way to attribute {self.way!r}; choose from {', '.join(WAYS)}")


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
        """(n,) log density under the most likely known group, each group a Gaussian fitted
        on its labelled slices only (:meth:`GroupClassifier.log_density`; never the mixture's
        density, which is fitted on the test slices and so explains an unknown generator's
        slices too)."""
        model = self.density or self.model
        assert isinstance(model, GroupClassifier)
        return model.log_density(x)


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
    """For each feature type: logistic regression (PCA 32, every feature), shrunk LDA (PCA 32,
    every feature) and the semi-supervised mixture (PCA 8 and 16, full covariances), where the
    labelled slices allow the PCA."""
    out: list[Candidate] = []
    for f in features:
        for model in ("lda", "lr"):
            out += [Candidate(f, "classify", {"model": model, "pca": p}) for p in (32, None)]
        out += [Candidate(f, "semi", {"pca": p}) for p in (8, 16)]
    return [c for c in out if c.params.get("pca") is None or c.params["pca"] < n_labelled]


@dataclass
class Trial:
    """What cross-validation measured for one candidate."""

    candidate: Candidate
    ari: float = float("nan")  # mean over repeats of the pooled out-of-fold ARI
    ari_sd: float = 0.0
    accuracy: float = float("nan")
    ari_se: float = float("nan")
    interval: tuple[float, float] = (float("nan"), float("nan"))
    gap_se: float = float("nan")
    oof: np.ndarray | None = None  # (n,) out-of-fold group names, first repeat
    oof_density: np.ndarray | None = None  # (n,) out-of-fold log densities, first repeat
    test_counts: np.ndarray | None = None  # (m,) held-out slices at most as likely (module doc)
    error: str | None = None
    chosen: bool = False
    within_one_se: bool = False

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "features": c.features,
            "method": c.way,
            "params": dict(c.params),
            "label": c.label,
            "ari": _round(self.ari),
            "ari_sd": _round(self.ari_sd),
            "accuracy": _round(self.accuracy),
            "ari_se": _round(self.ari_se),
            "ari_95": [_round(v) for v in self.interval],
            "gap_se": _round(self.gap_se),
            "complexity": round(c.complexity, 3),
            "within_one_se": self.within_one_se,
            "chosen": self.chosen,
            "error": self.error,
        }


def _round(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


@dataclass
class Selection:
    """Every trial (best first) and the winner, whose fold models give the open set."""

    trials: list[Trial]
    best: Trial
    settings: SelectionSettings
    n_labelled: int
    groups: list[str]
    rule: str = "one-standard-error (paired)"

    def open_set_pvalues(self) -> np.ndarray | None:
        """(m,) conformal p-value of each test slice under the winner: the fraction of held-out
        labelled slices (pooled over the folds of the first repeat, each against its fold's
        model) at most as likely under their best known group as the test slice; small means
        it fits no known group. None when the open set is off (``reject`` 0)."""
        counts = self.best.test_counts
        if counts is None:
            return None
        return (1.0 + counts) / (self.n_labelled + 1.0)

    def reason(self) -> str:
        top = max((t for t in self.trials if t.error is None), key=lambda t: t.ari)
        b = self.best
        if top is b:
            return (
                f"{b.candidate.label} had the highest cross-validated ARI, {b.ari:.3f} "
                f"(95 % interval {b.interval[0]:.3f}-{b.interval[1]:.3f}; accuracy "
                f"{b.accuracy:.3f})"
            )
        return (
            f"{b.candidate.label} (ARI {b.ari:.3f}) is the simplest setting of the best family "
            f"within one paired standard error ({b.gap_se:.3f}) of its best, "
            f"{top.candidate.label} ({top.ari:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "settings": self.settings.to_dict(),
            "n_labelled": self.n_labelled,
            "groups": self.groups,
            "chosen": self.best.to_dict(),
            "reason": self.reason(),
            "candidates": [t.to_dict() for t in self.trials],
        }


def _ari(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(truth, pred))


def cross_validate(
    candidate: Candidate,
    x: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
    settings: SelectionSettings,
    seed: int,
    device: str,
) -> Trial:
    """Out-of-fold group predictions and ARI of one candidate (see the module docstring)."""
    trial = Trial(candidate)
    names = sorted(set(groups.tolist()))
    codes = np.searchsorted(names, groups.astype(str))
    try:
        aris, accs, first, density = [], [], None, None
        counts = np.zeros(len(test), dtype=np.int64)
        for r in range(settings.repeats):
            fold = stratified_folds(codes, settings.folds, seed + r)
            oof = np.empty(len(groups), dtype=object)
            dens = np.empty(len(groups))
            for f in range(settings.folds):
                held = fold == f
                model = candidate.fit(x[~held], groups[~held], test, seed, device)
                oof[held] = model.predict_groups(x[held])
                dens[held] = model.log_density(x[held])
                if r == 0 and settings.reject > 0:  # the open set: cross-conformal counts
                    on_test = model.log_density(test)
                    counts += np.searchsorted(np.sort(dens[held]), on_test, side="right")
            if not np.isfinite(dens).all():
                raise ValueError("non-finite out-of-fold log densities")
            aris.append(_ari(groups, oof))
            accs.append(float((oof == groups).mean()))
            if first is None:
                first, density = oof, dens
    except Exception as exc:  # a candidate that cannot run here is reported, not fatal
        trial.error = f"{type(exc).__name__}: {exc}"
        return trial
    trial.ari = float(np.mean(aris))
    trial.ari_sd = float(np.std(aris, ddof=1)) if len(aris) > 1 else 0.0
    trial.accuracy = float(np.mean(accs))
    trial.oof, trial.oof_density = first, density
    trial.test_counts = counts if settings.reject > 0 else None
    return trial


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
    """Cross-validate every candidate on the labelled slices and choose (module docstring).

    Parameters
    ----------
    data
        For each feature type: (labelled slices (n, d), test slices (m, d)); the labelled rows
        of every feature type are the same slices in the same order.
    groups
        (n,) group (generator) name of each labelled slice.
    """
    settings = settings or SelectionSettings()
    g = np.asarray([str(v) for v in groups], dtype=object)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise InputError(f"attribution with labels needs at least 2 groups in train/, got {names}")
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
    missing = sorted({c.features for c in candidates} - set(data))
    if missing:
        raise ValueError(f"no embeddings given for the candidates' features {missing}")
    trials = []
    for c in progress(candidates) if progress else candidates:
        x, test = data[c.features]
        trials.append(cross_validate(c, x, g, test, settings, seed, device))
    ok = [t for t in trials if t.error is None]
    if not ok:
        reasons = "; ".join(f"{t.candidate.label}: {t.error}" for t in trials[:3])
        raise ValueError(f"no attribution candidate could be evaluated ({reasons})")
    idx = bootstrap_indices(np.searchsorted(names, g.astype(str)), settings.bootstrap, seed)
    boot = {id(t): np.array([_ari(g[i], t.oof[i]) for i in idx]) for t in ok}  # type: ignore[index]
    for t in ok:
        values = boot[id(t)]
        t.ari_se = float(values.std(ddof=1))
        lo, hi = np.percentile(values, [2.5, 97.5])
        t.interval = (float(lo), float(hi))
    top = max(ok, key=lambda t: (t.ari, -t.candidate.complexity))
    for t in ok:
        t.gap_se = float((boot[id(top)] - boot[id(t)]).std(ddof=1))
    best = simplest_within_one_se(ok, top, lambda t: t.ari, lambda t: t.gap_se)
    order = sorted(trials, key=lambda t: (t.error is not None, -np.nan_to_num(t.ari, nan=-9)))
    return Selection(order, best, settings, len(g), names)


__all__ = [
    "WAYS",
    "Attributor",
    "Candidate",
    "Selection",
    "Trial",
    "cross_validate",
    "default_candidates",
    "name_components",
    "select",
]
