"""Task 1's side of the selection core (:mod:`ctfp.selection`): its candidates, how one is
measured, and what follows the choice.

Each candidate (a feature type x a registered method x one of its ``grid()`` settings) is
scored out of fold on the labelled training reals by ROC-AUC; a method that learns nothing from
the labels (``uses_labels`` false) is fitted once, its training scores being out of sample
already. ``--combine`` then makes the table one answer: forward selection (Caruana et al.
2004), the tied mean, or the simplest. The whole choice is repeated on held-out halves
(:func:`heldout_estimate`, the estimate the verdict quotes) and on shuffled labels
(:func:`permutation_test`, its p-value). The threshold is chosen on the answer's out-of-fold
scores, never on scores of slices the model was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ctfp.evaluate import stratified_folds
from ctfp.membership.base import MembershipMethod
from ctfp.membership.ensemble import EnsembleMembership, robust_scale
from ctfp.membership.neighbours import NeighbourMethod
from ctfp.membership.options import SelectionSettings
from ctfp.membership.registry import METHODS, get_method, instantiate
from ctfp.membership.threshold import choose_threshold
from ctfp.selection import ROC_AUC, Candidate, Measured, Selection, Trial, auc_of, aucs
from ctfp.selection import out_of_fold as folds_of
from ctfp.selection import select as select_among

#: A candidate's scores of slices ``held`` by a fit on slices ``train`` with ``labels``
#: (masks over the labelled slices): ``fit_score(labels, train, held)``.
FitScore = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: At most this many additions in forward selection (each must raise the out-of-fold AUC).
FORWARD_STEPS = 30

#: Splits of the labelled slices into halves for :func:`heldout_estimate` (20 halves).
HELDOUT_REPEATS = 10

#: The permutation test stops once this many shuffles did as well as the real labels
#: (sequential Monte Carlo p-value, Besag and Clifford 1991).
SEQUENTIAL_STOP = 10

#: The k a grid tries where its method takes one (the centroid method's), log-spaced over 1-32.
CENTROID_KS = (1, 4, 16, 32)


def complexity(method: str, params: Mapping[str, Any]) -> float:
    """How simple a setting is (lower first): the method's ``rank``, plus a little for a
    reference set, a kernel estimate, or more neighbours, centres or components."""
    base = EnsembleMembership.rank if method == EnsembleMembership.name else METHODS[method].rank
    extra = 0.5 if params.get("reference") else 0.0
    for name in ("k", "neighbours", "components"):
        if name in params:
            extra += 0.01 * math.log2(max(int(params[name]), 1))
    if params.get("estimator") == "kde":
        extra += 0.5
    return base + extra


def candidate(features: str, method: str, params: Mapping[str, Any] | None = None) -> Candidate:
    """The candidate of ``method`` with ``params`` (``__init__`` keywords) on ``features``."""
    params = dict(params or {})
    return Candidate(features, method, params, complexity(method, params))


def default_candidates(
    features: Sequence[str],
    n_small: int,
    has_generated: bool,
    ks: Sequence[int] = CENTROID_KS,
) -> list[Candidate]:
    """For each feature type, the ``grid()`` of every registered method whose score uses the
    generated slices (``needs_generated``: only those are evidence about the generator), in
    registry order; none without generated slices. ``ks``: the k of methods that take one."""
    if not has_generated:
        return []
    return [
        candidate(f, name, params)
        for f in features
        for name, cls in METHODS.items()
        if cls.needs_generated
        for params in cls.grid(n_small, ks)
    ]


def build(c: Candidate, seed: int, device: str) -> MembershipMethod:
    """The unfitted method of candidate ``c``, seeded, on ``device``."""
    cls = EnsembleMembership if c.method == EnsembleMembership.name else get_method(c.method)
    return instantiate(cls, c.params, seed, device)


def fit_scorer(
    data: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    y: np.ndarray,
    seed: int,
    device: str,
    calibrate: str = "balanced",
) -> Callable[[Candidate], FitScore]:
    """Each candidate as ``fit_score(labels, train, held)``: the scores of the rows ``held`` of
    ``data[features]`` by a fit on the rows ``train`` (masks) with ``labels``. What the labels
    do not reach is fitted once here. A fit takes ``calibrate`` (scores do not depend on it),
    so that a stated criterion (fpr:ALPHA) cannot fail on the fewer non-members of a fold."""

    def scorer(c: Candidate) -> MembershipMethod:
        model = build(c, seed, device)
        return model.set_params(calibrate=calibrate) if "calibrate" in model.get_params() else model

    def fit_score_of(c: Candidate) -> FitScore:
        x, generated = data[c.features]
        probe = scorer(c)
        if not probe.uses_labels:
            fixed = probe.fit(x, y, generated).score_samples(x)
            return lambda labels, train, held: fixed[held]
        if isinstance(probe, NeighbourMethod) and probe.index == "flat":
            # The labels reach the score through the reference set alone: the generated term
            # is computed once, the reference term per fold.
            model = probe.fit(x, y, generated)
            rows = model._check_x(x)
            generated_term = model._generated_term(rows)
            none = np.empty(0, dtype=np.int64)

            def shared(labels: np.ndarray, train: np.ndarray, held: np.ndarray) -> np.ndarray:
                reference = rows[train][labels[train] == 0]
                model._check_reference(len(reference))
                index = model._index_reference(reference)
                return generated_term[held] - model._reference_term(index, rows[held], none)

            return shared

        def refit(labels: np.ndarray, train: np.ndarray, held: np.ndarray) -> np.ndarray:
            return scorer(c).fit(x[train], labels[train], generated).score_samples(x[held])

        return refit

    return fit_score_of


def evaluator(
    data: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    y: np.ndarray,
    settings: SelectionSettings,
    seed: int,
    device: str,
) -> Callable[[Candidate], Measured]:
    """How a candidate is measured: its out-of-fold scores of the training reals."""
    fit_score_of = fit_scorer(data, y, seed, device)

    def evaluate(c: Candidate) -> Measured:
        fit_score = fit_score_of(c)
        runs = out_of_fold(fit_score, y, settings.folds, settings.repeats, seed)
        if not np.isfinite(runs).all():
            raise ValueError("non-finite out-of-fold scores")
        return Measured(runs, state={"fit_score": fit_score})

    return evaluate


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
    """Cross-validate every candidate, choose (the core's rule, then ``settings.combine``) and
    set the threshold on the answer's out-of-fold scores (``selection.extra["threshold"]``).

    ``data``: for each feature type, (training reals (n, d), generated slices (m, d) or None),
    the same slices in the same order; ``y`` (n,): 1 = used, 0 = not used. Raises ValueError
    when no candidate could be evaluated, a candidate's features are not in ``data``, or a class
    has fewer rows than ``settings.folds``.
    """
    settings = settings or SelectionSettings()
    y = np.asarray(y).astype(np.int64)
    n_small = int(min((y == 1).sum(), (y == 0).sum()))
    if n_small < settings.folds:
        raise ValueError(
            f"cross-validation with {settings.folds} folds needs at least {settings.folds} used "
            f"and {settings.folds} not-used training slices; the smaller class has {n_small}"
        )
    selection = select_among(
        candidates,
        evaluator(data, y, settings, seed, device),
        y,
        ROC_AUC,
        settings,
        features=data,
        seed=seed,
        progress=progress,
        what="membership candidate",
    )
    top = selection.top
    ok = [t for t in selection.trials if t.error is None]
    same = [t for t in ok if t.candidate.features == top.candidate.features]
    tied = [t for t in same if t.within_one_se]
    if settings.combine == "forward":
        found = forward_select(same, top, y, seed)
        if found is not None:
            selection.add(found, chosen=True)
            selection.rule = "forward selection"
    elif settings.combine == "tied" and len(tied) > 1:
        ordered = sorted(tied, key=lambda t: (-t.score, t.candidate.complexity))
        selection.add(ensemble_trial([(t, 1.0) for t in ordered], top, y), chosen=True)
        selection.rule = "tied mean"
    best = selection.best
    assert best.oof is not None
    selection.extra["threshold"] = choose_threshold(best.oof, y, settings.calibrate)
    singles = [t for t in ok if t.candidate.method != EnsembleMembership.name]
    best.heldout, interval = heldout_estimate(singles, y, settings.combine, settings.folds, seed)
    selection.extra["heldout"] = {
        "roc_auc": round(best.heldout, 4),
        "roc_auc_95": [round(v, 4) for v in interval],
        "halves": 2 * HELDOUT_REPEATS,
    }
    if settings.permutations:
        p, observed = permutation_test(
            singles, y, settings.combine, settings.permutations, settings.folds, seed
        )
        selection.extra["permutation"] = {
            "p_value": round(p, 4),
            "permutations": settings.permutations,
            "statistic": "out-of-fold ROC-AUC of the answer the whole choice makes",
            "observed": round(observed, 4),
        }
    selection.reason = reason(selection)
    return selection


def reason(selection: Selection) -> str:
    """One sentence: why the answer won (a combination's reason, or the core's)."""
    b = selection.best
    if b.candidate.method != EnsembleMembership.name:
        return selection.explain()
    singles = [t for t in selection.trials if t.error is None and t is not b]
    top = max(singles, key=lambda t: t.score)
    members = b.candidate.params["members"]
    if selection.rule == "forward selection":
        added = [
            candidate(b.candidate.features, m["method"], m.get("params")).label for m in members[1:]
        ]
        held = (
            f"; estimated on held-out halves of the labelled slices, where the selection itself "
            f"is repeated, {b.heldout:.3f}"
            if np.isfinite(b.heldout)
            else ""
        )
        return (
            f"forward selection from the best single scorer, {top.candidate.label} "
            f"(ROC-AUC {top.score:.3f}), added {'; '.join(added)}: each raised the out-of-fold "
            f"ROC-AUC of the weighted mean of standardised scores, to {b.score:.3f} (optimistic: "
            f"measured on the slices that chose the weights{held})"
        )
    return (
        f"{len(members)} candidates on {b.candidate.features} were within one paired standard "
        f"error of the best, {top.candidate.label} (ROC-AUC {top.score:.3f}): no one of them is "
        f"measurably better, so the answer is the mean of their standardised scores "
        f"(out-of-fold ROC-AUC {b.score:.3f}, optimistic: measured on the slices that chose the "
        "members)"
    )


def ensemble_trial(members: Sequence[tuple[Trial, float]], top: Trial, y: np.ndarray) -> Trial:
    """The trial of the weighted mean of ``members``' out-of-fold scores (``(trial, weight)``
    pairs, the first listed first), each standardised by :func:`robust_scale`, which the
    candidate records so that the fitted ensemble scores on the scale its threshold is chosen
    on. Optimistic: measured on the out-of-fold scores that chose the members."""
    parts, centers, scales = _scaled([t.oof for t, _ in members])  # type: ignore[misc]
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
    features, total = top.candidate.features, sum(weights)
    equal = len(set(weights)) == 1
    shown = [
        candidate(features, t.candidate.method, t.candidate.params).label.split(" / ", 1)[1]
        for t, _ in members
    ]
    if not equal:
        shown = [f"{w / total:.2f} x {name}" for w, name in zip(weights, shown, strict=True)]
    kind = "mean" if equal else "weighted mean"
    name = f"{features} / {kind} of {len(shown)}: " + "; ".join(shown)
    params = {"members": specs}
    c = Candidate(features, EnsembleMembership.name, params, complexity("ensemble", {}), name)
    trial = Trial(c, within_one_se=True, sd=float("nan"))
    trial.oof = np.asarray(weights) @ parts / total
    trial.score = auc_of(y, trial.oof)
    return trial


def _scaled(oof: Sequence[np.ndarray]) -> tuple[np.ndarray, list[float], list[float]]:
    """(len(oof), n): each row of out-of-fold scores minus its median, over its IQR
    (:func:`~ctfp.membership.ensemble.robust_scale`); and those medians and ranges."""
    scaled = [robust_scale(o) for o in oof]
    rows = [(o - c) / s for o, (c, s) in zip(oof, scaled, strict=True)]
    return np.asarray(rows), [c for c, _ in scaled], [s for _, s in scaled]


def forward_weights(
    z: np.ndarray, y: np.ndarray, start: int, steps: int = FORWARD_STEPS
) -> np.ndarray:
    """Ensemble selection with replacement (Caruana et al. 2004) on standardised scores ``z``
    (m, n): begin with row ``start``; at each step add 1 to the weight of the row that most
    raises the ROC-AUC of the weighted sum against ``y`` (the first on a tie); stop when none
    raises it, or after ``steps`` additions. Returns the (m,) integer weights."""
    counts = np.zeros(len(z))
    counts[start] = 1
    total = z[start].copy()
    current = auc_of(y, total)
    for _ in range(steps):
        values = aucs(y, total[None] + z)
        j = int(np.argmax(values))
        if not values[j] > current:
            break
        counts[j] += 1
        total += z[j]
        current = float(values[j])
    return counts


def forward_select(pool: Sequence[Trial], top: Trial, y: np.ndarray, seed: int) -> Trial | None:
    """``--combine forward``: :func:`forward_weights` over ``pool`` (the candidates on the
    best's features, ``top`` among them), as the trial of their weighted mean; None when no
    candidate adds to ``top``."""
    ordered = sorted(pool, key=lambda t: (-t.score, t.candidate.complexity))
    start = ordered.index(top)
    counts = forward_weights(_scaled([t.oof for t in ordered])[0], y, start)  # type: ignore[misc]
    if counts.sum() == counts[start]:
        return None
    chosen = [start] + [i for i in np.flatnonzero(counts) if i != start]
    return ensemble_trial([(ordered[i], counts[i]) for i in chosen], top, y)


def out_of_fold(
    fit_score: FitScore,
    labels: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """(repeats, n) out-of-fold scores of a candidate's ``fit_score`` for ``labels``; or, with
    ``within`` (a mask), (repeats, within.sum()) those of the slices ``within``, folded among
    themselves (the others neither fitted on nor scored)."""
    rows = np.flatnonzero(within) if within is not None else np.arange(len(labels))

    def on(mask: np.ndarray) -> np.ndarray:
        full = np.zeros(len(labels), dtype=bool)
        full[rows[mask]] = True
        return full

    return folds_of(
        lambda train, held, _: fit_score(labels, on(train), on(held)),
        labels[rows],
        folds,
        repeats,
        seed,
    )


def _answer(
    chooser: np.ndarray, y: np.ndarray, scores: np.ndarray, features: np.ndarray, combine: str
) -> np.ndarray:
    """The scores ``scores`` (m, n') of the answer chosen on the out-of-fold scores
    ``chooser`` (m, n) of slices labelled ``y``: the candidate with the best ROC-AUC, then
    (``combine="forward"``) forward selection among the candidates on its ``features``, each
    standardised by the median and IQR of its ``chooser`` row."""
    first = int(np.argmax(aucs(y, chooser)))
    if combine != "forward":
        return scores[first]
    pool = np.flatnonzero(features == features[first])
    z, centers, ranges = _scaled(chooser[pool])
    w = forward_weights(z, y, int(np.flatnonzero(pool == first)[0]))
    return w @ ((scores[pool] - np.array(centers)[:, None]) / np.array(ranges)[:, None])


def permutation_test(
    singles: Sequence[Trial],
    y: np.ndarray,
    combine: str,
    permutations: int,
    folds: int,
    seed: int,
) -> tuple[float, float]:
    """``(p, observed)``: how often the whole choice, rerun on shuffled labels, does as well as
    on the real ones. The statistic is the out-of-fold ROC-AUC (one repeat of the folds) of the
    answer chosen from every candidate's out-of-fold scores, recomputed with
    ``trial.state["fit_score"]``; ``p = (1 + #{null >= observed}) / (permutations + 1)``, or
    ``SEQUENTIAL_STOP / drawn`` once :data:`SEQUENTIAL_STOP` shuffles did as well."""
    features = np.array([t.candidate.features for t in singles])

    def statistic(labels: np.ndarray) -> float:
        oof = np.array(
            [out_of_fold(t.state["fit_score"], labels, folds, 1, seed)[0] for t in singles]
        )
        return auc_of(labels, _answer(oof, labels, oof, features, combine))

    observed = statistic(y)
    rng = np.random.default_rng(seed + 7919)
    exceed = 0
    for drawn in range(1, permutations + 1):
        exceed += statistic(rng.permutation(y)) >= observed
        if exceed == SEQUENTIAL_STOP and drawn < permutations:
            return SEQUENTIAL_STOP / drawn, observed
    return (1 + exceed) / (permutations + 1), observed


def heldout_estimate(
    singles: Sequence[Trial], y: np.ndarray, combine: str, folds: int, seed: int
) -> tuple[float, tuple[float, float]]:
    """The ROC-AUC of the whole choice, held out and nested: on :data:`HELDOUT_REPEATS`
    stratified splits of the labelled slices into halves, every candidate of ``singles`` is
    cross-validated on one half alone (``folds`` folds, fewer where a class is smaller), the
    answer chosen and fitted there (``tied`` and ``simplest`` as the best single candidate) and
    measured on the other half. Returns the mean over the halves and the range of their middle
    95 %; NaN where a half has fewer than 2 slices of a class. A candidate that cannot run on a
    half is left out there."""
    features = np.array([t.candidate.features for t in singles])
    held = []
    for r in range(HELDOUT_REPEATS):
        fold = stratified_folds(y, 2, seed + 1000 + r)
        for f in range(2):
            fit, on = fold != f, fold == f
            k = min(folds, int(np.bincount(y[fit], minlength=2).min()))
            if k < 2 or len(np.unique(y[on])) < 2:
                return float("nan"), (float("nan"), float("nan"))
            inner, outer, kept = [], [], []
            for i, t in enumerate(singles):
                fit_score = t.state["fit_score"]
                try:
                    a = out_of_fold(fit_score, y, k, 1, seed + r, within=fit)[0]
                    b = fit_score(y, fit, on)
                except ValueError:
                    continue
                if np.isfinite(a).all() and np.isfinite(b).all():
                    inner.append(a), outer.append(b), kept.append(i)
            if kept:
                scores = _answer(np.array(inner), y[fit], np.array(outer), features[kept], combine)
                held.append(auc_of(y[on], scores))
    if not held:
        return float("nan"), (float("nan"), float("nan"))
    low, high = np.percentile(held, [2.5, 97.5])
    return float(np.mean(held)), (float(low), float(high))


__all__ = [
    "CENTROID_KS",
    "FORWARD_STEPS",
    "HELDOUT_REPEATS",
    "SEQUENTIAL_STOP",
    "build",
    "candidate",
    "complexity",
    "default_candidates",
    "ensemble_trial",
    "evaluator",
    "fit_scorer",
    "forward_select",
    "forward_weights",
    "heldout_estimate",
    "out_of_fold",
    "permutation_test",
    "reason",
    "select",
]
