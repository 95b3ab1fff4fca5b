"""``--method auto``: choose the membership scorer by cross-validation on the labelled reals.

A default tuned on one benchmark is a guess on the next dataset. Here every run measures: each
candidate scorer (a feature type x a method x a few of its settings) is scored out of fold on
the run's own labelled training reals (repeated stratified k-fold; a method that learns nothing
from the labels, :attr:`~ctfp.membership.base.MembershipMethod.uses_labels` false, is fitted
once and its training scores are already out of sample), its ROC-AUC estimated with a
bootstrap standard error and 95 % interval. The winner is the candidate with the highest mean
AUC, simplified by the one-standard-error rule within its family (same features and method):
the simplest setting of that family whose mean AUC is within one standard error of the best
(Breiman et al. 1984; Hastie et al., *Elements of Statistical Learning*, 7.10) — fewer
components, neighbours or centres, no reference set. Every candidate is scored on the same
slices, so their estimates share most of their noise: the standard error that decides is the
paired one, of the difference between the two AUCs over the same bootstrap resamples, not the
error of either alone (which calls nearly every pair of settings tied and so always picks the
simplest; measured: 16 PCA components over 64 on all three seeds of the PCA benchmark, 64 being
the better on each test set). Across families there is no order of simplicity to trust
(measured: ranking proximity before the PCA surrogate by hand chose the worse of two tied
candidates on a PCA-Gaussian generator), so there the data decide. The decision
threshold is then chosen on the winner's out-of-fold scores, never on scores of slices the
model was fitted on. The whole table goes into ``summary.json`` and the report.

The estimate of the winner is optimistic: it is the best of many noisy estimates (the winner's
curse), more so with few labelled slices. The table shows how far ahead it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctfp.evaluate import bootstrap_indices, stratified_folds
from ctfp.membership.base import MembershipMethod
from ctfp.membership.ensemble import EnsembleMembership, robust_scale
from ctfp.membership.options import COMBINE, SelectionSettings
from ctfp.membership.registry import get_method, parameter_names
from ctfp.membership.threshold import choose_threshold
from ctfp.progress import logger

#: At most this many additions in forward selection (each raises the out-of-fold AUC; in the
#: benchmark it stopped after at most a few, and 3, 10 and 30 gave the same answers).
FORWARD_STEPS = 30


#: How simple a method is (lower first): shown in the table, and it breaks exact ties between
#: families; the one-standard-error rule itself only compares settings within a family.
COMPLEXITY = {
    "proximity": 0,
    "counting": 1,
    "reconstruction": 2,
    "centroid": 4,
    "density": 5,
}


#: The seed method's k among the candidates: log-spaced over the paper's sweep (1 to 32).
CENTROID_KS = (1, 4, 16, 32)


@dataclass(frozen=True)
class Candidate:
    """One scorer to try: a feature type (the embeddings it reads), a registered method and
    its parameters (``__init__`` keywords)."""

    features: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def complexity(self) -> float:
        """Rank within a family for the one-standard-error rule: a reference set, a kernel
        estimate, or more neighbours, centres or components make a setting less simple."""
        base = COMPLEXITY.get(self.method, 9)
        extra = 0.5 if self.params.get("reference") else 0.0
        for name in ("k", "neighbours", "components"):
            if name in self.params:
                extra += 0.01 * math.log2(max(int(self.params[name]), 1))
        if self.params.get("estimator") == "kde":
            extra += 0.5
        return base + extra

    @property
    def family(self) -> tuple[str, str]:
        """(features, method): candidates that differ only in their settings."""
        return self.features, self.method

    @property
    def label(self) -> str:
        """``features / method (param=value, ...)``, as the table shows it; an ensemble lists
        its members' methods and settings."""
        if self.method == EnsembleMembership.name:
            specs = list(self.params.get("members", ()))
            weights = [float(m.get("weight", 1.0)) for m in specs]
            equal = len(set(weights)) <= 1
            members = []
            for m, w in zip(specs, weights, strict=True):
                name = Candidate(self.features, m["method"], m.get("params") or {}).label
                name = name.split(" / ", 1)[1]
                members.append(name if equal else f"{w / sum(weights):.2f} x {name}")
            kind = "mean" if equal else "weighted mean"
            return f"{self.features} / {kind} of {len(members)}: " + "; ".join(members)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.features} / {self.method}" + (f" ({shown})" if shown else "")

    def build(self, seed: int, device: str) -> MembershipMethod:
        ensemble = self.method == EnsembleMembership.name
        cls = EnsembleMembership if ensemble else get_method(self.method)
        params = dict(self.params)
        names = parameter_names(cls)
        if "random_state" in names:
            params.setdefault("random_state", seed)
        if "device" in names:
            params.setdefault("device", device)
        return cls(**params)


def default_candidates(
    features: Sequence[str],
    n_small: int,
    has_generated: bool,
    ks: Sequence[int] = CENTROID_KS,
) -> list[Candidate]:
    """The candidate grid for each feature type: the seed method (``ks``, default 1, 4, 16, 32,
    where the smaller training class allows), distance to the generated set (L2 and cosine, with
    and without the GAN-Leaks reference), the density ratio (kNN k = 1, 5; Gaussian KDE
    bandwidth 0.5, 1, 2 x the generated set's median nearest-neighbour distance), Monte-Carlo
    counting (radius at the 10 % and 50 % quantile) and the PCA surrogate (4, 16, 64
    components). Methods that need the generated slices are left out without them."""
    out: list[Candidate] = []
    for f in features:
        out += [Candidate(f, "centroid", {"k": k}) for k in ks if k <= n_small]
        if not has_generated:
            continue
        for metric in ("l2", "cosine"):
            for reference in (False, True):
                out.append(Candidate(f, "proximity", {"metric": metric, "reference": reference}))
        out += [Candidate(f, "counting", {"radius_quantile": q}) for q in (0.1, 0.5)]
        out += [Candidate(f, "reconstruction", {"components": c}) for c in (4, 16, 64)]
        out += [Candidate(f, "density", {"estimator": "knn", "neighbours": k}) for k in (1, 5)]
        out += [
            Candidate(f, "density", {"estimator": "kde", "bandwidth": b}) for b in (0.5, 1.0, 2.0)
        ]
    return [c for c in out if _registered(c.method)]


def _registered(name: str) -> bool:
    try:
        get_method(name)
    except ValueError:
        return False
    return True


@dataclass
class Trial:
    """What cross-validation measured for one candidate."""

    candidate: Candidate
    auc: float = float("nan")  # mean over repeats of the pooled out-of-fold AUC
    auc_sd: float = 0.0  # sd over repeats (0 for a label-free method: one fit)
    auc_se: float = float("nan")  # bootstrap standard error
    diff_se: float = float("nan")  # bootstrap SE of (best's AUC - this AUC), same resamples
    interval: tuple[float, float] = (float("nan"), float("nan"))  # bootstrap 95 %
    oof: np.ndarray | None = None  # (n,) out-of-fold scores, mean over repeats
    error: str | None = None
    chosen: bool = False
    within_one_se: bool = False
    heldout_auc: float = float("nan")  # forward selection: its AUC on held-out halves

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "features": c.features,
            "method": c.method,
            "params": dict(c.params),
            "label": c.label,
            "roc_auc": _round(self.auc),
            "roc_auc_sd": _round(self.auc_sd),
            "roc_auc_se": _round(self.auc_se),
            "roc_auc_95": [_round(v) for v in self.interval],
            "gap_se": _round(self.diff_se),
            "heldout_roc_auc": _round(self.heldout_auc),
            "complexity": round(c.complexity, 3),
            "within_one_se": self.within_one_se,
            "chosen": self.chosen,
            "error": self.error,
        }


def _round(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


@dataclass
class Selection:
    """The result of :func:`select`: every trial (best first), the winner and its threshold
    on out-of-fold scores."""

    trials: list[Trial]
    best: Trial
    threshold: float
    settings: SelectionSettings
    n_train: int
    rule: str = "one-standard-error"

    def reason(self) -> str:
        """One sentence: why the winner won."""
        b = self.best
        singles = [t for t in self.trials if t.error is None and t is not b]
        top = max((t for t in self.trials if t.error is None), key=lambda t: t.auc)
        if b.candidate.method == EnsembleMembership.name and self.rule == "forward selection":
            top = max(singles, key=lambda t: t.auc)
            members = b.candidate.params["members"]
            added = [
                Candidate(b.candidate.features, m["method"], m.get("params") or {}).label
                for m in members[1:]
            ]
            held = (
                f"; estimated on held-out halves of the labelled slices, where the "
                f"selection itself is repeated, {b.heldout_auc:.3f}"
                if np.isfinite(b.heldout_auc)
                else ""
            )
            return (
                f"forward selection from the best single scorer, {top.candidate.label} "
                f"(ROC-AUC {top.auc:.3f}), added {'; '.join(added)}: each raised the "
                f"out-of-fold ROC-AUC of the weighted mean of standardised scores, to "
                f"{b.auc:.3f} (optimistic: measured on the slices that chose the weights{held})"
            )
        if b.candidate.method == EnsembleMembership.name:
            top = max(singles, key=lambda t: t.auc)
            n = len(b.candidate.params["members"])
            return (
                f"{n} candidates on {b.candidate.features} were within one paired standard "
                f"error of the best, {top.candidate.label} (ROC-AUC {top.auc:.3f}): no one of "
                f"them is measurably better, so the answer is the mean of their standardised "
                f"scores (out-of-fold ROC-AUC {b.auc:.3f}, optimistic: measured on the slices "
                "that chose the members)"
            )
        if top is b:
            return (
                f"{b.candidate.label} had the highest cross-validated ROC-AUC, "
                f"{b.auc:.3f} (95 % interval {b.interval[0]:.3f}-{b.interval[1]:.3f})"
            )
        return (
            f"{b.candidate.label} (ROC-AUC {b.auc:.3f}) is the simplest setting of the best "
            f"family within one paired standard error ({b.diff_se:.3f}) of its best, "
            f"{top.candidate.label} ({top.auc:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "settings": self.settings.to_dict(),
            "n_train": self.n_train,
            "chosen": self.best.to_dict(),
            "threshold": self.threshold,
            "reason": self.reason(),
            "candidates": [t.to_dict() for t in self.trials],
        }


def auc_of(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney with mid-ranks for ties) of ``scores`` against ``y`` (1 = used)."""
    return float(_aucs(y, scores[None])[0])


def _aucs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of ``scores`` (b, n) against labels ``y`` (n,) or (b, n)."""
    from scipy.stats import rankdata

    y = np.broadcast_to(y, scores.shape).astype(bool)
    ranks = rankdata(scores, axis=1)
    pos = y.sum(1)
    neg = y.shape[1] - pos
    u = np.where(y, ranks, 0).sum(1) - pos * (pos + 1) / 2
    return u / np.maximum(pos * neg, 1)


def bootstrap_auc(
    y: np.ndarray, scores: np.ndarray, resamples: int, seed: int
) -> tuple[float, tuple[float, float]]:
    """Standard error and 95 % percentile interval of the AUC, resampling rows with
    replacement within each class (so every resample holds both)."""
    idx = bootstrap_indices(y, resamples, seed)
    values = _aucs(y[idx], scores[idx])
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(values.std(ddof=1)), (float(lo), float(hi))


def cross_validate(
    candidate: Candidate,
    x: np.ndarray,
    y: np.ndarray,
    generated: np.ndarray | None,
    settings: SelectionSettings,
    seed: int,
    device: str,
) -> Trial:
    """Out-of-fold scores and AUC of one candidate (see the module docstring)."""
    trial = Trial(candidate)
    try:
        probe = candidate.build(seed, device)
        if not probe.uses_labels:
            runs = [probe.fit(x, y, generated).score_samples(x)]
        else:
            runs = []
            for r in range(settings.repeats):
                fold = stratified_folds(y, settings.folds, seed + r)
                oof = np.empty(len(y))
                for f in range(settings.folds):
                    test = fold == f
                    model = candidate.build(seed, device).fit(x[~test], y[~test], generated)
                    oof[test] = model.score_samples(x[test])
                runs.append(oof)
        scores = np.stack(runs)
        if not np.isfinite(scores).all():
            raise ValueError("non-finite out-of-fold scores")
    except Exception as exc:  # a candidate that cannot run here is reported, not fatal
        trial.error = f"{type(exc).__name__}: {exc}"
        return trial
    aucs = _aucs(y, scores)
    trial.auc = float(aucs.mean())
    trial.auc_sd = float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0
    trial.oof = scores.mean(0)
    trial.auc_se, trial.interval = bootstrap_auc(y, trial.oof, settings.bootstrap, seed)
    return trial


def paired_gaps(
    top: Trial, trials: Sequence[Trial], y: np.ndarray, resamples: int, seed: int
) -> None:
    """Set each trial's ``diff_se``: the bootstrap standard error of ``top``'s AUC minus its
    own, both computed on the same resamples of the slices (class-stratified, seeded)."""
    idx = bootstrap_indices(y, resamples, seed)
    ref = _aucs(y[idx], top.oof[idx])  # type: ignore[index]
    for t in trials:
        assert t.oof is not None
        gap = ref - _aucs(y[idx], t.oof[idx])
        t.diff_se = float(gap.std(ddof=1))


def simplest_within_one_se(
    trials: Sequence[Any],
    top: Any,
    score: Callable[[Any], float],
    gap_se: Callable[[Any], float],
) -> Any:
    """The one-standard-error rule, for task 1 and task 2 alike: mark each trial whose score is
    within its paired standard error (``gap_se``, of the gap to ``top``) of ``top``'s, and
    return the simplest of those in ``top``'s family (marked ``chosen``). Trials need
    ``candidate.family``, ``candidate.complexity``, ``within_one_se`` and ``chosen``."""
    for t in trials:
        se = gap_se(t)
        t.within_one_se = score(t) >= score(top) - (se if np.isfinite(se) else 0.0)
    family = [t for t in trials if t.within_one_se and t.candidate.family == top.candidate.family]
    best = min(family, key=lambda t: (t.candidate.complexity, -score(t)))
    best.chosen = True
    return best


def ensemble_trial(
    members: Sequence[tuple[Trial, float]],
    top: Trial,
    y: np.ndarray,
    settings: SelectionSettings,
    seed: int,
) -> Trial:
    """The trial of the weighted mean of ``members``' standardised out-of-fold scores
    (:class:`~ctfp.membership.ensemble.EnsembleMembership`; ``(trial, weight)`` pairs, the first
    listed first): each member's scores centred on their median and divided by their
    interquartile range, which the candidate records so that the fitted ensemble scores on the
    scale its threshold is chosen on. Its AUC is measured on the same out-of-fold scores that
    chose the members, so it is optimistic; the gap to ``top`` is paired as for the others."""
    parts, centers, scales = _standardised([t for t, _ in members])
    weights = [float(w) for _, w in members]
    specs = [
        {
            "method": t.candidate.method,
            "params": dict(t.candidate.params),
            "weight": w,
            "center": c,
            "scale": sc,
        }
        for (t, _), w, c, sc in zip(members, weights, centers, scales, strict=True)
    ]
    candidate = Candidate(top.candidate.features, EnsembleMembership.name, {"members": specs})
    trial = Trial(candidate, within_one_se=True)
    trial.oof = np.asarray(weights) @ parts / sum(weights)
    trial.auc = auc_of(y, trial.oof)
    trial.auc_sd = float("nan")
    trial.auc_se, trial.interval = bootstrap_auc(y, trial.oof, settings.bootstrap, seed)
    idx = bootstrap_indices(y, settings.bootstrap, seed)
    assert top.oof is not None
    gap = _aucs(y[idx], top.oof[idx]) - _aucs(y[idx], trial.oof[idx])
    trial.diff_se = float(gap.std(ddof=1))
    return trial


def combine(
    tied: Sequence[Trial], top: Trial, y: np.ndarray, settings: SelectionSettings, seed: int
) -> Trial:
    """``--combine tied``: the equal mean of ``tied``'s standardised out-of-fold scores (best
    first), as :func:`ensemble_trial`."""
    ordered = sorted(tied, key=lambda t: (-t.auc, t.candidate.complexity))
    return ensemble_trial([(t, 1.0) for t in ordered], top, y, settings, seed)


def _standardised(trials: Sequence[Trial]) -> tuple[np.ndarray, list[float], list[float]]:
    """(len(trials), n): each trial's out-of-fold scores minus their median, over their IQR
    (:func:`~ctfp.membership.ensemble.robust_scale`); and those medians and ranges."""
    rows, centers, scales = [], [], []
    for t in trials:
        assert t.oof is not None
        center, scale = robust_scale(t.oof)
        rows.append((t.oof - center) / scale)
        centers.append(center)
        scales.append(scale)
    return np.asarray(rows), centers, scales


def forward_weights(
    z: np.ndarray, y: np.ndarray, start: int, steps: int = FORWARD_STEPS
) -> np.ndarray:
    """Ensemble selection with replacement (Caruana et al. 2004) on standardised scores ``z``
    (m, n): begin with row ``start`` (weight 1); at each step add 1 to the weight of the row
    that most raises the ROC-AUC of the weighted sum against ``y``, the first such row on an
    exact tie; stop when no row raises it, or after ``steps`` additions. Returns the (m,)
    integer weights."""
    counts = np.zeros(len(z))
    counts[start] = 1
    total = z[start].copy()
    current = auc_of(y, total)
    for _ in range(steps):
        aucs = _aucs(y, total[None] + z)
        j = int(np.argmax(aucs))
        if not aucs[j] > current:
            break
        counts[j] += 1
        total += z[j]
        current = float(aucs[j])
    return counts


def forward_select(
    pool: Sequence[Trial], top: Trial, y: np.ndarray, settings: SelectionSettings, seed: int
) -> Trial:
    """``--combine forward``: :func:`forward_weights` over ``pool`` (the candidates on the
    best's features, ``top`` among them), as the trial of their weighted mean; ``top`` itself
    when no candidate adds to it. The trial's ``heldout_auc`` estimates the whole procedure
    without its optimism: on 5 repeats of a stratified split of the slices into halves, the
    best and the weights are chosen on one half and the weighted mean scored on the other."""
    ordered = sorted(pool, key=lambda t: (-t.auc, t.candidate.complexity))
    z = _standardised(ordered)[0]
    start = ordered.index(top)
    counts = forward_weights(z, y, start)
    if counts.sum() == counts[start]:
        return top
    chosen = [start] + [i for i in np.flatnonzero(counts) if i != start]
    trial = ensemble_trial([(ordered[i], counts[i]) for i in chosen], top, y, settings, seed)
    held = []
    for r in range(5):
        fold = stratified_folds(y, 2, seed + 1000 + r)
        for f in range(2):
            a, b = fold != f, fold == f
            first = int(np.argmax(_aucs(y[a], z[:, a])))
            w = forward_weights(z[:, a], y[a], first)
            held.append(auc_of(y[b], w @ z[:, b]))
    trial.heldout_auc = float(np.mean(held))
    return trial


def select(
    data: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    y: Any,
    candidates: Sequence[Candidate],
    settings: SelectionSettings | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[Sequence[Any]], Any] | None = None,
) -> Selection:
    """Cross-validate every candidate and choose the best, simplified within its family by the
    one-standard-error rule.

    Parameters
    ----------
    data
        For each feature type: (training reals (n, d), generated slices (m, d) or None). The
        training rows of every feature type are the same slices in the same order.
    y
        (n,) 1 = used, 0 = not used.
    candidates
        What to try (:func:`default_candidates`); a candidate whose features are not in
        ``data`` is an error.
    progress
        Wraps the candidate list (a progress bar), or None.

    Raises
    ------
    ValueError
        No candidate could be evaluated, or a class has fewer rows than ``settings.folds``.
    """
    settings = settings or SelectionSettings()
    y = np.asarray(y).astype(np.int64)
    n_small = int(min((y == 1).sum(), (y == 0).sum()))
    if n_small < settings.folds:
        raise ValueError(
            f"cross-validation with {settings.folds} folds needs at least {settings.folds} used "
            f"and {settings.folds} not-used training slices; the smaller class has {n_small}"
        )
    missing = sorted({c.features for c in candidates} - set(data))
    if missing:
        raise ValueError(f"no embeddings given for the candidates' features {missing}")
    trials = []
    for c in progress(candidates) if progress else candidates:
        x, generated = data[c.features]
        trials.append(cross_validate(c, x, y, generated, settings, seed, device))
    ok = [t for t in trials if t.error is None]
    if not ok:
        reasons = "; ".join(f"{t.candidate.label}: {t.error}" for t in trials[:3])
        raise ValueError(f"no membership candidate could be evaluated ({reasons})")
    top = max(ok, key=lambda t: (t.auc, -t.candidate.complexity))
    paired_gaps(top, ok, y, settings.bootstrap, seed)
    best = simplest_within_one_se(ok, top, lambda t: t.auc, lambda t: t.diff_se)
    same = [t for t in ok if t.candidate.features == top.candidate.features]
    tied = [t for t in same if t.within_one_se]
    rule = "one-standard-error"
    ensemble = None
    if settings.combine == "forward":
        found = forward_select(same, top, y, settings, seed)
        ensemble = found if found is not top else None
        rule = "forward selection" if ensemble else rule
    elif settings.combine == "tied" and len(tied) > 1:
        ensemble = combine(tied, top, y, settings, seed)
        rule = "tied mean"
    if ensemble is not None:
        best.chosen = False
        best = ensemble
        best.chosen = True
        trials.append(best)
    assert best.oof is not None
    threshold = choose_threshold(best.oof, y, settings.calibrate)
    order = sorted(trials, key=lambda t: (t.error is not None, -np.nan_to_num(t.auc, nan=-1)))
    failed = [t for t in trials if t.error]
    if failed:
        logger.info(
            f"auto: {len(failed)} of {len(trials)} candidates could not run, e.g. "
            f"{failed[0].candidate.label}: {failed[0].error}"
        )
    return Selection(order, best, threshold, settings, len(y), rule)


__all__ = [
    "CENTROID_KS",
    "COMBINE",
    "COMPLEXITY",
    "Candidate",
    "Selection",
    "SelectionSettings",
    "Trial",
    "auc_of",
    "bootstrap_auc",
    "combine",
    "cross_validate",
    "default_candidates",
    "ensemble_trial",
    "forward_select",
    "forward_weights",
    "paired_gaps",
    "select",
    "simplest_within_one_se",
    "stratified_folds",
]
