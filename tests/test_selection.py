"""The selection core: out-of-fold predictions, metrics, paired gaps and the one-SE rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from ctfp.evaluate import bootstrap_indices, stratified_folds
from ctfp.selection import (
    ARI,
    ROC_AUC,
    Candidate,
    Measured,
    Trial,
    auc_of,
    out_of_fold,
    select,
)


class CV:
    """The selection settings the core reads."""

    folds, repeats, bootstrap = 5, 1, 200

    def to_dict(self) -> dict[str, int]:
        return {"folds": self.folds, "repeats": self.repeats, "bootstrap": self.bootstrap}


def given(predictions: dict[str, np.ndarray]):
    """An evaluation that returns fixed out-of-fold predictions for each candidate's method."""

    def evaluate(c: Candidate) -> Measured:
        if c.method == "broken":
            raise ValueError("cannot run here")
        return Measured(np.atleast_2d(predictions[c.method]))

    return evaluate


def test_auc_with_ties_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.round(y + rng.normal(0, 1.2, 200), 1)  # many ties
    assert auc_of(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert ROC_AUC(y, scores) == auc_of(y, scores)
    groups = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, groups, rng.integers(0, 3, 200))
    assert ARI(groups, pred) == pytest.approx(adjusted_rand_score(groups, pred))


def test_out_of_fold_predicts_each_row_from_a_model_that_did_not_see_it() -> None:
    codes = np.array([1] * 13 + [0] * 7)
    seen = []

    def fit_predict(train: np.ndarray, held: np.ndarray, repeat: int) -> np.ndarray:
        assert not (train & held).any() and (train | held).all()
        assert {int(v) for v in codes[held]} == {0, 1}  # stratified: both classes in a fold
        seen.append(repeat)
        return np.flatnonzero(held) + 100.0 * repeat

    runs = out_of_fold(fit_predict, codes, folds=5, repeats=2, seed=3)
    assert runs.shape == (2, 20) and seen == [0] * 5 + [1] * 5
    np.testing.assert_array_equal(runs[0], np.arange(20))
    np.testing.assert_array_equal(runs[1], np.arange(20) + 100)
    np.testing.assert_array_equal(stratified_folds(codes, 5, 3), stratified_folds(codes, 5, 3))


def test_the_rule_compares_candidates_on_the_same_resamples() -> None:
    """Two settings scored on the same slices share their noise: a setting that loses by a
    little on every resample is behind, though each AUC alone has a wide interval."""
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 50)
    better = y + rng.standard_normal(100)
    worse = better.copy()
    pos = np.flatnonzero(y == 1)
    worse[pos[np.argsort(better[pos])[-30:-25]]] -= 1.0  # five used slices ranked lower
    simple = Candidate("f", "worse", complexity=0.0)
    complex_ = Candidate("f", "better", complexity=1.0)
    selection = select(
        [simple, complex_], given({"better": better, "worse": worse}), y, ROC_AUC, CV()
    )
    top, other = selection.trials
    assert top.candidate is complex_ and selection.top is top and top.gap_se == 0.0
    gap = top.score - other.score
    # Alone, each estimate's error is wider than the gap; paired, the gap is two errors or more.
    assert top.se > gap > 2 * other.gap_se > 0
    # The reference: the gap's sd over the same resamples, computed here row by row.
    idx = bootstrap_indices(y, 200, 0)
    gaps = [roc_auc_score(y[i], better[i]) - roc_auc_score(y[i], worse[i]) for i in idx]
    assert other.gap_se == pytest.approx(np.std(gaps, ddof=1))
    # Not within one paired SE: the better, less simple setting is the answer.
    assert not other.within_one_se and selection.best is top and top.chosen
    assert "had the highest cross-validated ROC-AUC" in selection.explain()


def test_the_simplest_tied_setting_of_the_best_family_is_chosen() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 40)
    signal = y + rng.standard_normal(80)
    tied = signal + 0.01 * rng.standard_normal(80)  # the same ranking, nearly
    elsewhere = 0.3 * y + rng.standard_normal(80)  # another family, clearly behind
    candidates = [
        Candidate("f", "m", {"size": 64}, complexity=2.0, name="big"),
        Candidate("f", "m", {"size": 4}, complexity=1.0, name="small"),
        Candidate("g", "m", {"size": 1}, complexity=0.0, name="other family"),
        Candidate("f", "broken", complexity=0.0, name="broken"),
    ]
    preds = {"f": signal, "g": elsewhere}

    def evaluate(c: Candidate) -> Measured:
        if c.method == "broken":
            raise ValueError("cannot run here")
        return Measured((tied if c.params["size"] == 4 else preds[c.features])[None])

    selection = select(candidates, evaluate, y, ROC_AUC, CV())
    by = {t.candidate.label: t for t in selection.trials}
    assert selection.top.candidate.features == "f"
    # Only settings of the top's family are simplified to; the failure is reported, last.
    assert selection.best.candidate.label in ("small", selection.top.candidate.label)
    assert by["small"].within_one_se and selection.best is by["small"]
    assert by["broken"].error == "ValueError: cannot run here"
    assert selection.trials[-1] is by["broken"]
    table = selection.to_dict()
    assert table["metric"] == "roc_auc" and table["n_labelled"] == 80
    assert sum(c["chosen"] for c in table["candidates"]) == 1
    assert {"roc_auc", "roc_auc_se", "roc_auc_95", "gap_se", "heldout_roc_auc"} <= set(
        table["chosen"]
    )
    with pytest.raises(ValueError, match="no candidate could be evaluated"):
        select(candidates[3:], evaluate, y, ROC_AUC, CV())


def test_labels_are_scored_by_ari_on_the_first_repeat() -> None:
    rng = np.random.default_rng(2)
    truth = np.array([f"g{v}" for v in np.repeat([0, 1, 2], 20)], dtype=object)
    good = truth.copy()
    good[rng.choice(60, 6, replace=False)] = "g0"
    bad = truth[rng.permutation(60)]
    runs = {"good": np.stack([good, truth]), "bad": np.stack([bad, bad])}
    codes = np.searchsorted(["g0", "g1", "g2"], truth.astype(str))
    selection = select(
        [Candidate("f", "good"), Candidate("f", "bad")],
        given(runs),
        truth,
        ARI,
        CV(),
        codes=codes,
    )
    best = selection.best
    assert best.candidate.method == "good"
    # The score is the mean over repeats; the bootstrap resamples the first repeat's labels.
    assert best.score == pytest.approx((adjusted_rand_score(truth, good) + 1.0) / 2)
    assert best.sd > 0 and list(best.oof) == list(good)
    assert selection.to_dict()["chosen"]["ari"] == round(best.score, 4)


def test_a_combination_is_measured_on_the_same_resamples() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 30)
    a, b = y + rng.standard_normal(60), y + rng.standard_normal(60)
    selection = select(
        [Candidate("f", "a"), Candidate("f", "b")], given({"a": a, "b": b}), y, ROC_AUC, CV()
    )
    mean = Trial(Candidate("f", "mean", name="mean of a and b"), oof=(a + b) / 2)
    selection.add(mean, chosen=True)
    assert selection.best is mean and mean.chosen and sum(t.chosen for t in selection.trials) == 1
    assert mean.score == pytest.approx(roc_auc_score(y, (a + b) / 2))
    top = selection.resampled(selection.top)
    assert mean.gap_se == pytest.approx(np.std(top - selection.resampled(mean), ddof=1))
    assert selection.trials[0] is mean or mean.score <= selection.trials[0].score


def test_the_interval_holds_the_score_it_is_quoted_with() -> None:
    """With repeated folds the score is the mean of each repeat's AUC and the bootstrap measures
    the repeats' mean scores; near chance the two part (seen: 0.31 quoted with [0.13, 0.26]).
    The interval is moved to the score, its width kept."""
    rng = np.random.default_rng(16)
    y = np.repeat([1, 0], 12)
    # Five repeats of a weak (reversed) signal in much noise: their mean is far surer of it.
    runs = -0.5 * y + 1.5 * rng.standard_normal((5, 24))
    settings = CV()
    settings.repeats = 5
    selection = select([Candidate("f", "noise")], given({"noise": runs}), y, ROC_AUC, settings)
    t = selection.best
    low, high = t.interval
    pooled = selection.resampled(t)
    assert t.score > np.percentile(pooled, 97.5)  # the bootstrap's own range misses the score
    assert low <= t.score <= high
    assert high - low == pytest.approx(np.subtract(*np.percentile(pooled, [97.5, 2.5])), abs=1e-9)
