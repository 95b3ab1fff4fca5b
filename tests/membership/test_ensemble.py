"""The ensemble membership method: the mean of its members' standardised scores."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.membership.centroid import CentroidMembership
from ctfp.membership.ensemble import EnsembleMembership, robust_scale
from ctfp.membership.proximity import ProximityMembership
from ctfp.membership.selection import stratified_folds
from ctfp.runs.models import load_model, save_model


def data(seed: int = 0, n: int = 30, d: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n // 2)
    x = rng.standard_normal((n, d)).astype(np.float32)
    g = (x[y == 1][rng.integers(0, n // 2, 40)] + 0.1 * rng.standard_normal((40, d))).astype(
        np.float32
    )
    return x, y, g


MEMBERS = [
    {"method": "proximity", "params": {"metric": "l2", "reference": False}},
    {"method": "centroid", "params": {"k": 2}},
]


def test_scales_come_from_out_of_fold_scores_and_the_mean_is_taken() -> None:
    x, y, g = data()
    model = EnsembleMembership(members=MEMBERS, random_state=3).fit(x, y, g)
    # Brute force: proximity learns nothing from the labels (its training scores are out of
    # sample); centroid does, so its scale comes from 5-fold out-of-fold scores.
    prox = ProximityMembership(metric="l2", reference=False, device="cpu").fit(x, y, g)
    c1, s1 = robust_scale(prox.score_samples(x))
    fold = stratified_folds(y, 5, 3)
    oof = np.empty(len(y))
    for f in range(5):
        t = fold == f
        part = CentroidMembership(k=2, random_state=3, device="cpu").fit(x[~t], y[~t])
        oof[t] = part.score_samples(x[t])
    c2, s2 = robust_scale(oof)
    np.testing.assert_allclose(model.centers_, [c1, c2])
    np.testing.assert_allclose(model.scales_, [s1, s2])
    full = CentroidMembership(k=2, random_state=3, device="cpu").fit(x, y)
    new = data(seed=1)[0]
    expect = ((prox.score_samples(new) - c1) / s1 + (full.score_samples(new) - c2) / s2) / 2
    np.testing.assert_allclose(model.score_samples(new), expect, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        model.train_scores_, ((prox.score_samples(x) - c1) / s1 + (oof - c2) / s2) / 2
    )
    assert model.uses_labels and model.needs_generated
    assert set(model.predict(new)) <= {0, 1}


def test_given_scales_are_used_and_the_saved_model_scores_the_same(tmp_path) -> None:
    x, y, g = data()
    members = [{**m, "center": 0.5 * i, "scale": 2.0 + i} for i, m in enumerate(MEMBERS)]
    model = EnsembleMembership(members=members, random_state=0).fit(x, y, g)
    np.testing.assert_allclose(model.centers_, [0.0, 0.5])
    np.testing.assert_allclose(model.scales_, [2.0, 3.0])
    save_model(model, tmp_path / "m", identity={"decode": {}})
    loaded = load_model(tmp_path / "m", device="cpu").model
    new = data(seed=2)[0]
    assert isinstance(loaded, EnsembleMembership)
    np.testing.assert_allclose(loaded.score_samples(new), model.score_samples(new), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(new), model.predict(new))
    assert loaded.threshold_ == model.threshold_


def test_weights_weigh_the_members_and_are_saved(tmp_path) -> None:
    x, y, g = data()
    members = [
        {**m, "center": 0.5 * i, "scale": 2.0 + i, "weight": w}
        for i, (m, w) in enumerate(zip(MEMBERS, (3, 1), strict=True))
    ]
    model = EnsembleMembership(members=members, random_state=0).fit(x, y, g)
    np.testing.assert_allclose(model.weights_, [0.75, 0.25])
    new = data(seed=2)[0]
    parts = [
        (m.score_samples(new) - c) / s
        for m, c, s in zip(model.members_, (0.0, 0.5), (2.0, 3.0), strict=True)
    ]
    np.testing.assert_allclose(model.score_samples(new), 0.75 * parts[0] + 0.25 * parts[1])
    save_model(model, tmp_path / "m", identity={"decode": {}})
    loaded = load_model(tmp_path / "m", device="cpu").model
    np.testing.assert_allclose(loaded.weights_, [0.75, 0.25])
    np.testing.assert_allclose(loaded.score_samples(new), model.score_samples(new), rtol=1e-6)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "at least one member"),
        ([{"params": {}}], "with a 'method'"),
        ([{"method": "ensemble"}], "cannot itself be an ensemble"),
        ([{"method": "nope"}], "unknown membership method"),
        ([{"method": "proximity", "center": 1.0}], "both 'center' and 'scale'"),
        ([{"method": "proximity", "center": 0.0, "scale": 0.0}], "scale positive"),
        ([{"method": "proximity", "center": float("nan"), "scale": 1.0}], "must be finite"),
        ([{"method": "proximity", "weight": 0}], "weight must be a finite positive"),
        ([{"method": "proximity", "weight": float("inf")}], "weight must be a finite positive"),
        ([{"method": "proximity", "weight": "heavy"}], "weight must be a finite positive"),
    ],
)
def test_bad_members_are_refused(members: list, message: str) -> None:
    x, y, g = data()
    with pytest.raises(ValueError, match=message):
        EnsembleMembership(members=members).fit(x, y, g)
