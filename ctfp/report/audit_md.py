"""An audit record (:func:`ctfp.report.audit.audit_record`) in plain words, for a reader who
does not know the methods' names: the report's Answer box and ``audit.md`` both say
:func:`plain_answer` (the finding, how strong it is, what it rests on, its limits and the next
step), so the page and the file a privacy officer files never disagree."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
#: Fewer labelled slices than this: the answer says the sample is small.
SMALL_SAMPLE = 100
#: The line the answer opens with when the network's weights were random.
RANDOM_WARNING = (
    "The network had random, untrained weights, so this run only shows that the software "
    "works; it must not be used to audit a real generator."
)
HEADINGS = ("Finding", "Strength of evidence", "What was examined", "Limits", "Next steps")
# Exception text of a failed download (urllib, sockets): said as "offline", never quoted.
OFFLINE = re.compile(
    r"urlopen|Name or service not known|Temporary failure in name resolution|Network is "
    r"unreachable|timed out|Connection (refused|reset)",
    re.I,
)


@dataclass
class Answer:
    """What a run found, in plain words: ``warnings`` are read before the finding."""

    finding: str
    warnings: list[str] = field(default_factory=list)
    strength: list[str] = field(default_factory=list)
    examined: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def sections(self) -> list[tuple[str, list[str]]]:
        """(heading, lines) of :data:`HEADINGS` after the finding."""
        lines = (self.strength, self.examined, self.limits, self.next_steps)
        return list(zip(HEADINGS[1:], lines, strict=True))


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


def features_plain(features: str | None) -> str:
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
    return "; ".join(parts)


def left_out(name: str, reason: str) -> str:
    """Why a feature type was not tried, in one line without exception text."""
    what = FEATURES.get(name, name)
    if OFFLINE.search(reason):
        why = "its ImageNet weights could not be downloaded (offline)"
    else:  # the reason's first clause, without Python reprs such as <...> or (None)
        why = re.sub(r"\s*(<[^>]*>|\(None\))", "", reason).split(". ")[0].rstrip(" :.")
    return f"{name} ({what}) was not tried: {why}."


def _sentence(text: str) -> str:
    """A warning as a sentence: capitalised where it opens with a plain word (not
    ``k=auto``), one full stop."""
    text = text.rstrip(".") + "."
    return text[:1].upper() + text[1:] if re.match(r"[a-z]+ ", text) else text


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _interval(values: Any, form: str = " (95 % interval {} to {})", show: Any = _num) -> str:
    return "" if not values or None in values else form.format(*map(show, values[:2]))


def _weights(model: dict[str, Any]) -> str:
    if model["random_weights"]:
        return "with random, untrained network weights"
    if model["learned_weights"]:
        return f"with the trained network weights {model['weights']}"
    return "computed directly from the pixels, with no trained network"


def _common(record: dict[str, Any], answer: Answer) -> None:
    """The warnings and next steps every run can have: random weights, feature types left
    out, the run's own warnings (unread inputs among them)."""
    model, method = record["model"], record["method"]
    if model["random_weights"]:
        answer.warnings.append(RANDOM_WARNING)
        answer.next_steps.append(
            "Re-run with ImageNet weights (`--weights imagenet` where there is internet, or "
            "`--weights PATH` with a downloaded copy): with random weights the numbers mean "
            "nothing."
        )
    skipped = method.get("left_out") or {}
    answer.warnings += [left_out(name, str(why)) for name, why in skipped.items()]
    if any(OFFLINE.search(str(why)) for why in skipped.values()):
        answer.next_steps.append(
            "To include the ResNet50 features, re-run where its ImageNet weights can be "
            "downloaded, or pass `--weights PATH` with a downloaded copy."
        )
    answer.warnings += [_sentence(w) for w in record["warnings"]]
    if any("could not be read" in w for w in record["warnings"]):
        answer.next_steps.append("Fix or remove the unreadable inputs named above, and re-run.")
    answer.examined.append(
        f"What ctfp looked at in each slice: {features_plain(method.get('features'))}, "
        f"{_weights(model)}."
    )


def _task1(record: dict[str, Any], answer: Answer) -> None:
    e, c, m = record["evidence"], record["counts"], record["method"]
    flagged, n_test = e["test_flagged_used"], e["n_test"]
    chance = e["distinguishable_from_chance"] is False
    counted = f"{flagged} of {n_test} test slices were flagged as used to train the generator"
    if not e["measured"]:
        head = f"Not measured: how often these flags are right is unknown ({e['why_not_measured']})"
    elif not e["examines_generator"]:
        head = (
            f"{'No resemblance' if chance else 'Resemblance'} to the known members"
            f"{' distinguishable from chance' if chance else ''}; the generator's output was not "
            "examined, so this is not evidence about the generator"
        )
    elif chance:
        head = "No evidence of memorisation distinguishable from chance"
        counted += " (read them as chance)"
    else:
        head = (
            "Evidence of memorisation: the generator's output resembles the slices it was "
            "trained on more than the others"
        )
    answer.finding = f"{head}. {counted}."

    if m.get("name") == "ensemble" and m.get("members"):
        how = "a weighted average of" if m.get("rule") == "forward selection" else "the average of"
        scorer = f"{how} {m['members']} scoring methods chosen on the labelled slices"
    else:
        scorer = SCORERS.get(str(m.get("name")), str(m.get("name")))
    n = e["n_candidates"] or 1
    if not e["measured"]:
        answer.strength.append(f"Not measured: {e['why_not_measured']}.")
    else:
        pairs = "a used slice scored above a not-used one in"
        guess = "50% is guessing, 100% perfect"
        if e.get("heldout_roc_auc") is not None and n > 1:
            spread = _interval(e.get("heldout_roc_auc_95"), "; {} to {} over the halves", _pct)
            answer.strength.append(
                f"Held out: with the whole choice among {n} candidate methods made on half of the "
                f"labelled slices, {pairs} {_pct(e['heldout_roc_auc'])} of pairs of the other "
                f"half ({guess}{spread})."
            )
        else:
            best_of = "; the best of many tries, so somewhat optimistic" if n > 1 else ""
            answer.strength.append(
                f"Cross-validated: on labelled slices it had not been fitted on, {pairs} "
                f"{_pct(e['cv_roc_auc'])} of pairs ({guess}"
                f"{_interval(e['cv_roc_auc_95'], '; 95 % interval {} to {}', _pct)}{best_of})."
            )
        if e.get("p_value") is not None:
            luck = "unlikely to be luck" if not chance else "what luck alone often gives"
            answer.strength.append(
                f"With the labels shuffled at random {e['permutations']} times, the whole "
                f"choice did as well on {_pct(e['p_value'])} of them (p = {e['p_value']:.2g}): "
                f"a result this strong is {luck}."
            )
    t = record.get("test_metrics")
    if t:

        def ci(name: str) -> str:
            return _interval(t.get(f"{name}_ci95"), " [{}, {}]")

        answer.strength.append(
            f"Checked against the true answers for the {t['n']} test slices: accuracy "
            f"{_num(t['accuracy'])}{ci('accuracy')}, Cohen's kappa {_num(t['kappa'])}"
            f"{ci('kappa')} (agreement beyond chance: 0 is chance, 1 is perfect), ROC-AUC "
            f"{_num(t['roc_auc'])}{ci('roc_auc')} and F1 {_num(t['f1'])}{ci('f1')} (flagging "
            f"every slice would score F1 {_num(t['baseline_all_used_f1'])}); the brackets are "
            "95 % bootstrap intervals."
        )

    known = (
        f"{c['train_used']} real training slices known to be used to train the generator and "
        f"{c['train_not_used']} known not to be"
        if c.get("train_used")
        else f"{c['train_not_used']} real training slices known not to have been used"
    )
    made = (
        f"{c['generated']} slices the generator made"
        if c.get("generated")
        else "no slices from the generator (none were given)"
    )
    chosen = f", chosen among {n} candidate methods by cross-validation" if n > 1 else ""
    answer.examined[:0] = [
        f"{known}, compared with {made}; then the {n_test} test slices.",
        f"Each slice was scored by {scorer}{chosen}; the threshold was set "
        f"{e['criterion_meaning']}.",
    ]
    if e.get("examines_generator") is False:
        answer.examined.append(
            "The generator's output was not examined: this method compares the test slices "
            "with the known members only, so it measures resemblance to them, not whether the "
            "generator memorised anything."
        )
    labelled = e.get("n_labelled") or 0
    if labelled and labelled < SMALL_SAMPLE:
        answer.limits.append(
            f"A small sample: {labelled} labelled slices. With so few the estimate moves "
            "between runs, and only a strong effect can show."
        )
        answer.next_steps.append(
            f"Label more slices in train/used/ and train/not_used/ (now {c['train_used']} and "
            f"{c['train_not_used']}): the estimate firms up as they grow."
        )
    if not e["measured"]:
        answer.next_steps.append(
            "Add slices known to be used (train/used/) so ctfp can measure how often its flags "
            "are right."
            if not c.get("train_used")
            else "Label more slices in both classes so ctfp can measure how often its flags "
            "are right (cross-validation needs at least 5 of each)."
        )
    elif e.get("examines_generator") is False:
        answer.next_steps.append(
            ("Re-run" if c.get("generated") else "Put its output in generated/ and re-run")
            + " with `--method auto`, so the generator's output itself is tested."
        )
    elif chance:
        answer.next_steps.append(
            "Nothing here supports a finding; more labelled slices would show a weaker effect "
            "if there is one."
        )
    if flagged and e["measured"] and e.get("examines_generator") and not chance:
        answer.next_steps.append(
            f"Have the {flagged} flagged slices reviewed: the report's Evidence section shows "
            "the highest-scoring ones beside their nearest generated slice."
        )


def _task2(record: dict[str, Any], answer: Answer) -> None:
    e, c, m = record["evidence"], record["counts"], record["method"]
    way = WAYS.get(str(m.get("name")), str(m.get("name")))
    names = e.get("cluster_groups") or {}
    sizes = e.get("cluster_sizes") or []
    named = [names.get(str(j), f"group {j}") for j in range(len(sizes))]
    shown = ", ".join(f"{g}: {s}" for g, s in zip(named, sizes, strict=True))
    if e["measured"]:
        answer.finding = (
            f"The {e['n_test']} test slices were attributed to {len(e['groups'])} known "
            f"generators ({shown})."
        )
    else:
        answer.finding = (
            f"The {e['n_test']} test slices were grouped into {e['n_clusters']} groups by their "
            f"fingerprints ({shown}); no slices of known origin were used, so the groups are "
            "not named and how right they are was not measured."
        )
    o = e.get("open_set")
    if o is not None and o["can_flag"]:
        answer.finding += (
            f" {o['unknown']} fit none of the known generators (about "
            f"{o['expected_by_chance']} would by chance)."
        )
        if o["extra_group"]:
            answer.warnings.append(
                f"{o['unknown']} test slices fit none of the labelled generators, more than "
                "chance explains: likely a generator that train/ does not hold (they are -1 in "
                f"{o['file']})."
            )
            answer.next_steps.append(
                f"Look at the slices marked -1 in {o['file']}: they may come from a generator "
                "that is not among the labelled ones."
            )
    if len(sizes) > 1 and max(sizes) == sum(sizes):
        answer.warnings.append(
            "The fit collapsed: every test slice fell in one group, so it attributes nothing."
        )
    else:
        answer.warnings += [
            f"No test slice was attributed to {g}: none came from it, or the features cannot "
            "tell it from another generator."
            for g, s in zip(named, sizes, strict=True)
            if s == 0
        ]

    n = e["n_candidates"] or 1
    if e["measured"]:
        right = e.get("cv_accuracy")
        right = "" if right is None else f"; {_pct(right)} of them went to the right generator"
        answer.strength.append(
            "Cross-validated: on labelled slices it had not been fitted on, the attribution "
            "matched the known generators with an adjusted Rand index (ARI; 0 is a random "
            f"grouping, 1 the exact one) of {_num(e['cv_ari'])}{_interval(e['cv_ari_95'])}{right}"
            + ("; as the best of several tries it is somewhat optimistic." if n > 1 else ".")
        )
    else:
        answer.strength.append(f"Not measured: {e['why_not_measured']}.")
        answer.next_steps.append(
            "Re-run with the default `--method auto` and a few labelled examples of each "
            "generator in train/<group>/, so the attribution is measured and its groups named."
        )
    t = record.get("test_metrics")
    if t:
        answer.strength.append(
            f"Checked against the true generators of the {t['n']} test slices: ARI "
            f"{_num(t['ari'])}, normalised mutual information {_num(t['nmi'])} (0 is no "
            "relation, 1 is the true grouping)."
        )
    chosen = f", chosen among {n} ways by cross-validation" if n > 1 else ""
    known = (
        f"{c['labelled']} synthetic slices whose generator is known ({c['groups']} generators: "
        f"{', '.join(e['groups'])}), and the {e['n_test']} test slices."
        if e["measured"]
        else f"The {e['n_test']} test slices."
    )
    verb = "attributed" if e["measured"] else "grouped"
    answer.examined[:0] = [known, f"They were {verb} by {way}{chosen}."]
    labelled = e.get("n_labelled") or 0
    if e["measured"] and labelled < SMALL_SAMPLE:
        answer.limits.append(
            f"A small sample: {labelled} labelled slices. With so few the estimate moves "
            "between runs."
        )
        answer.next_steps.append(
            "Label more slices of each generator in train/<group>/: the estimate firms up as "
            "they grow."
        )
    if e["measured"] and not answer.warnings:
        answer.next_steps.append(
            "Have a few slices of each group checked: the report shows some per group."
        )


def plain_answer(record: dict[str, Any]) -> Answer:
    """The answer of an audit record in plain words (:class:`Answer`)."""
    answer = Answer(finding="")
    _common(record, answer)
    (_task1 if record["task"] == "task1" else _task2)(record, answer)
    if record.get("test_metrics") is None:
        answer.limits.append("Not checked against true answers (none were given).")
    answer.next_steps = list(dict.fromkeys(answer.next_steps))
    return answer


def audit_paragraph(record: dict[str, Any]) -> str:
    """``audit.md`` (Markdown, no trailing newline): the audit record (of
    :func:`ctfp.report.audit.audit_record`) as a page a privacy officer can file, under the
    headings of :data:`HEADINGS` and Files (any warning first)."""
    answer = plain_answer(record)
    task = record["task"]
    lines = [f"# ctfp audit of a task {task[-1]} run", "", f"Question: {record['question']}", ""]
    for warning in answer.warnings:
        lines += [f"> **Warning:** {warning}", ""]
    lines += ["", "## Finding", "", answer.finding, ""]
    lines += [f"In the run's own words: {record['verdict'].rstrip('.')}.", ""]
    for heading, items in answer.sections():
        if items:
            lines += [f"## {heading}", "", *(f"- {item}" for item in items), ""]
    model, files = record["model"], record["files"]
    learned = model["random_weights"] or model["learned_weights"]
    hashed = "the network's weights" if learned else "the feature settings"
    listed = ", ".join(f"`{f}`" for key, f in files.items() if f and key != "summary")
    lines += [
        "## Files",
        "",
        f"- Run folder: `{record['run_dir']}`",
        f"- `{files['summary']}` (sha256 `{record['summary_sha256']}`), with {listed}",
        f"- Features: {model.get('model')} ({model.get('weights')}); sha256 of {hashed}: "
        f"`{model.get('weights_sha256') or 'unrecorded'}`",
    ]
    if record.get("truth"):
        lines.append(f"- Truth: `{record['truth']['file']}` (sha256 `{record['truth']['sha256']}`)")
    lines.append(f"- Written by ctfp {record['ctfp_version']} at {record['written_at']}.")
    squeezed = [line for n, line in enumerate(lines) if line or (n and lines[n - 1])]
    return "\n".join(squeezed).rstrip()  # no repeated blank lines


__all__ = [
    "HEADINGS",
    "RANDOM_WARNING",
    "Answer",
    "audit_paragraph",
    "criterion_meaning",
    "features_plain",
    "left_out",
    "plain_answer",
]
