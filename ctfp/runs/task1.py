"""Task 1 end to end: embed an ImageCLEF-style folder (resumable), fit the membership method,
write the run, score and model files of each k, and the summary."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.evaluate import write_run
from ctfp.exceptions import InputError, WeightsUnavailableError
from ctfp.io.fs import as_local
from ctfp.membership.base import MembershipMethod
from ctfp.membership.settings import AUTO, Task1Settings, takes_k
from ctfp.progress import logger, progress_bar
from ctfp.runs.folder import (
    MODEL_DIR,
    RUN_FILE,
    SCORES_FILE,
    TEST_PREFIX,
    TRAIN_SCORES_FILE,
    begin_commit,
    task1_dir,
    write_scores,
    write_summary,
)
from ctfp.runs.layout import check_local_data, embed_layout, model_identity, rows_of, test_part
from ctfp.runs.models import save_model
from ctfp.runs.remote import in_run_folder
from ctfp.settings import SettingsError

PathLike = str | os.PathLike[str]

#: The feature types ``--method auto`` tries when the features are ``auto``: those that need no
#: learned weights, at several resolutions, and ResNet50 when its weights can be loaded.
AUTO_FEATURES = ("pixels:16", "pixels:32", "pixels", "residual", "spectrum", "resnet50")


def task1_settings(settings: Task1Settings | None, overrides: dict[str, Any]) -> Task1Settings:
    """``settings`` with ``overrides`` applied: Task1Settings fields, and options of its
    method (``metric="l2"``); without ``settings``, :meth:`Task1Settings.with_options`."""
    if settings is None:
        return Task1Settings.with_options(**overrides)
    values = {n: getattr(settings, n) for n in Task1Settings.field_names() if n != "options"}
    values.update({n: overrides.pop(n) for n in list(overrides) if n in values})
    same_method = values["method"] == settings.method and settings.options is not None
    options = settings.options.to_dict() if same_method else {}
    options.update(overrides)
    return Task1Settings.with_options(**values, **options)


def check_k_before_embedding(data: Path, settings: Task1Settings) -> None:
    """Refuse a k larger than a training class before embedding (which can take hours): when
    every file of ``train/used/`` or ``train/not_used/`` is a 2-D image, its file count is its
    slice count."""
    from ctfp.io.sources import IMAGE_SUFFIXES, suffix_of

    if not takes_k(settings.method):
        return
    k = max(settings.ks)
    for folder, name in (("train/used", "used"), ("train/not_used", "not used")):
        files = [p for p in (data / folder).rglob("*") if p.is_file() and suffix_of(p)]
        if files and all(suffix_of(p) in IMAGE_SUFFIXES for p in files) and len(files) < k:
            raise InputError(
                f"k={k} needs at least {k} '{name}' training slices, but {data / folder}/ holds "
                f"{len(files)} images; use a smaller --k"
            )


def fit_membership(
    settings: Task1Settings,
    train_x: np.ndarray,
    train_y: np.ndarray,
    generated: np.ndarray | None = None,
    k: int | None = None,
) -> MembershipMethod:
    """Build and fit the method ``settings`` names (with ``k``, default the first)."""
    model = settings.build(k)
    return model.fit(train_x, train_y, generated)


def out_of_fold(
    s: Task1Settings,
    train_x: np.ndarray,
    train_y: np.ndarray,
    generated: np.ndarray | None,
    k: int,
) -> np.ndarray | None:
    """The method's scores of the training reals, each from a model that did not see it:
    stratified folds and repeats of ``--method auto`` (mean over repeats), or the fitted
    model's own scores for a method that learns nothing from the labels. None with too few
    slices in the smaller class for the folds."""
    from ctfp.evaluate import stratified_folds
    from ctfp.membership.selection import SelectionSettings

    cv = SelectionSettings()
    probe = s.build(k)
    if not probe.uses_labels:
        return fit_membership(s, train_x, train_y, generated, k).score_samples(train_x)
    if int(min(train_y.sum(), (train_y == 0).sum())) < cv.folds:
        return None
    runs = []
    for r in range(cv.repeats):
        fold = stratified_folds(train_y, cv.folds, s.seed + r)
        oof = np.empty(len(train_y))
        for f in range(cv.folds):
            test = fold == f
            model = fit_membership(s, train_x[~test], train_y[~test], generated, k)
            oof[test] = model.score_samples(train_x[test])
        runs.append(oof)
    return np.mean(runs, axis=0)


def choose_k(
    s: Task1Settings,
    train_y: np.ndarray,
    oof: dict[int, np.ndarray],
    features: str,
) -> dict[str, Any]:
    """The k of a sweep to show and trust, chosen on the training reals only: each k's ROC-AUC
    on its out-of-fold scores (``oof``, :func:`out_of_fold`), the smallest k within one paired
    standard error of the best (the test truth is never looked at). Returns ``{"chosen",
    "rule", "cv": {k: {"roc_auc", "roc_auc_se", "within_one_se"}}}``; without out-of-fold
    scores (too few training slices for the folds), the first k and the reason."""
    from ctfp.membership.selection import (
        Candidate,
        SelectionSettings,
        Trial,
        auc_of,
        bootstrap_auc,
        paired_gaps,
        simplest_within_one_se,
    )

    cv = SelectionSettings()
    ks = list(oof)
    if not oof or any(v is None for v in oof.values()):
        n_small = int(min(train_y.sum(), (train_y == 0).sum()))
        return {
            "chosen": int(s.ks[0]),
            "rule": f"first k: {n_small} slices in the smaller training class, too few for "
            f"{cv.folds}-fold cross-validation",
            "cv": {},
        }
    trials = []
    for kk in ks:
        trial = Trial(Candidate(features, s.method, {"k": int(kk)}))
        trial.oof = oof[kk]
        trial.auc = auc_of(train_y, trial.oof)
        trial.auc_se, trial.interval = bootstrap_auc(train_y, trial.oof, cv.bootstrap, s.seed)
        trials.append(trial)
    top = max(trials, key=lambda t: (t.auc, -t.candidate.complexity))
    paired_gaps(top, trials, train_y, cv.bootstrap, s.seed)
    best = simplest_within_one_se(trials, top, lambda t: t.auc, lambda t: t.diff_se)
    return {
        "chosen": int(best.candidate.params["k"]),
        "rule": "the smallest k within one paired standard error of the best ROC-AUC on "
        f"out-of-fold scores of the training reals ({cv.folds} folds x {cv.repeats} repeats)",
        "cv": {
            str(t.candidate.params["k"]): {
                "roc_auc": round(t.auc, 4),
                "roc_auc_se": round(t.auc_se, 4),
                "within_one_se": t.within_one_se,
            }
            for t in trials
        },
    }


def run_task1(
    data: PathLike,
    out: PathLike,
    settings: Task1Settings | None = None,
    *,
    embed: EmbedSettings | None = None,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Task 1: embed ``data``, fit the membership model, write run and score files.

    ``settings`` (``overrides``: its fields and its method's options, e.g. ``method="proximity",
    metric="l2"``) chooses the method: ``centroid`` (the seed paper: k-means centres per class,
    L1 1-NN) or ``proximity`` (distance to the nearest generated slices, calibrated on the
    training reals); see :data:`ctfp.membership.registry.METHODS`. ``embed`` says how the
    slices become embeddings (reused from ``out`` on reruns with the same settings). One k
    writes ``out/run.csv`` (``<id>,<0|1>``), ``out/scores.csv`` (``id,score,label``) and
    ``out/model/``; several write ``out/k<k>/``. ``out/summary.json`` records the settings that
    ran and the chosen threshold. ``out`` may be on an object store (``s3://...``): the
    embeddings are written there directly, the run's files are published there when it ends,
    its ``summary.json`` last (:mod:`ctfp.runs.remote`); ``data`` is a local or mounted folder.
    """
    data = as_local(data)
    check_local_data(data)
    return in_run_folder(
        out,
        lambda local, root: _run_task1(
            data, local, root, settings, embed, engine, progress, dict(overrides)
        ),
    )


def _run_task1(
    data: PathLike,
    out: Path,
    root: PathLike,
    settings: Task1Settings | None,
    embed: EmbedSettings | None,
    engine: str | EngineSettings,
    progress: bool,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """:func:`run_task1` writing its files into ``out`` and its embeddings under ``root``."""
    start = time.perf_counter()
    s = task1_settings(settings, overrides)
    warnings: list[str] = []
    if not (Path(data) / "train" / "used").is_dir() and (Path(data) / "train/not_used").is_dir():
        s, embed, warnings = non_members_only(s, embed)
    if s.method == AUTO:
        embed_settings = embed or EmbedSettings(features="auto")
        return run_auto(data, out, s, embed_settings, engine, progress, start, root=root)
    embed_settings = embed or EmbedSettings()
    if embed_settings.features == "auto":
        raise SettingsError(
            f"features 'auto' are chosen by --method auto; method {s.method!r} needs one feature "
            "type (--features resnet50, pixels, ...)"
        )
    check_k_before_embedding(Path(data), s)
    required = ["train/not_used", "test"] if warnings else ["train/used", "train/not_used", "test"]
    emb = embed_layout(data, root, required, embed_settings, engine=engine, progress=progress)
    labels = emb.labels
    train = (labels == "used") | (labels == "not_used")
    if not warnings:
        rows_of(emb, labels == "used", "train/used/")
    rows_of(emb, labels == "not_used", "train/not_used/")
    train_x, train_y = emb.matrix[train], (labels[train] == "used").astype(int)
    generated = emb.matrix[labels == "generated"]
    ids, x = test_part(emb)
    ks = s.ks
    runs: dict[int, dict[str, Any]] = {}
    written: list[Path] = []
    oof: dict[int, np.ndarray | None] = {}
    train_ids = [i for i, lab in zip(emb.ids, labels, strict=True) if lab in ("used", "not_used")]
    begin_commit(out)
    for kk in progress_bar(
        len(ks), "task1 fits", "k", enabled=len(ks) > 1 and progress, iterable=ks
    ):
        model = fit_membership(s, train_x, train_y, generated, kk)
        score = model.score_samples(x)
        pred = model.predict(x)
        dest = task1_dir(out, ks, kk)
        write_run(dest / RUN_FILE, ids, pred)
        write_scores(dest / SCORES_FILE, ids, score, pred)
        oof[kk] = None if warnings else out_of_fold(s, train_x, train_y, generated, kk)
        if oof[kk] is not None:  # what the report compares the test scores with
            write_scores(dest / TRAIN_SCORES_FILE, train_ids, oof[kk], train_y)
            written.append(dest / TRAIN_SCORES_FILE)
        fitted = s.replace(k=(kk,)) if takes_k(s.method) else s
        recorded = {"task1": fitted.to_dict(), "embed": embed_settings.to_dict()}
        save_model(model, dest / MODEL_DIR, identity=emb.metadata, settings=recorded)
        written += [dest / RUN_FILE, dest / SCORES_FILE, dest / MODEL_DIR]
        runs[kk] = {
            "run": str(dest / RUN_FILE),
            "scores": str(dest / SCORES_FILE),
            "model_dir": str(dest / MODEL_DIR),
            "predicted_used": int(pred.sum()),
            "threshold": model.threshold_,
            "recall_at_1": getattr(model, "recall_", None),
        }
        calibrate = getattr(s.options, "calibrate", None)
        chosen = f" (threshold {model.threshold_:.4g}"
        chosen += f" chosen for {calibrate} on train)" if calibrate else ", fixed)"
        with_k = f" k={kk}" if "k" in model.get_params() else ""
        n_used = int((pred == model.classes_[1]).sum())
        logger.info(
            f"task1 {s.method}{with_k}: {n_used}/{len(ids)} test slices labelled used"
            f"{chosen} -> {dest / RUN_FILE}"
        )
        if runs[kk]["recall_at_1"] is not None:
            index = getattr(s.options, "index", "")
            logger.info(f"task1 {index} index recall@1 vs exact: {runs[kk]['recall_at_1']:.4f}")
    options = s.options.to_dict() if s.options is not None else {}
    k_selection = None
    if len(ks) > 1 and not warnings:
        k_selection = choose_k(s, train_y, oof, embed_settings.features)
        logger.info(f"task1 k sweep: k={k_selection['chosen']} chosen: {k_selection['rule']}")
    summary = {
        "task": "task1",
        "method": s.method,
        "k": ks,
        "k_selection": k_selection,
        # The flat keys of earlier versions, kept for readers of summary.json.
        "metric": options.get("metric", "l1" if s.method == "centroid" else None),
        "neighbours": options.get("neighbours"),
        "reference": options.get("reference"),
        "calibrate": options.get("calibrate"),
        "index": options.get("index"),
        "recall_target": options.get("recall_target") if options.get("index") != "flat" else None,
        **_run_record(s, embed_settings, engine, train_y, len(generated), len(ids)),
        "mode": "non-members only" if warnings else "members and non-members",
        "warnings": warnings,
        "runs": runs,
        "model": model_identity(emb.metadata),
        "seconds": round(time.perf_counter() - start, 2),
    }
    summary["verdict"] = verdict(summary)
    logger.info(f"verdict: {summary['verdict']}")
    write_summary(out, summary, written)
    return summary


#: What ``--method auto`` runs when there are no known members to cross-validate on: the
#: GAN-Leaks calibrated distance (Chen et al. 2020), the literature's attack for this setting.
NON_MEMBER_DEFAULT = {"method": "proximity", "metric": "l2", "reference": True}


def non_members_only(
    s: Task1Settings, embed: EmbedSettings | None
) -> tuple[Task1Settings, EmbedSettings | None, list[str]]:
    """Settings for a folder with ``train/not_used/`` but no ``train/used/``: no known members,
    so nothing to cross-validate or to balance a threshold on. A method that needs members is
    refused; ``auto`` runs :data:`NON_MEMBER_DEFAULT` on pixels (stated, not measured); the
    threshold becomes ``fpr:0.05`` on the known non-members unless an ``fpr:`` one was given."""
    from ctfp.membership.registry import get_method

    notes = []
    if s.method != AUTO and get_method(s.method).needs_members:
        raise InputError(
            f"method {s.method!r} needs known members (train/used/); with train/not_used/ only, "
            "use proximity, density, counting or reconstruction"
        )
    options = s.options.to_dict() if s.options is not None else {}
    if s.method == AUTO:
        options = {k: v for k, v in NON_MEMBER_DEFAULT.items() if k != "method"}
        method = NON_MEMBER_DEFAULT["method"]
        if embed is None or embed.features == "auto":
            embed = (embed or EmbedSettings()).replace(features="pixels")
        notes.append(
            "no train/used/: with no known members nothing can be cross-validated, so --method "
            f"auto ran {method} (metric l2, reference = the known non-members) on "
            f"{embed.features}; its accuracy on this data is not measured"
        )
    else:
        method = s.method
    calibrate = str(options.get("calibrate", "balanced"))
    if not calibrate.startswith("fpr:"):
        options["calibrate"] = "fpr:0.05"
        notes.append(
            "no train/used/: the threshold flags what at most 5 % of the known non-members reach "
            f"(fpr:0.05) instead of {calibrate!r}, which needs known members"
        )
    for note in notes:
        logger.warning(f"warning: {note}")
    values = {n: getattr(s, n) for n in Task1Settings.field_names() if n not in ("options", "k")}
    return Task1Settings.with_options(**{**values, "method": method}, **options), embed, notes


def verdict(summary: dict[str, Any]) -> str:
    """One sentence a non-expert can act on: the evidence (the cross-validated ROC-AUC of the
    chosen scorer with its 95 % interval, or why there is none) and what the run flagged."""
    n_test = summary["n_test"]
    runs = summary.get("runs") or {}
    run = next(iter(runs.values()), {})
    chosen_k = (summary.get("k_selection") or {}).get("chosen")
    if chosen_k is not None:  # a k sweep: the k chosen on the training reals
        run = runs.get(chosen_k, runs.get(str(chosen_k), run))
    flagged = run.get("predicted_used", 0)
    calibrate = str(summary.get("calibrate") or "")
    at = (
        f" at a {float(calibrate[4:]):.0%} false-positive rate on known non-members"
        if calibrate.startswith("fpr:")
        else f" (threshold: {calibrate or 'the method' + chr(39) + 's own'})"
    )
    counts = f"{flagged} of {n_test} test slices flagged as used{at}"
    if chosen_k is not None:
        counts += f" by k={chosen_k}, chosen on the training reals"
    selection = summary.get("selection")
    if not selection:
        why = (
            "no known members to measure it on"
            if summary.get("mode") == "non-members only"
            else f"--method {summary.get('method')} is not cross-validated; --method auto is"
        )
        return f"Evidence not measured ({why}); {counts}."
    chosen = selection["chosen"]
    auc, (low, high) = chosen["roc_auc"], chosen["roc_auc_95"]
    held = chosen.get("heldout_roc_auc")
    estimate = (
        f"cross-validated ROC-AUC {auc:.2f} [{low:.2f}, {high:.2f}] on "
        f"{selection['n_train']} labelled training slices"
        + (f" ({held:.2f} with the choice itself held out)" if held is not None else "")
    )
    if low is None or low <= 0.5:
        return (
            f"No evidence of memorisation distinguishable from chance: {estimate}; "
            f"{counts} (read them as chance)."
        )
    return (
        f"Evidence of memorisation: {estimate} (the best of {len(selection['candidates'])} "
        f"candidates, so somewhat optimistic); {counts}."
    )


def auto_features(
    settings: EmbedSettings, candidates: Sequence[str] = AUTO_FEATURES
) -> tuple[list[str], dict[str, str]]:
    """The feature types of ``candidates`` to try, and those left out with the reason: ResNet50
    with ImageNet weights only where they load (a local file or ``--weights random`` always
    do)."""
    if settings.features != "auto":
        return [settings.features], {}
    features = [f for f in candidates if f != "resnet50"]
    if "resnet50" not in candidates:
        return features, {}
    if settings.weights == "imagenet":
        from ctfp.embed.backbone import imagenet_state_dict

        try:
            quiet = io.StringIO()  # the probe's "Downloading: ..." lines, on both streams
            with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
                imagenet_state_dict()
        except WeightsUnavailableError as exc:
            return features, {"resnet50": str(exc).split(". ")[0]}
    return [*features, "resnet50"], {}


def run_auto(
    data: PathLike,
    out: PathLike,
    s: Task1Settings,
    embed_settings: EmbedSettings,
    engine: str | EngineSettings,
    progress: bool,
    start: float,
    *,
    root: PathLike | None = None,
) -> dict[str, Any]:
    """``--method auto``: embed every candidate feature type, cross-validate every candidate
    scorer on the training reals (:mod:`ctfp.membership.selection`), fit the winner on all of
    them with the threshold from its out-of-fold scores, and write the run (its embeddings
    under ``root``, default ``out``)."""
    from ctfp.membership.selection import (
        CENTROID_KS,
        SelectionSettings,
        default_candidates,
        select,
    )

    out = Path(out)
    features, skipped = auto_features(embed_settings)
    for name, reason in skipped.items():
        logger.warning(
            f"auto: {name} left out: {reason} (pass --weights PATH or --weights random to try it)"
        )
    required = ["train/used", "train/not_used", "test"]
    embedded = {}
    for f in features:
        settings_f = embed_settings.replace(features=f)
        embedded[f] = embed_layout(
            data,
            out if root is None else root,
            required,
            settings_f,
            engine=engine,
            progress=progress,
        )
    first = embedded[features[0]]
    labels = first.labels
    rows_of(first, labels == "used", "train/used/")
    rows_of(first, labels == "not_used", "train/not_used/")
    train_ids = [i for i, lab in zip(first.ids, labels, strict=True) if lab in ("used", "not_used")]
    gen_ids = [i for i, lab in zip(first.ids, labels, strict=True) if lab == "generated"]
    ids, _ = test_part(first)
    test_ids = [TEST_PREFIX + i for i in ids]
    for f in features[1:]:  # the same files decode the same way: every type has the same rows
        if set(embedded[f].ids) != set(first.ids):
            raise InputError(
                f"the {f} and {features[0]} embeddings hold different slices; remove "
                f"{out if root is None else root}/embeddings-* and rerun"
            )
    train_y = np.array([1 if lab == "used" else 0 for lab in _labels_of(first, train_ids)])

    def part(f: str, wanted: list[str]) -> np.ndarray:
        emb = embedded[f]
        where = {i: n for n, i in enumerate(emb.ids)}
        return emb.matrix[[where[i] for i in wanted]] if wanted else emb.matrix[:0]

    matrices = {f: (part(f, train_ids), part(f, gen_ids) if gen_ids else None) for f in features}
    options = s.options if isinstance(s.options, SelectionSettings) else SelectionSettings()
    n_small = int(min(train_y.sum(), (train_y == 0).sum()))
    candidates = default_candidates(features, n_small, bool(gen_ids), s.k or CENTROID_KS)
    logger.info(
        f"auto: {len(candidates)} candidates ({len(features)} feature type"
        f"{'s' if len(features) > 1 else ''}) cross-validated "
        f"on {len(train_y)} training reals, {options.folds} folds x {options.repeats} repeats"
    )
    begin_commit(out)
    selection = select(
        matrices,
        train_y,
        candidates,
        options,
        seed=s.seed,
        device=s.device,
        progress=lambda items: progress_bar(
            len(items), "auto: candidates", "cand", enabled=progress, iterable=items
        ),
    )
    best = selection.best.candidate
    x_train, generated = matrices[best.features]
    model = best.build(s.seed, s.device).fit(x_train, train_y, generated)
    model.threshold_ = selection.threshold  # from out-of-fold scores, not in-sample ones
    x = part(best.features, test_ids)
    score = model.score_samples(x)
    pred = model.predict(x)
    write_run(out / RUN_FILE, ids, pred)
    write_scores(out / SCORES_FILE, ids, score, pred)
    assert selection.best.oof is not None
    write_scores(out / TRAIN_SCORES_FILE, train_ids, selection.best.oof, train_y)
    winner = embedded[best.features]
    recorded = {
        "task1": s.to_dict(),
        "embed": embed_settings.replace(features=best.features).to_dict(),
        "chosen": {"features": best.features, "method": best.method, "params": dict(best.params)},
    }
    save_model(model, out / MODEL_DIR, identity=winner.metadata, settings=recorded)
    n_used = int((pred == model.classes_[1]).sum())
    logger.info(f"auto: chose {selection.reason()}")
    logger.info(
        f"task1 auto -> {best.method}: {n_used}/{len(ids)} test slices labelled used (threshold "
        f"{selection.threshold:.4g} chosen for {options.calibrate} on out-of-fold scores) -> "
        f"{out / RUN_FILE}"
    )
    runs = {
        str(s.ks[0]): {
            "run": str(out / RUN_FILE),
            "scores": str(out / SCORES_FILE),
            "model_dir": str(out / MODEL_DIR),
            "predicted_used": n_used,
            "threshold": selection.threshold,
            "recall_at_1": None,
        }
    }
    params = dict(best.params)
    summary = {
        "task": "task1",
        "method": best.method,
        "features": best.features,
        "k": [int(params.get("k", s.ks[0]))],
        "metric": params.get("metric", "l1" if best.method == "centroid" else "l2"),
        "calibrate": options.calibrate,
        "selection": {**selection.to_dict(), "features_tried": features, "skipped": skipped},
        **_run_record(s, embed_settings, engine, train_y, len(gen_ids), len(ids)),
        "mode": "members and non-members",
        "warnings": [],
        "runs": {str(params.get("k", s.ks[0])): runs[str(s.ks[0])]},
        "model": model_identity(winner.metadata),
        "seconds": round(time.perf_counter() - start, 2),
    }
    summary["verdict"] = verdict(summary)
    logger.info(f"verdict: {summary['verdict']}")
    write_summary(
        out, summary, [out / RUN_FILE, out / SCORES_FILE, out / TRAIN_SCORES_FILE, out / MODEL_DIR]
    )
    return summary


def _labels_of(emb: Any, wanted: list[str]) -> list[str]:
    where = {i: n for n, i in enumerate(emb.ids)}
    return [str(emb.labels[where[i]]) for i in wanted]


def _run_record(
    s: Task1Settings,
    embed_settings: EmbedSettings,
    engine: str | EngineSettings,
    train_y: np.ndarray,
    n_generated: int,
    n_test: int,
) -> dict[str, Any]:
    """What every task 1 summary records: the seed, the settings of each stage, the counts."""
    return {
        "seed": s.seed,
        "settings": {
            "task1": s.to_dict(),
            "embed": embed_settings.to_dict(),
            "engine": _engine_dict(engine),
        },
        "n_used": int(train_y.sum()),
        "n_not_used": int((train_y == 0).sum()),
        "n_generated": n_generated,
        "n_test": n_test,
    }


def _engine_dict(engine: str | EngineSettings) -> dict[str, Any]:
    settings = engine if isinstance(engine, EngineSettings) else EngineSettings(engine)
    return settings.to_dict()


__all__ = [
    "AUTO_FEATURES",
    "auto_features",
    "fit_membership",
    "run_auto",
    "run_task1",
    "task1_settings",
]
