"""Task 2 settings: the mixture's options, validated once, shared by the in-memory and streamed
fits."""

from __future__ import annotations

import pytest

from ctfp.attribution.settings import ClusterSettings, Task2Settings, parse_k
from ctfp.settings import SettingsError


def test_defaults_and_round_trip() -> None:
    s = Task2Settings()
    assert (s.k, s.covariance_type, s.init, s.pca, s.n_init) == ("auto", "full", "kmeans", None, 1)
    assert (s.method, s.classifier, s.folds, s.reject) == ("auto", "lr", 5, 0.05)
    assert list(s.ks) == list(range(2, 9))
    assert Task2Settings.from_dict(s.to_dict()) == s
    c = ClusterSettings(k="auto", k_range=(2, 5), sample=100)
    assert ClusterSettings.from_dict(c.to_dict()) == c and list(c.ks) == [2, 3, 4, 5]


def test_parse_k_and_refusals() -> None:
    assert parse_k("auto") == "auto" and parse_k("7") == 7
    with pytest.raises(SettingsError):
        parse_k("seven")
    for bad in (dict(k=0), dict(pca=0), dict(n_init=0), dict(init="hierarchical")):
        with pytest.raises(SettingsError):
            Task2Settings(**bad)
    for bad in (dict(passes=0), dict(tol=-1.0), dict(tol=float("inf")), dict(batch_size=0)):
        with pytest.raises(SettingsError):
            ClusterSettings(**bad)
