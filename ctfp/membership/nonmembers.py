"""Task 1 with known non-members only (no ``train/used/``): which score answers, and the check
of the threshold's false-positive promise on the non-members held out. Without members nothing
can be cross-validated, so both rest on the known non-members dealt into folds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ctfp.membership.selection import fit_scorer
from ctfp.selection import Candidate, aucs


def deal(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold number of each of ``n`` known non-members: dealt round-robin, then shuffled
    (seeded); the choice and the false-positive check deal them alike."""
    return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def choose_without_members(
    data: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    test: Mapping[str, np.ndarray],
    candidates: Sequence[Candidate],
    *,
    default: Candidate | None = None,
    folds: int = 5,
    resamples: int = 200,
    seed: int = 0,
    device: str = "auto",
) -> tuple[Candidate, list[dict[str, Any]]]:
    """The score to answer with when there are known non-members but no known members, and the
    table of what was tried.

    The known non-members are dealt into ``folds`` folds; for each, every candidate is fitted
    on the other folds and scores the held-out fold and the test slices; its measure is the
    ROC-AUC of test slices against held-out non-members, averaged over the folds. Where the
    test's non-members are like the known ones, that AUC is ``0.5 + pi x (AUC on members -
    0.5)`` with ``pi`` the share of members among the test slices, so it ranks the scores
    whatever ``pi`` is. The ``default`` answers unless the best beats it by more than one
    standard error of their gap (``resamples`` paired bootstrap draws of the test slices and
    of each fold's non-members); otherwise the best answers (ties to the simpler).

    ``data``: for each feature type, (known non-members (n, d), generated (m, d)); ``test``: the
    test slices (t, d) of each feature type. Candidates that cannot run are recorded with the
    error."""
    stacked = {f: (np.vstack([x, test[f]]), g) for f, (x, g) in data.items()}
    n = len(next(iter(data.values()))[0])
    t = len(next(iter(test.values())))
    y = np.zeros(n + t, dtype=np.int64)
    fold = deal(n, folds, seed)
    on_test = np.arange(n + t) >= n
    fit_score_of = fit_scorer(stacked, y, seed, device, calibrate="fpr:0.5")
    rows, kept, scores = [], [], []  # scores: per kept candidate, per fold (fold's + test)
    for c in candidates:
        row: dict[str, Any] = {"label": c.label, "features": c.features, "method": c.method}
        rows.append(row)
        try:
            fit_score = fit_score_of(c)
            got = []
            for f in range(folds):
                held = np.concatenate([fold == f, np.zeros(t, dtype=bool)])
                got.append(fit_score(y, ~held & ~on_test, held | on_test))
            if not all(np.isfinite(g).all() for g in got):
                raise ValueError("non-finite scores")
        except ValueError as exc:
            row["error"] = str(exc)
            continue
        kept.append((c, row))
        scores.append(got)
    if not kept:
        raise ValueError(
            f"no score could be measured on {n} known non-members in {folds} folds: "
            + "; ".join(sorted({r["error"] for r in rows if "error" in r}))
        )
    sizes = [int((fold == f).sum()) for f in range(folds)]
    per_fold = [np.array([s[f] for s in scores]) for f in range(folds)]  # (m, k_f + t) each
    truths = [np.r_[np.zeros(k, dtype=np.int64), np.ones(t, dtype=np.int64)] for k in sizes]

    def measure(picks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        cols = picks or [np.arange(k + t) for k in sizes]
        return np.mean([aucs(truths[f], per_fold[f][:, cols[f]]) for f in range(folds)], axis=0)

    rng = np.random.default_rng(seed + 1)
    observed = measure()
    draws = []
    for _ in range(resamples):
        on = rng.integers(t, size=t)
        draws.append(measure([np.r_[rng.integers(k, size=k), k + on] for k in sizes]))
    order = [(observed[i], -c.complexity) for i, (c, _) in enumerate(kept)]
    top = max(range(len(kept)), key=order.__getitem__)
    gaps = np.array(draws)[:, top, None] - np.array(draws)
    se = gaps.std(axis=0, ddof=1)
    chosen = kept[top][0]
    for i, (c, row) in enumerate(kept):
        tied = bool(observed[top] - observed[i] <= se[i])
        row |= {
            "test_vs_non_members_auc": round(float(observed[i]), 4),
            "gap_se": round(float(se[i]), 4),
            "within_one_se": tied,
        }
        if default is not None and c == default and tied:
            chosen = c
    return chosen, rows


def heldout_false_positives(
    fit: Callable[[np.ndarray], Any], n: int, folds: int = 5, seed: int = 0
) -> dict[str, Any] | None:
    """The check of a known-non-members-only run's ``fpr:`` promise: the ``n`` known
    non-members dealt into ``folds`` folds, each fold's flagged slices counted by
    ``fit(train_mask)`` (a model fitted, threshold included, on the other folds). The held-out
    rate is at most the promised one on average under the bound. None where a fit raises
    ValueError (too few non-members)."""
    fold = deal(n, folds, seed)
    flagged = 0
    for f in range(folds):
        held = fold == f
        try:
            flagged += int(fit(~held)(held))
        except ValueError:
            return None
    return {"flagged": flagged, "of": n, "rate": round(flagged / n, 4), "folds": folds}


__all__ = ["choose_without_members", "deal", "heldout_false_positives"]
