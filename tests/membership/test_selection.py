"""``--method auto``: cross-validated choice among scorers, by the one-standard-error rule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctfp.evaluate import stratified_folds
from ctfp.membership.options import SelectionSettings
from ctfp.membership.registry import METHODS
from ctfp.membership.selection import (
    build,
    default_candidates,
    evaluator,
    forward_select,
    forward_weights,
    heldout_estimate,
    select,
)
from ctfp.membership.selection import candidate as Candidate
from ctfp.membership.threshold import choose_threshold
from ctfp.selection import Trial, auc_of
from ctfp.settings import SettingsError


def memorised(seed: int = 0, n: int = 40, d: int = 12) -> tuple[dict, np.ndarray]:
    """Two feature types of the same slices: in "signal" the generator copied the used reals
    (noisy copies), in "noise" the features carry nothing about membership."""
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n // 2)
    reals = rng.standard_normal((n, d))
    generated = reals[y == 1][rng.integers(0, n // 2, 60)] + 0.05 * rng.standard_normal((60, d))
    noise = rng.standard_normal((n, d)), rng.standard_normal((60, d))
    return {"signal": (reals, generated), "noise": noise}, y


def test_folds_are_stratified_and_seeded() -> None:
    y = np.array([1] * 13 + [0] * 7)
    fold = stratified_folds(y, 5, seed=3)
    for f in range(5):
        assert {int(v) for v in y[fold == f]} == {0, 1}
        assert 3 <= (fold == f).sum() <= 5
    np.testing.assert_array_equal(fold, stratified_folds(y, 5, seed=3))
    assert not np.array_equal(fold, stratified_folds(y, 5, seed=4))


def test_the_scorer_that_carries_the_signal_is_chosen() -> None:
    data, y = memorised()
    candidates = default_candidates(["noise", "signal"], n_small=20, has_generated=True)
    settings = SelectionSettings(repeats=2, bootstrap=50, combine="simplest")
    selection = select(data, y, candidates, settings)
    best = selection.best
    assert best.candidate.features == "signal" and best.score > 0.9
    # Every trial is in the table; the noise features sit near chance.
    assert len(selection.trials) == len(candidates)
    noise = [t.score for t in selection.trials if t.candidate.features == "noise" and not t.error]
    assert noise and np.median(noise) < 0.75
    # The rule: the best family, and in it the simplest setting within one SE of the best.
    top = max((t for t in selection.trials if not t.error), key=lambda t: t.score)
    assert best.candidate.family == top.candidate.family and best.within_one_se
    tied = [
        t
        for t in selection.trials
        if not t.error and t.within_one_se and t.candidate.family == top.candidate.family
    ]
    assert best.candidate.complexity == min(t.candidate.complexity for t in tied)
    # The threshold comes from the winner's out-of-fold scores.
    assert selection.extra["threshold"] == choose_threshold(best.oof, y, "balanced")
    table = selection.to_dict()
    assert table["chosen"]["chosen"] and sum(c["chosen"] for c in table["candidates"]) == 1
    assert "cross-validated" in table["reason"] or "standard error" in table["reason"]


def test_label_free_scorers_are_fitted_once_label_users_cross_validated() -> None:
    data, y = memorised(1)
    settings = SelectionSettings(repeats=3, bootstrap=50)
    free = Candidate("signal", "proximity", {"metric": "l2", "reference": False})
    learned = Candidate("signal", "centroid", {"k": 2})
    selection = select(data, y, [free, learned], settings)
    by = {t.candidate: t for t in selection.trials}
    assert by[free].sd == 0.0  # one fit: the training scores are out of sample already
    x, g = data["signal"]
    from ctfp.membership.proximity import ProximityMembership

    direct = ProximityMembership(metric="l2", reference=False).fit(x, y, g).score_samples(x)
    np.testing.assert_allclose(by[free].oof, direct)
    # The centroid fits saw no held-out slice: its out-of-fold scores differ from in-sample.
    from ctfp.membership.centroid import CentroidMembership

    in_sample = CentroidMembership(2).fit(x, y).score_samples(x)
    assert not np.allclose(by[learned].oof, in_sample)


def test_candidates_that_cannot_run_are_reported_not_fatal() -> None:
    data, y = memorised(2)
    bad = Candidate("signal", "centroid", {"k": 50})  # more centres than slices in a fold
    good = Candidate("signal", "proximity", {"metric": "l2", "reference": False})
    selection = select(data, y, [bad, good], SelectionSettings(repeats=1, bootstrap=20))
    by = {t.candidate: t for t in selection.trials}
    assert by[bad].error and "k=50" in by[bad].error and selection.best is by[good]
    assert selection.trials[-1] is by[bad]  # failures last in the table
    with pytest.raises(ValueError, match="no membership candidate could be evaluated"):
        select(data, y, [bad], SelectionSettings(repeats=1, bootstrap=20))


def test_what_selection_cannot_do_is_refused() -> None:
    data, y = memorised(3)
    few = np.array([1, 1, 1, 0, 0, 0] + [1] * 34)
    with pytest.raises(ValueError, match="needs at least 5 used and 5 not-used"):
        select(data, few, default_candidates(["signal"], 3, True))
    with pytest.raises(ValueError, match="no embeddings given"):
        select(data, y, [Candidate("resnet50", "centroid", {"k": 1})])
    with pytest.raises(SettingsError, match="folds must be at least 2"):
        SelectionSettings(folds=1)
    # auto's candidates are the scores that examine the generator's output: none without
    # generated slices, and never the seed method, which compares real slices only.
    assert default_candidates(["pixels"], 20, False) == []
    methods = {c.method for c in default_candidates(["pixels"], 20, True)}
    assert "centroid" not in methods
    assert methods == {n for n, cls in METHODS.items() if cls.needs_generated}


def test_tied_candidates_answer_together() -> None:
    """combine="tied": the candidates on the best's features within one paired
    standard error of it answer as the mean of their standardised out-of-fold scores; the
    threshold is chosen on those, and the fitted ensemble scores on the same scale."""
    data, y = memorised()
    candidates = default_candidates(["noise", "signal"], n_small=20, has_generated=True)
    settings = SelectionSettings(repeats=2, bootstrap=50, combine="tied")
    selection = select(data, y, candidates, settings)
    best = selection.best
    singles = [t for t in selection.trials if t is not best and not t.error]
    top = max(singles, key=lambda t: t.score)
    tied = [t for t in singles if t.within_one_se and t.candidate.features == "signal"]
    assert len(tied) > 1, "the memorised data should tie several scorers"
    assert best.candidate.method == "ensemble" and best.candidate.features == "signal"
    members = best.candidate.params["members"]
    assert [(m["method"], m["params"]) for m in members] == [
        (t.candidate.method, dict(t.candidate.params))
        for t in sorted(tied, key=lambda t: (-t.score, t.candidate.complexity))
    ]
    # Brute force: each member's out-of-fold scores minus their median over their IQR, averaged.
    by_label = {t.candidate.label: t for t in tied}
    parts = []
    for m in members:
        oof = by_label[Candidate("signal", m["method"], m["params"]).label].oof
        q1, med, q3 = np.percentile(oof, [25, 50, 75])
        assert (m["center"], m["scale"]) == pytest.approx((med, q3 - q1))
        parts.append((oof - med) / (q3 - q1))
    np.testing.assert_allclose(best.oof, np.mean(parts, axis=0))
    assert best.score == pytest.approx(roc_auc_score(y, best.oof))
    assert selection.extra["threshold"] == choose_threshold(best.oof, y, "balanced")
    assert sum(t.chosen for t in selection.trials) == 1 and best.chosen
    assert "mean of their standardised scores" in selection.reason
    assert top.candidate.label in selection.reason
    # The fitted ensemble: each member fitted on all slices, scored on the recorded scale.
    x, generated = data["signal"]
    model = build(best.candidate, 0, "cpu").fit(x, y, generated)
    fitted = [
        build(Candidate("signal", m["method"], m["params"]), 0, "cpu").fit(x, y, generated)
        for m in members
    ]
    expect = np.mean(
        [
            (f.score_samples(x) - m["center"]) / m["scale"]
            for f, m in zip(fitted, members, strict=True)
        ],
        axis=0,
    )
    np.testing.assert_allclose(model.score_samples(x), expect, rtol=1e-6, atol=1e-9)
    assert selection.to_dict()["chosen"]["label"].startswith("signal / mean of ")


def brute_forward(z: np.ndarray, y: np.ndarray, start: int, steps: int) -> np.ndarray:
    """Forward selection with replacement written out with scikit-learn's AUC."""
    counts = np.zeros(len(z))
    counts[start] = 1
    for _ in range(steps):
        now = roc_auc_score(y, counts @ z)
        gains = []
        for j in range(len(z)):
            trial = counts.copy()
            trial[j] += 1
            gains.append(roc_auc_score(y, trial @ z))
        j = int(np.argmax(gains))  # the first on an exact tie
        if not gains[j] > now:
            break
        counts[j] += 1
    return counts


def test_forward_weights_match_a_brute_force_computation() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 30)
    z = rng.standard_normal((6, 60)) + np.outer(rng.uniform(0, 1.2, 6), y)
    for start in range(6):
        for steps in (1, 3, 30):
            np.testing.assert_array_equal(
                forward_weights(z, y, start, steps), brute_forward(z, y, start, steps)
            )


def label_free(scores: np.ndarray) -> dict:
    """A trial's state for scores that do not depend on the labels (any fit, any fold)."""
    return {"fit_score": lambda labels, train, held: scores[held]}


def complementary(seed: int = 0, n: int = 80) -> tuple[list[Trial], np.ndarray]:
    """Out-of-fold scores of four scorers: "a" sees half of the members, "b" the other half,
    "c" and "d" see nothing. Neither a nor b alone reaches what their sum reaches."""
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n // 2)
    half = np.zeros(n, bool)
    half[: n // 4] = True  # the first half of the members
    scores = {
        "a": rng.standard_normal(n) + 2.5 * half,
        "b": rng.standard_normal(n) + 2.5 * ((y == 1) & ~half),
        "c": rng.standard_normal(n),
        "d": rng.standard_normal(n),
    }
    trials = []
    for i, (name, oof) in enumerate(scores.items()):
        t = Trial(Candidate("signal", "proximity", {"metric": name}), state=label_free(oof))
        t.oof, t.score = oof, auc_of(y, oof) + (1e-6 if i == 0 else 0.0)
        trials.append(t)
    return trials, y


def test_forward_selection_adds_the_scorer_that_sees_other_members() -> None:
    trials, y = complementary()
    top = max(trials, key=lambda t: t.score)
    other = next(t for t in trials if t.candidate.params["metric"] in "ab" and t is not top)
    found = forward_select(trials, top, y, seed=0)
    members = found.candidate.params["members"]
    assert found.candidate.method == "ensemble"
    assert members[0]["params"] == top.candidate.params  # the best first
    names = [m["params"]["metric"] for m in members]
    assert other.candidate.params["metric"] in names
    assert found.score > top.score + 0.1 > other.score + 0.1
    # The trial's scores are the weighted mean of the standardised members' scores.
    by_name = {t.candidate.params["metric"]: t for t in trials}
    weights = np.array([m["weight"] for m in members])
    parts = [(by_name[m["params"]["metric"]].oof - m["center"]) / m["scale"] for m in members]
    np.testing.assert_allclose(found.oof, weights @ np.array(parts) / weights.sum())
    # The held-out estimate repeats the whole choice on halves: finite, below the in-sample one.
    held, (low, high) = heldout_estimate(trials, y, "forward", folds=5, seed=0)
    assert 0.5 < held <= found.score and low <= held <= high
    shown = "mean of" if len(set(weights)) == 1 else "weighted mean of"
    assert found.candidate.label.startswith(f"signal / {shown} {len(members)}: ")
    # Nothing to add: the best alone comes back.
    alone = [t for t in trials if t.candidate.params["metric"] in ("a", "c")]
    assert forward_select(alone, alone[0], y, 0) is None


def test_forward_selection_is_the_default_and_its_ensemble_scores_as_selected() -> None:
    data, y = memorised()
    candidates = default_candidates(["noise", "signal"], n_small=20, has_generated=True)
    settings = SelectionSettings(repeats=2, bootstrap=50)
    assert settings.combine == "forward"
    selection = select(data, y, candidates, settings)
    best = selection.best
    assert best.candidate.features == "signal" and best.chosen
    assert sum(t.chosen for t in selection.trials) == 1
    assert selection.extra["threshold"] == choose_threshold(best.oof, y, "balanced")
    if best.candidate.method != "ensemble":  # nothing added to the best: the one-SE rule
        assert selection.rule == "one-standard-error (paired)"
        return
    assert selection.rule == "forward selection"
    assert "forward selection" in selection.reason
    members = best.candidate.params["members"]
    x, generated = data["signal"]
    model = build(best.candidate, 0, "cpu").fit(x, y, generated)
    weights = np.array([m["weight"] for m in members]) / sum(m["weight"] for m in members)
    fitted = [
        build(Candidate("signal", m["method"], m["params"]), 0, "cpu").fit(x, y, generated)
        for m in members
    ]
    expect = weights @ np.array(
        [
            (f.score_samples(x) - m["center"]) / m["scale"]
            for f, m in zip(fitted, members, strict=True)
        ]
    )
    np.testing.assert_allclose(model.score_samples(x), expect, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.weights_, weights)


def test_a_stated_fpr_is_not_asked_of_a_fold() -> None:
    """The folds measure scores only: a named method's fpr:0.05, which 20 known non-members
    can bound and a fold's 16 cannot, is applied to the fit on all of them, not refused."""
    data, y = memorised(n=40)
    named = Candidate("signal", "proximity", {"reference": True, "calibrate": "fpr:0.05"})
    selection = select(data, y, [named], SelectionSettings(repeats=1, bootstrap=20))
    assert selection.best.error is None and selection.best.score > 0.9
    with pytest.raises(ValueError, match="needs at least 19"):
        build(named, 0, "cpu").fit(data["signal"][0][:30], y[:30], data["signal"][1])


def test_the_heldout_estimate_removes_the_optimism_of_the_best_of_many() -> None:
    """Labels the scores know nothing about: the best of 90 candidates looks good in
    cross-validation, and the whole choice repeated on halves says chance."""
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 20)
    trials = [Candidate(f"f{i % 3}", "proximity", {"neighbours": i}) for i in range(90)]
    trials = [Trial(c, oof=rng.standard_normal(40)) for c in trials]
    for t in trials:
        t.state = label_free(t.oof)
    for t in trials:
        t.score = auc_of(y, t.oof)
    for combine in ("forward", "simplest"):
        held, (low, high) = heldout_estimate(trials, y, combine, folds=5, seed=0)
        assert max(t.score for t in trials) > 0.7 and abs(held - 0.5) < 0.1, combine
        assert low < 0.5 < high


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_the_generated_term_shared_across_folds_gives_the_refitted_scores(metric: str) -> None:
    """Cross-validation computes a reference-set method's generated term once and only its
    reference term per fold: the out-of-fold scores are those of a model fitted on each fold."""
    from ctfp.membership.density import DensityRatioMembership
    from ctfp.membership.proximity import ProximityMembership
    from ctfp.selection import out_of_fold

    data, y = memorised()
    x, g = data["signal"]
    settings = SelectionSettings(repeats=2, bootstrap=20)
    evaluate = evaluator(data, y, settings, 0, "cpu")
    grid = [("proximity", {"reference": True, "neighbours": n}) for n in (1, 3)]
    grid += [("density", p) for p in DensityRatioMembership.grid(20, ())]
    assert ProximityMembership(reference=True).uses_labels
    for method, params in grid:
        c = Candidate("signal", method, {**params, "metric": metric})

        def refitted(train: np.ndarray, held: np.ndarray, _: int, c=c) -> np.ndarray:
            model = build(c, 0, "cpu").set_params(calibrate="balanced")
            return model.fit(x[train], y[train], g).score_samples(x[held])

        slow = out_of_fold(refitted, y, settings.folds, settings.repeats, 0)
        np.testing.assert_array_equal(evaluate(c).predictions, slow, err_msg=c.label)


def test_the_permutation_test_of_the_whole_choice() -> None:
    """On labels the data know nothing about, p is uniform (each shuffle, and the real labels,
    equally likely to do best); where the generator copied the members, p is the smallest a
    test of that size can give."""
    rng = np.random.default_rng(0)
    grid = [
        ("proximity", {"reference": True}),
        ("proximity", {"reference": False}),
        ("density", {"estimator": "knn", "neighbours": 1}),
        ("counting", {}),
    ]
    settings = SelectionSettings(repeats=1, bootstrap=20, permutations=19)
    ps = []
    for _ in range(40):
        y = rng.permutation(np.repeat([1, 0], 15))
        data = {"f": (rng.standard_normal((30, 6)), rng.standard_normal((40, 6)))}
        selection = select(data, y, [Candidate("f", m, p) for m, p in grid], settings)
        ps.append(selection.extra["permutation"]["p_value"])
    # about uniform (the shuffles stop once 10 did as well: p = 10 / drawn): mean near 0.525,
    # its sd over 40 datasets 0.046; p = 0.05 (the least 19 shuffles show) about 1 in 20
    ps = np.array(ps)
    assert ((ps > 0) & (ps <= 1)).all() and 0.38 < ps.mean() < 0.67, ps
    assert (ps <= 0.05).mean() <= 0.15, ps
    data, y = memorised()
    selection = select(data, y, [Candidate("signal", m, p) for m, p in grid], settings)
    assert selection.extra["permutation"]["p_value"] == 0.05  # 1 / (19 + 1)
    off = SelectionSettings(repeats=1, bootstrap=20, permutations=0)
    assert "permutation" not in select(data, y, [Candidate("signal", *grid[0])], off).extra


def test_the_heldout_estimate_is_nested() -> None:
    """Every fit the held-out estimate makes sees one half of the labelled slices at most, and
    never the slices it scores: the choice is made again inside each half."""
    data, y = memorised(n=40)
    settings = SelectionSettings(repeats=1, bootstrap=20, permutations=0)
    evaluate = evaluator(data, y, settings, 0, "cpu")
    trials = []
    for method, params in [("proximity", {"reference": True}), ("density", {"neighbours": 1})]:
        found = evaluate(Candidate("signal", method, params))
        trials.append(Trial(Candidate("signal", method, params), state=found.state))
    seen = []

    def spy(fit_score: Callable) -> Callable:
        def call(labels: np.ndarray, train: np.ndarray, held: np.ndarray) -> np.ndarray:
            seen.append((train.copy(), held.copy()))
            return fit_score(labels, train, held)

        return call

    for t in trials:
        t.state["fit_score"] = spy(t.state["fit_score"])
    held, (low, high) = heldout_estimate(trials, y, "forward", folds=5, seed=0)
    assert seen and 0.8 < held <= 1.0 and low <= held <= high
    for train, scored in seen:
        assert not (train & scored).any() and train.sum() <= len(y) // 2
