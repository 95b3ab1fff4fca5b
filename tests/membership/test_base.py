"""The membership interface, checked on every registered method: fit / score_samples / predict,
clone and get_params, to_state / from_state, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ctfp.exceptions import InputError
from ctfp.membership.base import MembershipMethod
from ctfp.membership.registry import METHODS

NAMES = sorted(METHODS)


def make(name: str) -> MembershipMethod:
    cls = METHODS[name]
    params = cls().get_params()
    overrides = {"device": "cpu"}
    if "k" in params:
        overrides["k"] = 2
    return cls(**{key: v for key, v in overrides.items() if key in params})


@pytest.mark.parametrize("name", NAMES)
def test_every_method_fits_scores_and_predicts(name: str, memorised) -> None:
    reals, y, generated = memorised()
    model = make(name)
    assert model.name == name and model.task == "task1"
    assert model.fit(reals[:120], y[:120], generated) is model
    score = model.score_samples(reals[120:])
    pred = model.predict(reals[120:])
    assert score.shape == pred.shape == (80,) and score.dtype == np.float64
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (score >= model.threshold_).astype(int))
    if model.needs_generated:  # used slices have near-copies among the generated ones
        assert score[y[120:] == 1].mean() > score[y[120:] == 0].mean()


@pytest.mark.parametrize("name", NAMES)
def test_clone_and_params(name: str, memorised) -> None:
    model = make(name)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    reals, y, generated = memorised()
    model.fit(reals, y, generated)
    fresh = clone(model)
    assert not hasattr(fresh, "threshold_")
    changed = {"device": "cpu"} if "device" in model.get_params() else {"calibrate": "f1"}
    assert model.set_params(**changed) is model and model.get_params()[next(iter(changed))]


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_gives_the_same_answers(name: str, memorised) -> None:
    reals, y, generated = memorised()
    model = make(name).fit(reals, y, generated)
    params, arrays = model.to_state()
    json.dumps(params)  # JSON-ready
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    again = type(model).from_state(json.loads(json.dumps(params)), arrays, device="cpu")
    np.testing.assert_allclose(again.score_samples(reals), model.score_samples(reals), rtol=1e-6)
    np.testing.assert_array_equal(again.predict(reals), model.predict(reals))


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_and_bad_input_errors(name: str, memorised) -> None:
    reals, y, generated = memorised()
    with pytest.raises(NotFittedError, match="not fitted"):
        make(name).score_samples(reals)
    with pytest.raises(NotFittedError, match="not fitted"):
        make(name).predict(reals)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        make(name).fit(reals, y[:-1], generated)
    with pytest.raises(ValueError, match=r"needs used and not-used .* holds 3 classes"):
        make(name).fit(reals, np.arange(len(y)) % 3, generated)
    with pytest.raises(ValueError, match="holds 1 class"):
        make(name).fit(reals, np.ones_like(y), generated)
    with pytest.raises(ValueError, match="Unknown label type"):
        make(name).fit(reals, y + 0.5, generated)
    bad = reals.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make(name).fit(bad, y, generated)
    fitted = make(name).fit(reals, y, generated)
    with pytest.raises(ValueError, match=r"X has 31 features, but .* is expecting 32"):
        fitted.score_samples(reals[:, :31])


@pytest.mark.parametrize("name", NAMES)
def test_any_two_labels_the_larger_is_used(name: str, memorised) -> None:
    reals, y, generated = memorised()
    numbers = make(name).fit(reals, y, generated)
    words = make(name).fit(reals, np.where(y == 1, "used", "not_used"), generated)
    assert words.classes_.tolist() == ["not_used", "used"]
    np.testing.assert_array_equal(words.score_samples(reals), numbers.score_samples(reals))
    np.testing.assert_array_equal(
        words.predict(reals), np.where(numbers.predict(reals) == 1, "used", "not_used")
    )
    assert words.score(reals, np.where(y == 1, "used", "not_used")) == numbers.score(reals, y)
    params, arrays = words.to_state()
    again = type(words).from_state(params, arrays, device="cpu")
    assert again.classes_.tolist() == ["not_used", "used"]
    if METHODS[name].needs_generated:
        with pytest.raises(InputError, match="generated"):
            make(name).fit(reals, y)
