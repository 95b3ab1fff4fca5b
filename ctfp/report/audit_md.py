"""``audit.md``: an audit record (:func:`ctfp.report.audit.audit_record`) in one paragraph
of plain words, for a reader who does not know the methods' names."""

from __future__ import annotations

from typing import Any

#: Task 1 membership scorers, in plain words.
SCORERS = {
    "centroid": "the distance to the nearest class centre (the seed paper's method)",
    "proximity": "the distance to the nearest generated slice",
    "density": "how densely the generated slices crowd around a slice",
    "counting": "how many generated slices lie close to a slice",
    "reconstruction": "how well the generated slices' main patterns rebuild a slice",
}
#: Task 2 ways of attributing, in plain words.
WAYS = {
    "classify": "a linear classifier trained on the labelled slices",
    "semi": "a Gaussian mixture started from the labelled groups",
    "gmm": "a Gaussian mixture fitted blind to the test slices",
}
FEATURES = {
    "pixels": "the slice itself shrunk to a thumbnail",
    "residual": "the fine noise left after smoothing the slice, a generator's fingerprint",
    "spectrum": "the slice's frequency spectrum",
    "resnet50": "the features of a ResNet50 image network",
}


def criterion_meaning(criterion: str | None) -> str:
    """How a task 1 threshold criterion (``--calibrate``) chose the threshold, in words."""
    text = str(criterion or "")
    if text.startswith("fpr:"):
        try:
            share = f"{float(text[4:]):.0%}"
        except ValueError:
            share = text[4:]
        return (
            f"so that a new not-used slice is wrongly flagged with probability at most {share} "
            "(bounded from the known not-used slices)"
        )
    return {
        "balanced": "to separate the known used and not-used slices best, counting both kinds "
        "of mistake equally",
        "f1": "to give the best F1 score on the known slices (F1 balances missed members "
        "against false alarms)",
        "accuracy": "to classify the most known slices correctly",
    }.get(text, "by the method's own fixed rule (not tuned on the known slices)")


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


HALVES = " (the middle 95 % of the halves: {} to {})"


def _interval(values: Any, form: str = " (95 % interval {} to {})") -> str:
    return "" if not values or None in values else form.format(*map(_num, values[:2]))


def _features_plain(features: str | None) -> str:
    """``pixels:16+residual`` -> what each block looks at, in words."""
    if not features:
        return "unrecorded features"
    parts = []
    for block in str(features).split("+"):
        name, _, size = block.partition(":")
        plain = FEATURES.get(name, name)
        if name == "pixels":
            plain = f"the slice itself shrunk to {size or 64}x{size or 64} pixels"
        parts.append(plain)
    return f"{features} ({'; '.join(parts)})"


#: The sentence audit.md opens with when the network's weights were random.
RANDOM_WARNING = (
    "WARNING: the network had random, untrained weights, so this run only shows that the "
    "software works; it must not be used to audit a real generator."
)


def _model_sentence(model: dict[str, Any], features: str | None) -> str:
    if model["random_weights"]:
        weights, hashed = "with random, untrained network weights", "its random weights"
    elif model["learned_weights"]:
        weights, hashed = f"with the trained network weights {model['weights']}", "the weights"
    else:
        weights = "computed directly from the pixels, with no trained network"
        hashed = "the feature settings"
    pre = model.get("preprocessing") or {}
    size = pre.get("image_size")
    decoded = []
    if model.get("decode_window"):
        decoded.append(f"CT window {model['decode_window']}")
    if size:
        decoded.append(f"resized to {size} px")
    how = f", decoded with {' and '.join(decoded)}" if decoded else ""
    return (
        f"The slices were described by {_features_plain(features)}, {weights}{how}; the "
        f"sha256 of {hashed} is {model.get('weights_sha256') or 'unrecorded'}."
    )


def _task1_paragraph(record: dict[str, Any]) -> list[str]:
    e, c, m = record["evidence"], record["counts"], record["method"]
    known = (
        f"{c['labelled']} real training slices whose status is known ({c['train_used']} used "
        f"to train the generator, {c['train_not_used']} not used)"
        if c.get("train_used")
        else f"{c['train_not_used']} real training slices known not to have been used"
    )
    if m.get("name") == "ensemble" and m.get("members"):
        how = "a weighted average of" if m.get("rule") == "forward selection" else "the average of"
        scorer = f"{how} {m['members']} scoring methods chosen on the labelled slices"
    else:
        scorer = SCORERS.get(str(m.get("name")), str(m.get("name")))
    made = (
        f"{c['generated']} slices the generator made"
        if c.get("generated")
        else "no slices from the generator (none were given)"
    )
    sentences = []
    if e["measured"]:
        cv = m.get("cross_validation") or {}
        n = e["n_candidates"] or 1
        tried = (
            f"trying {n} ways of scoring them and judging each"
            if n > 1
            else f"scoring them by {scorer} (named) and judging it"
        )
        chosen = f"The chosen one, {scorer}," if n > 1 else "It"
        optimism = ", and as the best of many tries it is somewhat optimistic" if n > 1 else ""
        sentences.append(
            f"How it was measured: ctfp compared {known} with {made}, {tried} only on slices it "
            f"had not been fitted on ({cv.get('folds')}-fold cross-validation, {cv.get('repeats')} "
            f"repeats). {chosen} separates used from not-used slices with a ROC-AUC of "
            f"{_num(e['cv_roc_auc'])}{_interval(e['cv_roc_auc_95'])}; ROC-AUC is the chance that "
            "a used slice scores higher than a not-used one (0.5 is guessing, 1.0 is perfect)"
            f"{optimism}."
            + (
                f" Repeating the whole choice on one half of the labelled slices and scoring the "
                f"other half gives {_num(e['heldout_roc_auc'])}"
                f"{_interval(e.get('heldout_roc_auc_95'), HALVES)}, an estimate without that "
                "optimism."
                if e.get("heldout_roc_auc") is not None and n > 1
                else ""
            )
        )
        if e.get("p_value") is not None:
            sentences.append(
                f"Rerun on the labels shuffled at random {e['permutations']} times, the whole "
                f"choice did as well on a share p = {_num(e['p_value'])} of them (with the real "
                "labels counted): the chance of a result this good if the generator's output "
                "said nothing about which slices it was trained on."
            )
        if e["distinguishable_from_chance"] is False:
            sentences.append("That is not distinguishable from guessing.")
    else:
        sentences.append(
            f"How it was measured: with {made} and {known}, ctfp scored the test slices by "
            f"{scorer}; how accurate this is on this data was "
            f"not measured ({e['why_not_measured']})."
        )
    if e.get("examines_generator") is False:
        sentences.append(
            f"The generator's output was not examined: {scorer} compares the test slices with "
            "the known members only, so this measures resemblance to them, not whether the "
            "generator memorised anything."
        )
    sweep = ""
    if e.get("k_rule"):
        sweep = f" (at k={e['k']}, the setting of the k sweep chosen as {e['k_rule']})"
    sentences.append(
        f"Of the {e['n_test']} test slices, {e['test_flagged_used']} were flagged as used to "
        f"train the generator{sweep}, at a threshold chosen {e['criterion_meaning']}."
    )
    t = record.get("test_metrics")
    if t:

        def ci(name: str) -> str:
            return _interval(t.get(f"{name}_ci95"), " [{}, {}]")

        sentences.append(
            f"Checked against the true answers for the {t['n']} test slices: accuracy "
            f"{_num(t['accuracy'])}{ci('accuracy')}, Cohen's kappa {_num(t['kappa'])}"
            f"{ci('kappa')} (agreement beyond chance: 0 is chance, 1 is perfect), ROC-AUC "
            f"{_num(t['roc_auc'])}{ci('roc_auc')} and F1 {_num(t['f1'])}{ci('f1')} (flagging "
            f"every slice would score F1 {_num(t['baseline_all_used_f1'])}); the brackets are "
            "95 % bootstrap intervals."
        )
    return sentences


def _task2_paragraph(record: dict[str, Any]) -> list[str]:
    e, c, m = record["evidence"], record["counts"], record["method"]
    way = WAYS.get(str(m.get("name")), str(m.get("name")))
    sentences = []
    if e["measured"]:
        cv = m.get("cross_validation") or {}
        accuracy = e.get("cv_accuracy")
        right = (
            ""
            if accuracy is None
            else f", and assigned {accuracy:.0%} of the held-out labelled slices to the right "
            "generator"
        )
        sentences.append(
            f"How it was measured: {c['labelled']} synthetic slices whose generator is known "
            f"({c['groups']} generators: {', '.join(e['groups'])}) were used to try "
            f"{e['n_candidates']} ways of telling the generators apart, each judged only on "
            f"labelled slices it had not been fitted on ({cv.get('folds')}-fold "
            f"cross-validation, {cv.get('repeats')} repeats). The chosen way, {way}, recovered "
            f"the known grouping with an adjusted Rand index (ARI) of {_num(e['cv_ari'])}"
            f"{_interval(e['cv_ari_95'])}{right}; ARI is 0 for a random grouping and 1 for the "
            "exact one, and as the best of several tries it is somewhat optimistic."
        )
    else:
        sentences.append(
            f"How it was measured: no slices of known origin were used, so the test slices "
            f"were grouped by {way} with no estimate of how right the grouping is."
        )
    names = e.get("cluster_groups") or {}
    sizes = e.get("cluster_sizes") or []
    shown = ", ".join(f"{names.get(str(j), f'group {j}')}: {n}" for j, n in enumerate(sizes))
    result = f"The {e['n_test']} test slices were put into {e['n_clusters']} groups"
    result += f" ({shown})" if shown else ""
    o = e.get("open_set")
    if o is not None and not o["can_flag"]:
        result += (
            "; there were too few labelled slices for ctfp to flag any test slice as made by a "
            "generator it does not know"
        )
    elif o is not None:
        result += (
            f"; {o['unknown']} fit none of the known generators (about "
            f"{o['expected_by_chance']} would by chance)"
        )
        if o["extra_group"]:
            result += ", more than chance explains: likely a generator not among the labelled ones"
    sentences.append(result + ".")
    t = record.get("test_metrics")
    if t:
        sentences.append(
            f"Checked against the true generators of the {t['n']} test slices: ARI "
            f"{_num(t['ari'])}, normalised mutual information {_num(t['nmi'])} (0 is no "
            "relation, 1 is the true grouping)."
        )
    return sentences


def audit_paragraph(record: dict[str, Any]) -> str:
    """``audit.md``: the audit record as one paragraph a privacy officer can file.

    Parameters
    ----------
    record
        What :func:`audit_record` returns.

    Returns
    -------
    str
        One Markdown paragraph (no trailing newline).
    """
    task = record["task"]
    number = task[-1]
    sentences = [
        f"**ctfp audit of a task {number} run** ({record['question']}).",
        f"Verdict: {record['verdict'].rstrip('.')}.",
    ]
    if record["model"]["random_weights"]:
        sentences.append(RANDOM_WARNING)
    sentences += _task1_paragraph(record) if task == "task1" else _task2_paragraph(record)
    sentences.append(_model_sentence(record["model"], record["method"].get("features")))
    if record["warnings"]:
        sentences.append("Warnings: " + "; ".join(w.rstrip(".") for w in record["warnings"]) + ".")
    report = record["files"].get("report")
    where = "audit.json" + (f" and {report}" if report else "")
    sentences.append(
        f"Written by ctfp {record['ctfp_version']} at {record['written_at']} from the run "
        f"folder {record['run_dir']}; the numbers are in {where}."
    )
    return " ".join(sentences)


__all__ = ["RANDOM_WARNING", "audit_paragraph", "criterion_meaning"]
