"""Task 2's ``--method auto``: cross-validated choice on the labels, and the open set."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ctfp.attribution.selection import (
    candidate,
    default_candidates,
    fit,
    name_components,
    open_set_pvalues,
    select,
)
from ctfp.attribution.settings import SelectionSettings
from ctfp.exceptions import InputError


def generators(seed: int = 0, k: int = 4, n: int = 40, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Slices of ``k`` generators: in these features each generator has its own centre."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.standard_normal((k, d))
    y = np.repeat(np.arange(k), n)
    return centres[y] + rng.standard_normal((k * n, d)), y


def dataset(seed: int = 0, k: int = 4, labelled: int = 15):
    """Feature "signal" separates the generators, "noise" does not; ``labelled`` slices of
    each generator are labelled, the rest are the test slices."""
    x, y = generators(seed, k)
    rng = np.random.default_rng(seed + 1)
    noise = rng.standard_normal(x.shape)
    is_train = np.zeros(len(y), bool)
    for g in range(k):
        is_train[np.flatnonzero(y == g)[:labelled]] = True
    names = np.array([f"gen{g}" for g in y], dtype=object)
    data = {
        "signal": (x[is_train], x[~is_train]),
        "noise": (noise[is_train], noise[~is_train]),
    }
    return data, names[is_train], y[~is_train]


def test_the_features_that_carry_the_generator_are_chosen() -> None:
    data, groups, test_truth = dataset()
    candidates = default_candidates(["noise", "signal"], len(groups))
    selection = select(data, groups, candidates, SelectionSettings(repeats=1, bootstrap=50))
    best = selection.best
    assert best.candidate.features == "signal" and best.score > 0.9
    noise = [t.score for t in selection.trials if t.candidate.features == "noise" and not t.error]
    assert noise and max(noise) < 0.3
    # The rule: the best family, in it the simplest setting within one paired SE of the best.
    top = max((t for t in selection.trials if not t.error), key=lambda t: t.score)
    assert best.candidate.family == top.candidate.family and best.within_one_se
    # The winner, fitted on every labelled slice, attributes the test slices.
    x, test = data["signal"]
    model = fit(best.candidate, x, groups, test, 0, "cpu")
    assert adjusted_rand_score(test_truth, model.predict_groups(test)) > 0.9
    table = selection.to_dict()
    assert table["groups"] == ["gen0", "gen1", "gen2", "gen3"]
    assert sum(c["chosen"] for c in table["candidates"]) == 1 and len(table["candidates"]) == len(
        candidates
    )


def test_a_generator_left_out_of_train_is_unknown() -> None:
    """Five generators make the test slices; train/ labels four. The fifth's slices fit no
    known group; the known ones are rejected at about the stated rate."""
    x, y = generators(3, k=5, n=60)
    known = y < 4
    is_train = np.zeros(len(y), bool)
    for g in range(4):
        is_train[np.flatnonzero(y == g)[:30]] = True
    test = ~is_train
    groups = np.array([f"gen{g}" for g in y[is_train]], dtype=object)
    data = {"signal": (x[is_train], x[test])}
    for way in ("classify", "semi"):
        candidates = [c for c in default_candidates(["signal"], len(groups)) if c.method == way]
        selection = select(data, groups, candidates[:1], SelectionSettings(reject=0.05))
        p = open_set_pvalues(selection)
        assert p is not None and p.shape == (test.sum(),)
        unknown = p <= 0.05
        new = ~known[test]
        assert unknown[new].mean() > 0.9, way  # the unlabelled generator
        assert unknown[~new].mean() < 0.12, way  # known generators: about 5 %
    off = select(data, groups, candidates[:1], SelectionSettings(reject=0.0))
    assert open_set_pvalues(off) is None


def test_mixture_components_are_named_by_the_labels() -> None:
    data, groups, _ = dataset(k=3)
    x, test = data["signal"]
    model = fit(candidate("signal", "semi", {"pca": 4}), x, groups, test, 0, "cpu")
    assert sorted(model.groups) == ["gen0", "gen1", "gen2"]
    assert (model.predict_groups(x) == groups).mean() > 0.95
    # Names follow the labelled slices whatever order the components came out in.
    clustering = model.model
    perm = name_components(clustering, x, groups)
    assert perm == model.groups


def test_what_selection_cannot_do_is_refused() -> None:
    data, groups, _ = dataset()
    candidates = default_candidates(["signal"], len(groups))
    with pytest.raises(InputError, match="at least 2 groups"):
        select(data, np.array(["a"] * len(groups)), candidates)
    few = groups.copy()
    few[few == "gen2"] = "gen1"
    few[np.flatnonzero(groups == "gen1")[0]] = "lonely"
    with pytest.raises(InputError, match="train/lonely/ has 1"):
        select(data, few, candidates)
    with pytest.raises(ValueError, match="no embeddings"):
        select(data, groups, default_candidates(["resnet50"], len(groups)))


def test_the_documented_new_way_is_a_fit_function_and_one_line(monkeypatch) -> None:
    """docs/development.md's example way to attribute: a fit function and a line in WAYS."""
    import re
    from pathlib import Path

    from ctfp.attribution import selection as module

    doc = (Path(__file__).parents[2] / "docs" / "development.md").read_text()
    section = doc.split("An attribution way is", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"Attributor": module.Attributor, "GroupClassifier": module.GroupClassifier}
    namespace |= {"Way": module.Way, "WAYS": dict(module.WAYS)}
    exec(compile(code, "docs/development.md", "exec"), namespace)
    monkeypatch.setattr(module, "WAYS", namespace["WAYS"])
    data, groups, truth = dataset()
    candidates = [c for c in default_candidates(["signal"], len(groups)) if c.method == "nearest"]
    assert [c.params for c in candidates] == [{"pca": 16}]
    selection = select(data, groups, candidates, SelectionSettings(repeats=1, bootstrap=20))
    assert selection.best.candidate.method == "nearest" and selection.best.score > 0.9
    x, test = data["signal"]
    model = fit(selection.best.candidate, x, groups, test, 0, "cpu")
    assert adjusted_rand_score(truth, model.predict_groups(test)) > 0.9
