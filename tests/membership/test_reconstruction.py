"""Reconstruction membership: a PCA of the generated set checked against scikit-learn, the cap
on components, state round trips, option errors, label independence and the memorised signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from ctfp.exceptions import InputError
from ctfp.membership import reconstruction
from ctfp.membership.reconstruction import ReconstructionMembership, ReconstructionSettings
from ctfp.settings import SettingsError


def _data(seed: int = 0, n: int = 60, m: int = 40, d: int = 24):
    """Random reals (n, d) with labels, and generated slices (m, d), as float32 values."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 3.0, d)  # unequal variances: the principal directions are distinct
    reals = (rng.normal(size=(n, d)) * scale + 1.5).astype(np.float32)
    generated = (rng.normal(size=(m, d)) * scale + 1.5).astype(np.float32)
    y = (np.arange(n) % 2 == 0).astype(int)
    return reals, y, generated


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _brute_force(reals, generated, r: int, normalize: bool) -> tuple[np.ndarray, PCA]:
    """-mean squared residual of scikit-learn's PCA reconstruction, and that PCA."""
    x, g = reals.astype(np.float64), generated.astype(np.float64)
    if normalize:
        x, g = _unit(x), _unit(g)
    pca = PCA(n_components=r, svd_solver="full").fit(g)
    x_hat = pca.inverse_transform(pca.transform(x))
    return -((x - x_hat) ** 2).mean(1), pca


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("m", [15, 200])  # m <= d: SVD of the rows; m > d: the d x d scatter
def test_scores_are_the_brute_force_pca_residuals(normalize: bool, m: int) -> None:
    reals, y, generated = _data(m=m)
    model = ReconstructionMembership(components=5, normalize=normalize).fit(reals, y, generated)
    expected, pca = _brute_force(reals, generated, 5, normalize)
    assert model.n_components_ == 5 and model.components_.shape == (5, 24)
    np.testing.assert_allclose(model.score_samples(reals), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.train_scores_, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.mean_, pca.mean_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        model.explained_variance_ratio_, pca.explained_variance_ratio_, rtol=1e-9
    )
    # The same directions as scikit-learn's, up to sign; orthonormal.
    np.testing.assert_allclose(np.abs(model.components_ @ pca.components_.T), np.eye(5), atol=1e-9)
    assert model.score_samples(reals).dtype == np.float64


def test_blocks_give_the_scores_of_one_pass(monkeypatch) -> None:
    reals, y, generated = _data(m=200)
    whole = ReconstructionMembership(components=4).fit(reals, y, generated)
    monkeypatch.setattr(reconstruction, "BLOCK", 7)  # 200 generated, 60 reals: uneven blocks
    blocked = ReconstructionMembership(components=4).fit(reals, y, generated)
    np.testing.assert_allclose(blocked.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(blocked.score_samples(reals), whole.score_samples(reals), rtol=1e-9)
    expected, _ = _brute_force(reals, generated, 4, False)
    np.testing.assert_allclose(blocked.score_samples(reals), expected, rtol=1e-9)


def test_components_capped_at_the_generated_set_and_recorded() -> None:
    reals, y, generated = _data(m=10)
    model = ReconstructionMembership(components=16).fit(reals, y, generated)
    assert model.components == 16  # the setting is kept as given
    assert model.n_components_ == 9 and model.components_.shape == (9, 24)
    assert model.explained_variance_ratio_.shape == (9,)
    expected, _ = _brute_force(reals, generated, 9, False)
    np.testing.assert_allclose(model.score_samples(reals), expected, rtol=1e-9, atol=1e-12)
    # Capped by the dimension: every direction kept, every slice reconstructed exactly.
    reals, y, generated = _data(m=50, d=6)
    model = ReconstructionMembership(components=16).fit(reals, y, generated)
    assert model.n_components_ == 6
    np.testing.assert_allclose(model.score_samples(reals), 0.0, atol=1e-12)


def test_component_signs_are_deterministic() -> None:
    reals, y, generated = _data(m=200)
    model = ReconstructionMembership(components=8).fit(reals, y, generated)
    V = model.components_
    assert (V[np.arange(8), np.abs(V).argmax(1)] > 0).all()
    reals, y, generated = _data(m=15)
    V = ReconstructionMembership(components=8).fit(reals, y, generated).components_
    assert (V[np.arange(8), np.abs(V).argmax(1)] > 0).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_state_round_trip_gives_identical_answers(normalize: bool) -> None:
    reals, y, generated = _data(m=100)
    model = ReconstructionMembership(components=6, normalize=normalize, calibrate="f1")
    model.fit(reals, np.where(y == 1, "used", "not_used"), generated)
    params, arrays = model.to_state()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    again = ReconstructionMembership.from_state(json.loads(json.dumps(params)), arrays)
    assert again.get_params() == model.get_params()
    assert again.n_components_ == 6 and again.threshold_ == model.threshold_
    assert again.n_features_in_ == 24 and again.classes_.tolist() == ["not_used", "used"]
    np.testing.assert_array_equal(again.score_samples(reals), model.score_samples(reals))
    np.testing.assert_array_equal(again.predict(reals), model.predict(reals))
    np.testing.assert_array_equal(again.train_scores_, model.train_scores_)


def test_clone_get_params_and_settings() -> None:
    model = ReconstructionMembership(components=3, normalize=True, calibrate="accuracy")
    assert model.get_params() == {"components": 3, "normalize": True, "calibrate": "accuracy"}
    # The estimator's parameters are its settings' fields (Task1Settings.build relies on it).
    assert set(ReconstructionMembership().get_params()) == set(ReconstructionSettings.field_names())
    assert ReconstructionMembership().get_params() == ReconstructionSettings().to_dict()
    assert ReconstructionSettings.stage == "reconstruction"
    assert ReconstructionMembership.name == "reconstruction"
    assert ReconstructionMembership.needs_generated and not model.uses_labels
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    reals, y, generated = _data()
    model.fit(reals, y, generated)
    fresh = clone(model)
    assert not hasattr(fresh, "threshold_") and not hasattr(fresh, "components_")
    assert fresh.set_params(components=2) is fresh and fresh.components == 2


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"components": 0}, "components"),
        ({"components": 2.5}, "components"),
        ({"calibrate": "median"}, "calibrate"),
        ({"normalize": "yes"}, "normalize"),
    ],
)
def test_bad_options_name_the_option(options: dict, word: str) -> None:
    reals, y, generated = _data()
    with pytest.raises(SettingsError, match=word):
        ReconstructionMembership(**options).fit(reals, y, generated)


def test_generated_slices_are_required() -> None:
    reals, y, generated = _data()
    with pytest.raises(InputError, match="generated"):
        ReconstructionMembership().fit(reals, y)
    with pytest.raises(InputError, match="generated"):
        ReconstructionMembership().fit(reals, y, np.empty((0, 24)))
    with pytest.raises(ValueError, match="at least 2 generated"):
        ReconstructionMembership().fit(reals, y, generated[:1])
    with pytest.raises(ValueError, match="generated embeddings have 23 dimensions"):
        ReconstructionMembership().fit(reals, y, generated[:, :23])


def test_non_finite_rows() -> None:
    reals, y, generated = _data()
    bad = generated.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ReconstructionMembership().fit(reals, y, bad)
    model = ReconstructionMembership(components=4).fit(reals, y, generated)
    x = np.ascontiguousarray(reals[:6])
    x[2, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model.score_samples(x)
    score = model.score_samples(x, check_input=False)
    assert np.isnan(score[2]) and np.isfinite(np.delete(score, 2)).all()


def test_scores_do_not_depend_on_the_labels() -> None:
    reals, y, generated = _data(m=100)
    model = ReconstructionMembership(components=5).fit(reals, y, generated)
    y_shuffled = np.random.default_rng(1).permutation(y)
    assert (y_shuffled != y).any()
    other = ReconstructionMembership(components=5).fit(reals, y_shuffled, generated)
    np.testing.assert_array_equal(other.mean_, model.mean_)
    np.testing.assert_array_equal(other.components_, model.components_)
    np.testing.assert_array_equal(other.train_scores_, model.train_scores_)
    np.testing.assert_array_equal(other.score_samples(reals), model.score_samples(reals))
    assert other.threshold_ != model.threshold_  # only the threshold follows the labels


def _memorised_subspace(seed: int = 0, n: int = 400, d: int = 64, rank: int = 4):
    """Used reals span a ``rank``-dimensional subspace and the generator outputs noisy copies
    of them; not-used reals, of the same mean norm, point anywhere."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2 == 0).astype(int)
    basis = np.linalg.qr(rng.normal(size=(d, rank)))[0].T  # (rank, d) orthonormal
    reals = rng.normal(size=(n, d))  # not used: all directions, mean squared norm d
    used = rng.normal(0, np.sqrt(d / rank), size=(int(y.sum()), rank)) @ basis
    reals[y == 1] = used + rng.normal(0, 0.1, used.shape)
    copies = np.repeat(used, 3, axis=0)
    generated = copies + rng.normal(0, 0.3, copies.shape)
    return reals.astype(np.float32), y, generated.astype(np.float32)


@pytest.mark.parametrize("normalize", [False, True])
def test_memorised_slices_score_higher(normalize: bool) -> None:
    reals, y, generated = _memorised_subspace()
    train, test = np.arange(len(y)) < 200, np.arange(len(y)) >= 200
    model = ReconstructionMembership(components=4, normalize=normalize)
    model.fit(reals[train], y[train], generated)
    score = model.score_samples(reals[test])
    assert roc_auc_score(y[test], score) > 0.9
    assert (model.predict(reals[test]) == y[test]).mean() > 0.9
    assert model.explained_variance_ratio_.sum() > 0.8  # the generator's output is low-rank
