"""The one selection core of both tasks: candidates measured out of fold, with a metric.

Every candidate (a feature type x a method x a few of its settings) is scored out of fold on
the run's labelled slices (repeated stratified k-fold): by ROC-AUC for membership (task 1), by
the adjusted Rand index for attribution (task 2), with a bootstrap standard error and 95 %
interval. The winner is the simplest setting of the best candidate's family (same features and
method) within one standard error of the best (Breiman et al. 1984; Hastie et al., ESL 7.10).
That standard error is the paired one, of the gap over the same bootstrap resamples: the
candidates share most of their noise. A named method is a one-candidate selection; each task's
candidates and what follows the choice live with the task (:mod:`ctfp.membership.selection`,
:mod:`ctfp.attribution.selection`). The winner's estimate is optimistic (the best of many).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctfp.evaluate import aucs, bootstrap_indices, stratified_folds
from ctfp.progress import logger


def auc_of(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of ``scores`` (n,) against ``y`` (n,) (1 = used)."""
    return float(aucs(y, np.asarray(scores)[None])[0])


def aris(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Adjusted Rand index of each row of ``predicted`` (b, n) against ``truth`` (n,) or
    (b, n) (group names or numbers)."""
    from sklearn.metrics import adjusted_rand_score

    truth = np.broadcast_to(truth, predicted.shape)
    return np.array([adjusted_rand_score(t, p) for t, p in zip(truth, predicted, strict=True)])


@dataclass(frozen=True)
class Metric:
    """How out-of-fold predictions are scored: ``many`` maps (b, n) truth and (b, n)
    predictions to (b,); ``pooled``: the bootstrap resamples the ``mean`` over the repeats
    (scores) or the ``first`` repeat's (labels, which cannot be averaged)."""

    name: str
    label: str
    many: Callable[[np.ndarray, np.ndarray], np.ndarray]
    pooled: str

    def __call__(self, y: np.ndarray, predicted: np.ndarray) -> float:
        return float(self.many(y, np.asarray(predicted)[None])[0])


ROC_AUC = Metric("roc_auc", "ROC-AUC", aucs, "mean")
ARI = Metric("ari", "ARI", aris, "first")


@dataclass(frozen=True)
class Candidate:
    """One thing to try: a feature type, a method and its parameters. ``complexity`` ranks
    settings within a family (lower is simpler); ``name``, where given, replaces the label."""

    features: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    complexity: float = field(default=0.0, compare=False)
    name: str | None = field(default=None, compare=False)

    @property
    def family(self) -> tuple[str, str]:
        """(features, method): candidates that differ only in their settings."""
        return self.features, self.method

    @property
    def label(self) -> str:
        """``features / method (param=value, ...)``, as the table shows it."""
        if self.name is not None:
            return self.name
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.features} / {self.method}" + (f" ({shown})" if shown else "")


def _round(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


@dataclass
class Trial:
    """What cross-validation measured for one candidate: ``score`` (mean over repeats of the
    metric), ``sd`` (over repeats), ``se`` and ``interval`` (bootstrap), ``gap_se`` (bootstrap
    SE of the best's score minus this one); ``extra``: JSON-ready figures for the table;
    ``state``: what the task keeps for after the choice."""

    candidate: Candidate
    score: float = float("nan")
    sd: float = 0.0
    se: float = float("nan")
    interval: tuple[float, float] = (float("nan"), float("nan"))
    gap_se: float = float("nan")
    heldout: float = float("nan")
    oof: np.ndarray | None = None
    error: str | None = None
    chosen: bool = False
    within_one_se: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self, metric: str) -> dict[str, Any]:
        """The trial as a row of the candidate table, its figures named after ``metric``."""
        c = self.candidate
        return {
            "features": c.features,
            "method": c.method,
            "params": dict(c.params),
            "label": c.label,
            metric: _round(self.score),
            f"{metric}_sd": _round(self.sd),
            f"{metric}_se": _round(self.se),
            f"{metric}_95": [_round(v) for v in self.interval],
            "gap_se": _round(self.gap_se),
            f"heldout_{metric}": _round(self.heldout),
            **{k: _round(v) if isinstance(v, float) else v for k, v in self.extra.items()},
            "complexity": round(c.complexity, 3),
            "within_one_se": self.within_one_se,
            "chosen": self.chosen,
            "error": self.error,
        }


@dataclass
class Measured:
    """A task's evaluation of one candidate: out-of-fold predictions (repeats, n), figures for
    the table and what to keep for after the choice."""

    predictions: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def out_of_fold(
    fit_predict: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    codes: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    dtype: Any = np.float64,
) -> np.ndarray:
    """(repeats, n) out-of-fold predictions: for each repeat ``r``, the rows are dealt into
    ``folds`` stratified by ``codes`` (seed ``seed + r``) and each fold is predicted by
    ``fit_predict(train_mask, held_mask, r)``, a model fitted on the other folds."""
    runs = []
    for r in range(repeats):
        fold = stratified_folds(codes, folds, seed + r)
        oof = np.empty(len(codes), dtype=dtype)
        for f in range(folds):
            held = fold == f
            oof[held] = fit_predict(~held, held, r)
        runs.append(oof)
    return np.stack(runs)


def measure(
    candidate: Candidate,
    evaluate: Callable[[Candidate], Measured],
    y: np.ndarray,
    metric: Metric,
) -> Trial:
    """The trial of ``candidate``: ``evaluate`` gives its out-of-fold predictions, scored by
    ``metric`` per repeat; a candidate that cannot run here is reported, not fatal."""
    trial = Trial(candidate)
    try:
        found = evaluate(candidate)
        values = metric.many(y, found.predictions)
    except Exception as exc:
        trial.error = f"{type(exc).__name__}: {exc}"
        return trial
    trial.score = float(values.mean())
    trial.sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    trial.oof = found.predictions.mean(0) if metric.pooled == "mean" else found.predictions[0]
    trial.extra, trial.state = found.extra, found.state
    return trial


def simplest_within_one_se(trials: Sequence[Trial], top: Trial) -> Trial:
    """The one-standard-error rule: mark each trial within its paired standard error (of the
    gap) of ``top``, and return the simplest of those in ``top``'s family, marked ``chosen``."""
    for t in trials:
        se = t.gap_se
        t.within_one_se = t.score >= top.score - (se if np.isfinite(se) else 0.0)
    family = [t for t in trials if t.within_one_se and t.candidate.family == top.candidate.family]
    best = min(family, key=lambda t: (t.candidate.complexity, -t.score))
    best.chosen = True
    return best


@dataclass
class Selection:
    """Every trial (best first, failures last), the winner, the rule that chose it and why;
    ``extra``: task-specific summary fields; ``rows``: the bootstrap resamples (not saved)."""

    trials: list[Trial]
    best: Trial
    top: Trial
    metric: Metric
    settings: Any
    y: np.ndarray = field(repr=False)
    rows: np.ndarray = field(repr=False)
    rule: str = "one-standard-error (paired)"
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_labelled(self) -> int:
        return len(self.y)

    def resampled(self, trial: Trial) -> np.ndarray:
        """(b,) the metric of ``trial``'s out-of-fold predictions on each bootstrap resample."""
        assert trial.oof is not None
        return self.metric.many(self.y[self.rows], trial.oof[self.rows])

    def add(self, trial: Trial, *, chosen: bool = False) -> Trial:
        """Measure ``trial`` (a combination of others) on the same resamples, its gap paired
        with the best single one's; put it in the table, and make it the answer if ``chosen``."""
        assert trial.oof is not None
        values = self.resampled(trial)
        trial.score = self.metric(self.y, trial.oof)
        trial.se, trial.interval = _spread(values)
        trial.gap_se = float((self.resampled(self.top) - values).std(ddof=1))
        if chosen:
            self.best.chosen = False
            self.best = trial
            trial.chosen = True
        self.trials.append(trial)
        self.trials.sort(key=_order)
        return trial

    def explain(self) -> str:
        """One sentence: why the winner won (a rule of the one-standard-error kind)."""
        b, top, name = self.best, self.top, self.metric.label
        if top is b:
            low, high = b.interval
            text = (
                f"{b.candidate.label} had the highest cross-validated {name}, {b.score:.3f} "
                f"(95 % interval {low:.3f}-{high:.3f}"
            )
            accuracy = b.extra.get("accuracy")
            return text + (f"; accuracy {accuracy:.3f})" if accuracy is not None else ")")
        return (
            f"{b.candidate.label} ({name} {b.score:.3f}) is the simplest setting of the best "
            f"family within one paired standard error ({b.gap_se:.3f}) of its best, "
            f"{top.candidate.label} ({top.score:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The selection as ``summary.json`` records it (the same shape in both tasks)."""
        name = self.metric.name
        return {
            "rule": self.rule,
            "metric": name,
            "settings": self.settings.to_dict(),
            "n_labelled": self.n_labelled,
            "chosen": self.best.to_dict(name),
            "reason": self.reason or self.explain(),
            **self.extra,
            "candidates": [t.to_dict(name) for t in self.trials],
        }


def _spread(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(values.std(ddof=1)), (float(lo), float(hi))


def _order(t: Trial) -> tuple[bool, float]:
    return t.error is not None, -np.nan_to_num(t.score, nan=-9.0)


def select(
    candidates: Sequence[Candidate],
    evaluate: Callable[[Candidate], Measured],
    y: Any,
    metric: Metric,
    settings: Any,
    *,
    codes: np.ndarray | None = None,
    features: Collection[str] | None = None,
    seed: int = 0,
    progress: Callable[[Sequence[Any]], Any] | None = None,
    what: str = "candidate",
) -> Selection:
    """Measure every candidate (:func:`measure`) and choose by the one-standard-error rule on
    the paired gaps.

    ``y`` (n,): the truth (1 = used, or group names); ``settings``: ``folds``, ``repeats`` and
    ``bootstrap``; ``codes`` (n,): the integer classes the bootstrap resamples within (default
    ``y``); ``features``: the feature types that have embeddings, if the candidates' must be
    among them; ``progress`` wraps the candidate list. Raises ValueError when a candidate's
    features are missing or no candidate could be evaluated (the first reasons named).
    """
    missing = sorted({c.features for c in candidates} - set(features or ()))
    if features is not None and missing:
        raise ValueError(f"no embeddings given for the candidates' features {missing}")
    y = np.asarray(y)
    codes = y if codes is None else codes
    trials = [
        measure(c, evaluate, y, metric) for c in (progress(candidates) if progress else candidates)
    ]
    ok = [t for t in trials if t.error is None]
    failed = [t for t in trials if t.error]
    if not ok:
        reasons = "; ".join(f"{t.candidate.label}: {t.error}" for t in trials[:3])
        raise ValueError(f"no {what} could be evaluated ({reasons})")
    if failed:
        logger.info(
            f"{len(failed)} of {len(trials)} candidates could not run, e.g. "
            f"{failed[0].candidate.label}: {failed[0].error}"
        )
    rows = bootstrap_indices(codes, settings.bootstrap, seed)
    selection = Selection(trials, ok[0], ok[0], metric, settings, y, rows)
    boot = {id(t): selection.resampled(t) for t in ok}
    for t in ok:
        # The interval measures the pooled predictions: moved to hold the score (a mean over
        # repeats) it is quoted with.
        shift = t.score - metric(y, t.oof)
        t.se, (low, high) = _spread(boot[id(t)])
        t.interval = (low + shift, min(high + shift, 1.0))  # neither metric exceeds 1
    top = max(ok, key=lambda t: (t.score, -t.candidate.complexity))
    for t in ok:
        t.gap_se = float((boot[id(top)] - boot[id(t)]).std(ddof=1))
    selection.top = top
    selection.best = simplest_within_one_se(ok, top)
    selection.trials = sorted(trials, key=_order)
    return selection


__all__ = [
    "ARI",
    "ROC_AUC",
    "Candidate",
    "Measured",
    "Metric",
    "Selection",
    "Trial",
    "aris",
    "auc_of",
    "aucs",
    "measure",
    "out_of_fold",
    "select",
    "simplest_within_one_se",
]
