"""Task 1 settings: method options validated once, k sweeps, round trips, what is refused."""

from __future__ import annotations

import math

import pytest

from ctfp.membership.centroid import CentroidMembership
from ctfp.membership.proximity import ProximityMembership, ProximitySettings
from ctfp.membership.settings import Task1Settings
from ctfp.settings import SettingsError


def test_defaults_select_and_the_seed_method_builds() -> None:
    from ctfp.membership.selection import SelectionSettings

    s = Task1Settings()
    assert s.method == "auto" and s.options == SelectionSettings() and s.ks == [4]
    with pytest.raises(SettingsError, match="a selection among methods"):
        s.build()
    assert Task1Settings.with_options(folds=3).options == SelectionSettings(folds=3)
    s = Task1Settings(method="centroid")
    assert s.k == () and s.ks == [4] and s.options is None
    model = s.build()
    assert isinstance(model, CentroidMembership) and model.k == 4 and model.random_state == 0


def test_options_of_the_chosen_method() -> None:
    s = Task1Settings.with_options(method="proximity", metric="l2", neighbours=3, seed=5)
    assert s.options == ProximitySettings(metric="l2", neighbours=3)
    model = s.build()
    assert isinstance(model, ProximityMembership)
    assert model.get_params()["metric"] == "l2" and model.neighbours == 3
    assert Task1Settings.from_dict(s.to_dict()) == s
    assert s.to_dict()["options"]["metric"] == "l2"


def test_k_sweep_and_what_is_refused() -> None:
    assert Task1Settings(method="centroid", k=(1, 2, 4)).ks == [1, 2, 4]
    with pytest.warns(FutureWarning, match="k with method 'auto' is ignored"):
        assert Task1Settings(k=(1, 2)).ks == [4]  # centroid is no longer an auto candidate
    assert Task1Settings.with_options(method="centroid", k=8).k == (8,)
    with pytest.raises(SettingsError, match="not an option of method 'centroid'"):
        Task1Settings.with_options(method="centroid", metric="l2")
    with pytest.raises(SettingsError, match="method 'proximity' has no k"):
        Task1Settings.with_options(method="proximity", k=(1, 2))
    with pytest.raises(SettingsError, match="choose one of"):
        Task1Settings(method="ensemble")
    with pytest.raises(SettingsError, match="positive"):
        Task1Settings(k=(0,))
    with pytest.raises(SettingsError, match="takes ProximitySettings"):
        Task1Settings(method="proximity", options=Task1Settings())
    for bad in (math.nan, math.inf, 1.5, -0.1):
        with pytest.raises(SettingsError, match="recall_target"):
            ProximitySettings(recall_target=bad)
    with pytest.raises(SettingsError, match="neighbours must be at least 1"):
        ProximitySettings(neighbours=0)
