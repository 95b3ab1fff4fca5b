"""The sentence a task-1 run ends with, and what decides it: the kind of evidence a method's
answer is (the generator's output, or the known members alone), whether it is distinguishable
from chance (the permutation p-value of the whole choice), and the estimate it quotes (held out
where the answer is the best of many candidates)."""

from __future__ import annotations

from typing import Any

from ctfp.membership.settings import AUTO
from ctfp.runs.layout import unread_note

#: What a task-1 answer rests on (``summary.json``'s ``evidence``): the generator's output, or
#: the known members alone (the seed method), which says nothing about the generator.
EVIDENCE = {True: "generator", False: "known members"}


def examines_generator(method: str) -> bool:
    """Whether ``method``'s score uses the generated slices (``auto`` chooses only such)."""
    return method == AUTO or evidence_of(method) == EVIDENCE[True]


def evidence_of(method: str | None) -> str:
    """What a run of ``method`` rests on (:data:`EVIDENCE`), for runs that did not record it:
    a registered method's ``needs_generated``; a mix or an unknown name, the generator."""
    from ctfp.membership.registry import REGISTRY, get_method

    return EVIDENCE[method not in REGISTRY or get_method(str(method)).needs_generated]


def beyond_chance(selection: dict[str, Any]) -> bool | None:
    """Whether a run's evidence is distinguishable from chance: the permutation test's p at
    most 0.05 where its shuffles can show that; else the low end of the interval the verdict
    quotes above 0.5; None with neither."""
    test = selection.get("permutation")
    if test and 1 / (test["permutations"] + 1) <= 0.05:
        return bool(test["p_value"] <= 0.05)
    held = selection.get("heldout")
    if held and len(selection.get("candidates") or []) > 1:
        low = held["roc_auc_95"][0]
    else:
        low = ((selection.get("chosen") or {}).get("roc_auc_95") or [None])[0]
    return None if low is None else bool(low > 0.5)


def verdict(summary: dict[str, Any]) -> str:
    """One sentence a non-expert can act on: the evidence (the permutation p-value, which
    decides, and the held-out or cross-validated ROC-AUC; or why there is none) and what the
    run flagged."""
    n_test = summary["n_test"]
    runs = summary.get("runs") or {}
    run = next(iter(runs.values()), {})
    selection = summary.get("selection") or {}
    sweep = len(runs) > 1  # the k chosen on the training reals
    chosen_k = (selection.get("chosen") or {}).get("params", {}).get("k") if sweep else None
    if chosen_k is not None:
        run = runs.get(str(chosen_k), run)
    flagged = run.get("predicted_used", 0)
    calibrate = str(summary.get("calibrate") or "")
    check = summary.get("calibration_check")  # what the false-positive check found, if it ran
    checked = ""
    if check:
        checked = f"; held out in {check['folds']} folds, the threshold flagged {check['flagged']}"
        checked += f" of {check['of']} of them"
    at = (
        f" at a false-positive rate of at most {float(calibrate[4:]):.0%} for new non-members "
        f"(bounded on the {summary.get('n_not_used')} known ones{checked})"
        if calibrate.startswith("fpr:")
        else f" (threshold: {calibrate or 'the method' + chr(39) + 's own'})"
    )
    counts = f"{flagged} of {n_test} test slices flagged as used{at}"
    if chosen_k is not None:
        counts += f" by k={chosen_k}, chosen on the training reals"
    counts += unread_note(summary.get("n_unreadable") or 0)
    blind = summary.get("evidence") == EVIDENCE[False]  # older runs: about the generator
    unseen = "the generator's output was not examined"
    if not selection:
        why = (
            "no known members to measure it on"
            if summary.get("mode") == "non-members only"
            else "too few labelled slices for cross-validation"
        )
        return f"Evidence not measured ({why}){'; ' + unseen if blind else ''}; {counts}."
    chosen, n = selection["chosen"], len(selection["candidates"])
    auc, (low, high) = chosen["roc_auc"], chosen["roc_auc_95"]
    held = selection.get("heldout")  # the whole choice held out (runs before 0.4 lack it)
    if held and n > 1:  # the best of many: quote what the choice scores where it was not made
        low, high = held["roc_auc_95"]
        estimate = (
            f"held-out ROC-AUC {held['roc_auc']:.2f} [{low:.2f}, {high:.2f}] (the whole choice "
            f"among {n} candidates repeated on halves of the {selection['n_labelled']} labelled "
            f"training slices and scored on the other halves; the chosen scorer's own "
            f"cross-validated {auc:.2f} is optimistic)"
        )
    else:
        estimate = (
            f"cross-validated ROC-AUC {auc:.2f} [{low:.2f}, {high:.2f}] on "
            f"{selection['n_labelled']} labelled training slices"
        )
    chance = not beyond_chance(selection)
    test = selection.get("permutation")  # the whole choice on shuffled labels (since 0.4)
    if test:
        p, shuffles = test["p_value"], test["permutations"]
        if 1 / (shuffles + 1) > 0.05:
            estimate += f"; {shuffles} label shuffles cannot show p below 0.05 (p = {p:.2f})"
        else:  # the p-value decides; the estimate says how much
            estimate = f"p = {p:.2g} ({shuffles} label shuffles of the whole choice), {estimate}"
    if blind:  # the seed method: how test slices resemble the known members, nothing more
        return (
            f"{'No resemblance' if chance else 'Resemblance'} to the known members"
            f"{' distinguishable from chance' if chance else ''}, which is not evidence about "
            f"the generator ({unseen}): {estimate}; {counts}."
        )
    if chance:
        return (
            f"No evidence of memorisation distinguishable from chance: {estimate}; "
            f"{counts} (read them as chance)."
        )
    best_of = f" (the best of {n} candidates, so somewhat optimistic)" if n > 1 and not held else ""
    return f"Evidence of memorisation: {estimate}{best_of}; {counts}."


__all__ = ["EVIDENCE", "beyond_chance", "evidence_of", "examines_generator", "verdict"]
