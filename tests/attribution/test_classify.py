"""The linear classifier of the generator (task 2 with labels), against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from ctfp.attribution.classify import GroupClassifier, _shrunk_lda
from ctfp.exceptions import InputError


def groups_of(seed: int = 0, n: int = 30, d: int = 10, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((k, d))
    y = np.repeat([f"gen{j}" for j in range(k)], n)
    noise = rng.standard_normal((k * n, d)) * (1 + np.arange(d)) / 4
    x = centres[np.repeat(np.arange(k), n)] + noise
    return x, y


@pytest.mark.parametrize("model", ["lr", "lda"])
@pytest.mark.parametrize("pca", [None, 4])
@pytest.mark.parametrize("k", [2, 3])
def test_probabilities_are_scikit_learns(model: str, pca: int | None, k: int) -> None:
    x, y = groups_of(k=k)
    fitted = GroupClassifier(model=model, pca=pca).fit(x, y)
    # The reference, by hand: standardise, project, scikit-learn's own model.
    z = (x - x.mean(0)) / x.std(0)
    if pca is not None:
        z = z @ PCA(pca, svd_solver="full").fit(z).components_.T
        if model == "lr":  # each axis to unit variance, as the features were
            z = z / z.std(0)
    target = np.searchsorted(sorted(set(y)), y)
    if model == "lr":
        ref = LogisticRegression(max_iter=2000).fit(z, target)
    else:
        ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, target)
    np.testing.assert_allclose(fitted.predict_proba(x), ref.predict_proba(z), atol=1e-6)
    assert (fitted.predict(x) == ref.predict(z)).all()
    assert list(fitted.classes_) == sorted(set(y)) and fitted.k == k
    # Fitted on half the slices of each group, it names the other half nearly always.
    x2, y2 = groups_of(n=60, k=k)
    half = GroupClassifier(model=model, pca=pca).fit(x2[::2], y2[::2])
    assert (half.classes_[half.predict(x2[1::2])] == y2[1::2]).mean() > 0.9


def wide_groups_of(sizes: tuple[int, ...], d: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Fewer slices than features, groups of unequal sizes, one feature constant everywhere
    and one constant within the first group only."""
    rng = np.random.default_rng(1)
    target = np.repeat(np.arange(len(sizes)), sizes)
    spread = (1 + np.arange(d) % 7) / 3
    x = (
        rng.standard_normal((len(sizes), d))[target]
        + rng.standard_normal((len(target), d)) * spread
    )
    x[:, 3] = 2.5
    x[target == 0, 7] = -1.0
    return x, np.asarray([f"gen{j}" for j in target])


@pytest.mark.parametrize("sizes", [(12, 18), (7, 10, 13)])
def test_wide_lda_is_scikit_learns(sizes: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = wide_groups_of(sizes)
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    target = np.searchsorted(sorted(set(y)), y)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, target)
    # The Gram-matrix path, on the same standardised matrix: scikit-learn's model and form.
    coef, intercept = _shrunk_lda(z, target, len(sizes))
    assert coef.shape == ref.coef_.shape and intercept.shape == ref.intercept_.shape
    np.testing.assert_allclose(coef, ref.coef_, rtol=1e-6, atol=1e-9 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-6)
    # The classifier takes that path (not scikit-learn's, 13 s a fit at d = 4096) and predicts
    # as scikit-learn's did.
    monkeypatch.setattr(LinearDiscriminantAnalysis, "fit", None)
    fitted = GroupClassifier(model="lda").fit(x, y)
    np.testing.assert_allclose(fitted.predict_proba(x), ref.predict_proba(z), rtol=1e-6, atol=1e-9)
    assert (fitted.predict(x) == ref.predict(z)).all()
    assert fitted.coef_.shape == (len(sizes), x.shape[1]) and fitted.intercept_.shape == (
        len(sizes),
    )


def test_wide_lda_without_shrinkage_is_scikit_learns() -> None:
    # Groups of 2 slices: Ledoit-Wolf shrinks none of them, the shared covariance is singular,
    # and scikit-learn's own lstsq (a least-norm solution) fits instead.
    x, y = wide_groups_of((2, 2, 2), d=50)
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    target = np.searchsorted(sorted(set(y)), y)
    assert _shrunk_lda(z, target, 3) is None
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, target)
    fitted = GroupClassifier(model="lda").fit(x, y)
    np.testing.assert_allclose(fitted.predict_proba(x), ref.predict_proba(z), atol=1e-9)


def test_open_set_density_is_the_best_groups_gaussian() -> None:
    x, y = groups_of()
    fitted = GroupClassifier(density_components=5).fit(x, y)
    z = (x - x.mean(0)) / x.std(0)
    basis = PCA(5, svd_solver="full").fit(z).components_
    w = z @ basis.T
    names = sorted(set(y))
    means = np.stack([w[y == g].mean(0) for g in names])
    target = np.searchsorted(names, y)
    cov, _ = ledoit_wolf(w - means[target])
    new = x[:7] + 0.5
    wn = ((new - x.mean(0)) / x.std(0)) @ basis.T
    ref = np.max([multivariate_normal(m, cov).logpdf(wn) for m in means], axis=0)
    np.testing.assert_allclose(fitted.log_density(new), ref, rtol=1e-8)
    # A slice far from every group is far less likely than the groups' own slices.
    far = x[:1] + 50.0
    assert fitted.log_density(far)[0] < np.quantile(fitted.log_density(x), 0.01) - 100
    # The densities alone (another model's open set): the same, and no classifier.
    alone = GroupClassifier(density_components=5).fit(x, y, density_only=True)
    np.testing.assert_array_equal(alone.log_density(new), fitted.log_density(new))
    with pytest.raises(ValueError, match="not fitted"):
        alone.predict(x)


def test_saved_and_loaded_it_predicts_the_same() -> None:
    x, y = groups_of()
    fitted = GroupClassifier(model="lda", pca=5).fit(x, y)
    params, arrays = fitted.to_state()
    loaded = GroupClassifier.from_state(params, arrays)
    np.testing.assert_array_equal(loaded.predict_proba(x), fitted.predict_proba(x))
    np.testing.assert_array_equal(loaded.log_density(x), fitted.log_density(x))
    assert loaded.groups == fitted.groups


def test_what_it_cannot_fit_is_refused() -> None:
    x, y = groups_of()
    with pytest.raises(InputError, match="at least 2 labelled groups"):
        GroupClassifier().fit(x, ["one"] * len(x))
    with pytest.raises(InputError, match="non-finite"):
        GroupClassifier().fit(np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y)
    with pytest.raises(ValueError, match="model must be"):
        GroupClassifier(model="svm").fit(x, y)
    with pytest.raises(ValueError, match="C must be"):
        GroupClassifier(C=float("inf")).fit(x, y)
    fitted = GroupClassifier().fit(x, y)
    with pytest.raises(InputError, match="10-d"):
        fitted.predict(x[:, :4])
    with pytest.raises(ValueError, match="not fitted"):
        GroupClassifier().predict(x)
