"""Task 1 with known non-members only: which score answers (no test label used)."""

from __future__ import annotations

import numpy as np

from ctfp.membership.nonmembers import choose_without_members
from ctfp.membership.selection import Candidate, candidate, default_candidates


def memorised(seed: int = 0, n: int = 40, d: int = 8):
    """Known non-members, generated slices and test slices (half members) on two feature
    types: on ``copied`` the generator copies its members (with a little noise), on ``noise``
    nothing relates the generated slices to anyone."""
    rng = np.random.default_rng(seed)
    members, known, unknown = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(3))
    copies = members + 0.05 * rng.normal(size=members.shape).astype(np.float32)
    data = {
        "copied": (known, copies),
        "noise": (
            rng.normal(size=(n, d)).astype(np.float32),
            rng.normal(size=(n, d)).astype(np.float32),
        ),
    }
    test = {
        "copied": np.vstack([members, unknown]),
        "noise": rng.normal(size=(2 * n, d)).astype(np.float32),
    }
    return data, test, np.r_[np.ones(n), np.zeros(n)]


def candidates() -> list[Candidate]:
    """Distances and densities on both feature types (the others cost more and add nothing
    here)."""
    grid = default_candidates(["noise", "copied"], 40, True)
    return [c for c in grid if c.method in ("proximity", "density")]


def test_the_score_that_finds_the_copies_beats_a_default_that_cannot() -> None:
    data, test, _ = memorised()
    default = candidate("noise", "proximity", {"metric": "l2", "reference": True})
    chosen, rows = choose_without_members(data, test, candidates(), default=default, seed=0)
    assert chosen.features == "copied"
    by = {r["label"]: r for r in rows}
    assert len(by) == len(candidates()) and not by[default.label]["within_one_se"]
    # Half the test slices are members: a score that finds them all measures about 0.75.
    assert by[chosen.label]["test_vs_non_members_auc"] > 0.7
    assert by[default.label]["test_vs_non_members_auc"] < 0.65
    # The same data, the same choice (seeded folds and bootstrap).
    again, rows_again = choose_without_members(data, test, candidates(), default=default, seed=0)
    assert again == chosen and rows_again == rows


def test_a_default_within_one_standard_error_of_the_best_is_kept() -> None:
    data, test, _ = memorised(seed=1)
    default = candidate("copied", "proximity", {"metric": "l2", "reference": True})
    chosen, rows = choose_without_members(data, test, candidates(), default=default, seed=0)
    by = {r["label"]: r for r in rows}
    assert by[default.label]["within_one_se"] and chosen == default
    best = max(by.values(), key=lambda r: r["test_vs_non_members_auc"])
    assert best["test_vs_non_members_auc"] >= by[default.label]["test_vs_non_members_auc"]
