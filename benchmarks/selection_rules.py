"""Which rule should ``--method auto`` use to turn its candidate table into one answer?

Reads the membership benchmark's cached runs (``benchmarks/membership.py --out OUT``: each run
folder holds the embeddings of every feature type) and, per dataset, cross-validates every
candidate of the auto grid on the training reals (the out-of-fold scores auto sees) and fits it
on all of them to score the test slices. Both are cached under ``OUT/rules-v2/`` so that the rules
below are compared on exactly the same scores; the test truth only measures.

Rules (each sees the out-of-fold table only; "tied": within one paired standard error of the
best, as in :func:`ctfp.selection.simplest_within_one_se`):

- ``top``: the highest cross-validated AUC alone;
- ``one-se``: the simplest tied setting of the top's method alone (auto's rule until 0.3.0);
- ``forward (default)``: forward selection with replacement from the top over every candidate
  on its feature type (:func:`ctfp.membership.selection.forward_select`, Caruana et al. 2004):
  add the candidate that most raises the out-of-fold AUC of the weighted mean of standardised
  scores until none does;
- ``tied``: the mean of the standardised scores of every tied candidate on the top's
  feature type (:func:`ctfp.membership.selection.ensemble_trial`: each member's scores minus the
  median of its out-of-fold scores, over their interquartile range; one embedding at scoring
  time); ``tied, best N``: at most the N best of those;
- ``tied, same method``: the mean of the tied settings of the top's method only;
- ``tied, any features``: the same over every tied candidate (several embeddings to score);
- ``nested``: the default's mean or the top alone, whichever does better on held-out halves of
  the out-of-fold scores (:func:`nested_prefers_mean`: the choice itself cross-validated);
- ``top N, ...``: the N best by cross-validated AUC, tied or not.

Prints per family mean ± sd over seeds of each rule's test AUC, and over all datasets the paired
difference of each rule to ``one-se`` with its standard error.

    python benchmarks/selection_rules.py --out bench-out/membership
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.evaluate import read_table
from ctfp.membership.options import SelectionSettings
from ctfp.membership.selection import (
    CENTROID_KS,
    build,
    candidate,
    default_candidates,
    ensemble_trial,
    evaluator,
    forward_select,
)
from ctfp.runs.folder import embeddings_dir
from ctfp.selection import ROC_AUC, Trial, auc_of, aucs, measure, simplest_within_one_se
from ctfp.store.reader import read_embeddings


def scores_of(run: Path, truth: dict[str, str], seed: int) -> dict[str, Any]:
    """Out-of-fold and test scores of every candidate on one cached run."""
    summary = json.loads((run / "summary.json").read_text())
    features = summary["selection"]["features_tried"]
    data = {}
    for f in features:
        emb = read_embeddings(embeddings_dir(run, f))
        order = np.argsort(emb.ids)
        ids, labels, matrix = emb.ids[order], emb.labels[order], emb.matrix[order]
        train = (labels == "used") | (labels == "not_used")
        test = np.array([i.startswith("test/") for i in ids])
        data[f] = (
            matrix[train],
            (labels[train] == "used").astype(int),
            matrix[labels == "generated"],
            matrix[test],
            np.array([int(truth[i[len("test/") :]]) for i in ids[test]]),
        )
    y = next(iter(data.values()))[1]
    n_small = int(min(y.sum(), (y == 0).sum()))
    settings = SelectionSettings()
    out: dict[str, Any] = {"y": y, "truth": next(iter(data.values()))[4], "candidates": {}}
    for c in default_candidates(features, n_small, True, CENTROID_KS):
        tx, ty, g, x, _ = data[c.features]
        trial = measure(c, evaluator({c.features: (tx, g)}, ty, settings, seed, "cpu"), ty, ROC_AUC)
        if trial.error is not None:
            continue
        model = build(c, seed, "cpu").fit(tx, ty, g)
        out["candidates"][c.label] = {
            "trial": trial,
            "train": model.score_samples(tx),
            "test": model.score_samples(x),
        }
    return out


def nested_prefers_mean(trials: list[Trial], y: np.ndarray, seed: int) -> bool:
    """The ``nested`` rule's decision: on 5 repeats of a stratified 2-fold split of the
    training rows, find the top and its tied set on one half (AUCs and paired SEs of the
    out-of-fold scores there) and score, on the other half, the top alone against the mean of
    the tied ones (standardised on the first half). True when the mean does at least as well."""
    from ctfp.evaluate import bootstrap_indices, stratified_folds
    from ctfp.membership.ensemble import robust_scale

    alone, mean = [], []
    for r in range(5):
        fold = stratified_folds(y, 2, seed + 100 + r)
        for f in range(2):
            a, b = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            aucs = [auc_of(y[a], t.oof[a]) for t in trials]
            i = max(range(len(trials)), key=lambda j: (aucs[j], -trials[j].candidate.complexity))
            top = trials[i]
            idx = bootstrap_indices(y[a], 200, seed)
            ref = np.array([auc_of(y[a][row], top.oof[a][row]) for row in idx])
            tied = []
            for j, t in enumerate(trials):
                if t.candidate.features != top.candidate.features:
                    continue
                gap = ref - np.array([auc_of(y[a][row], t.oof[a][row]) for row in idx])
                if aucs[j] >= aucs[i] - gap.std(ddof=1):
                    tied.append(t)
            alone.append(auc_of(y[b], top.oof[b]))
            parts = []
            for t in tied:
                center, scale = robust_scale(t.oof[a])
                parts.append((t.oof[b] - center) / scale)
            mean.append(auc_of(y[b], np.mean(parts, axis=0)))
    return float(np.mean(mean)) >= float(np.mean(alone))


def paired_gaps(top: Trial, trials: list[Trial], y: np.ndarray, resamples: int, seed: int) -> None:
    """Each trial's ``gap_se``: the bootstrap standard error of ``top``'s AUC minus its own on
    the same class-stratified resamples (as :func:`ctfp.selection.select` measures it)."""
    from ctfp.evaluate import bootstrap_indices

    idx = bootstrap_indices(y, resamples, seed)
    ref = aucs(y[idx], top.oof[idx])
    for t in trials:
        t.gap_se = float((ref - aucs(y[idx], t.oof[idx])).std(ddof=1))


def rules(cached: dict[str, Any], seed: int) -> dict[str, float]:
    """Test AUC of each rule on one dataset."""
    y, truth, cands = cached["y"], cached["truth"], cached["candidates"]
    trials: list[Trial] = [v["trial"] for v in cands.values()]
    settings = SelectionSettings()
    top = max(trials, key=lambda t: (t.score, -t.candidate.complexity))
    paired_gaps(top, trials, y, settings.bootstrap, seed)
    for t in trials:
        t.chosen = t.within_one_se = False
    one_se = simplest_within_one_se(trials, top)
    tied = [t for t in trials if t.within_one_se]
    ranked = sorted(trials, key=lambda t: -t.score)
    same = [t for t in ranked if t.candidate.features == top.candidate.features]

    def ensemble_test_auc(trial: Trial) -> float:
        """An ensemble trial's members' test scores, standardised as it recorded them
        (median and IQR of their out-of-fold scores) and weighted, on the test set."""
        if trial.candidate.method != "ensemble":
            return auc_of(truth, cands[trial.candidate.label]["test"])
        features = trial.candidate.features
        parts, weights = [], []
        for m in trial.candidate.params["members"]:
            label = candidate(features, m["method"], m["params"]).label
            parts.append((cands[label]["test"] - m["center"]) / m["scale"])
            weights.append(m["weight"])
        return auc_of(truth, np.asarray(weights) @ np.asarray(parts))

    def test_auc(members: list[Trial]) -> float:
        """The equal mean of ``members`` as ``--combine tied`` builds it."""
        if len(members) == 1:
            return auc_of(truth, cands[members[0].candidate.label]["test"])
        ordered = sorted(members, key=lambda t: (-t.score, t.candidate.complexity))
        return ensemble_test_auc(ensemble_trial([(t, 1.0) for t in ordered], ordered[0], y))

    family = [t for t in same if t.within_one_se and t.candidate.method == top.candidate.method]
    forward = forward_select(same, top, y, seed) or top
    got = {
        "top": test_auc([top]),
        "one-se": test_auc([one_se]),
        "forward (default)": ensemble_test_auc(forward if forward is not top else one_se),
        "tied": test_auc([t for t in same if t.within_one_se]),
        "tied, same method": test_auc(family),
        "tied, any features": test_auc(tied),
        "nested": test_auc(
            [t for t in same if t.within_one_se] if nested_prefers_mean(trials, y, seed) else [top]
        ),
    }
    for n in (3, 10):
        got[f"tied, best {n}"] = test_auc([t for t in same if t.within_one_se][:n])
    for n in (3, 5):
        got[f"top {n}, any features"] = test_auc(ranked[:n])
        got[f"top {n}, same features"] = test_auc(same[:n])
    got["oracle"] = max(auc_of(truth, v["test"]) for v in cands.values())
    got["n-tied"] = float(sum(t.within_one_se for t in same))
    members = forward.candidate.params.get("members") if forward is not top else None
    got["n-forward"] = float(len(members) if members else 1)
    got["forward in-sample"] = forward.score if forward is not top else one_se.score
    got["forward held-out"] = forward.heldout if forward is not top else one_se.score
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/membership")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    per: dict[str, dict[int, dict[str, float]]] = {}
    for run in sorted((out / "runs").iterdir()):
        stem = run.name
        family, seed_s = stem.rsplit("-seed", 1)
        seed = int(seed_s)
        truth_file = out / "data" / stem / "task1_truth.csv"
        cache = out / "rules-v2" / f"{stem}.pkl"  # v2: trials of the selection core (0.4)
        if cache.is_file():  # the scores of an earlier pass (the run folder may be rerunning)
            cached = pickle.loads(cache.read_bytes())
        elif (run / "summary.json").is_file() and truth_file.is_file():
            print(f"{stem} ...", file=sys.stderr, flush=True)
            cached = scores_of(run, read_table(truth_file, "label"), seed)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(cached))
        else:
            continue
        per.setdefault(family, {})[seed] = rules(cached, seed)
    counts = ("n-tied", "n-forward")
    names = [k for k in next(iter(next(iter(per.values())).values())) if k not in counts]
    print("| family | " + " | ".join(names) + " | tied | forward members |")
    print("| --- " * (len(names) + 3) + "|")
    for family, by_seed in per.items():
        cells = []
        for n in [*names, *counts]:
            v = np.array([r[n] for r in by_seed.values()])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        print(f"| {family} | " + " | ".join(cells) + " |")
    flat = [r for by_seed in per.values() for r in by_seed.values()]
    print(f"\nOver {len(flat)} datasets, paired difference to one-se (mean ± sd, wins/losses):")
    base = np.array([r["one-se"] for r in flat])
    for n in names:
        d = np.array([r[n] for r in flat]) - base
        print(
            f"  {n:26s} {np.mean([r[n] for r in flat]):.3f}  diff {d.mean():+.3f} ± "
            f"{d.std(ddof=1):.3f} (se {d.std(ddof=1) / np.sqrt(len(d)):.3f}), "
            f"better on {(d > 1e-9).sum()}, worse on {(d < -1e-9).sum()}"
        )
    print("\nAverage over the families (each the mean over its seeds):")
    for n in names:
        print(
            f"  {n:26s} {np.mean([np.mean([r[n] for r in b.values()]) for b in per.values()]):.3f}"
        )
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
