"""Task 1 end to end: embed an ImageCLEF-style folder (resumable), choose and fit the
membership scorer, write the run, score and model files and the summary.

``--method auto`` selects among many candidates, a named method among one (or one per k)
through the same core (:mod:`ctfp.membership.selection`), so every run measures what it
answers with where the labelled slices allow. A named method keeps its own threshold;
``auto`` sets it on its answer's out-of-fold scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.embed.settings import EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.evaluate import write_run
from ctfp.exceptions import InputError
from ctfp.io.fs import Location, PathLike
from ctfp.membership.options import SelectionSettings
from ctfp.membership.settings import AUTO, Task1Settings, takes_k
from ctfp.progress import logger
from ctfp.runs.folder import (
    MODEL_DIR,
    RUN_FILE,
    SCORES_FILE,
    TRAIN_SCORES_FILE,
    begin_commit,
    task1_dir,
    write_scores,
    write_summary,
)
from ctfp.runs.layout import (
    AUTO_FEATURES,
    Run,
    auto_features,
    check_layout,
    cross_validate,
    files_under,
    is_folder,
    model_identity,
    require,
    rows_by_id,
    run_ids,
    settings_record,
    unread_warnings,
)
from ctfp.runs.models import save_model
from ctfp.runs.remote import in_run_folder
from ctfp.runs.verdict import EVIDENCE, examines_generator, verdict
from ctfp.settings import SettingsError


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


def _image_count(folder: Location) -> int:
    """The slice count of ``folder`` when every file under it is a 2-D image (one slice
    each), else 0: what can be checked before embedding, which can take hours."""
    from ctfp.io.sources import IMAGE_SUFFIXES, suffix_of

    files = [f for f in files_under(folder) if suffix_of(f)]
    return len(files) if all(suffix_of(f) in IMAGE_SUFFIXES for f in files) else 0


def check_k_before_embedding(data: Location, settings: Task1Settings) -> None:
    """Refuse a k larger than a training class of 2-D images before embedding."""
    if not takes_k(settings.method):
        return
    k = max(settings.ks)
    for folder, name in (("train/used", "used"), ("train/not_used", "not used")):
        n = _image_count(data.join(folder))
        if 0 < n < k:
            raise InputError(
                f"k={k} needs at least {k} '{name}' training slices, but {data.join(folder)}/ "
                f"holds {n} images; use a smaller --k"
            )


def check_non_members_before_embedding(data: Location, calibrate: str) -> None:
    """Refuse before embedding a non-members-only run whose ``fpr:`` bound its known
    non-members (2-D images) cannot give, with the message
    :func:`~ctfp.membership.threshold.choose_threshold` would give after."""
    from ctfp.membership.threshold import choose_threshold

    n = _image_count(data.join("train/not_used"))
    if n:
        try:
            choose_threshold(np.arange(n, dtype=float), np.zeros(n), calibrate)
        except ValueError as exc:
            raise InputError(f"{data.join('train/not_used')}/: {exc}") from None


def check_generated(data: Location, method: str) -> None:
    """Refuse, before embedding, a method that judges the generator from its output when
    ``data/generated/`` holds no image file."""
    from ctfp.io.sources import suffix_of

    folder = data.join("generated")
    if not examines_generator(method) or any(map(suffix_of, files_under(folder))):
        return
    found = is_folder(folder)
    raise InputError(
        f"{folder}/ {'holds no image file' if found else 'is missing'}: whether the "
        "generator memorised its training slices can only be judged from its output. Add the "
        "generator's slices under generated/ (PNG, JPEG, DICOM or NIfTI), or name a method that "
        "compares real slices only (--method centroid, the seed paper's): its answer is "
        "resemblance to the known members and says nothing about the generator"
    )


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
    """Task 1: embed ``data``, choose and fit the membership scorer, write run and score files.

    ``settings`` (``overrides``: its fields and its method's options, e.g. ``method="proximity",
    metric="l2"``) chooses the method: ``auto`` (default: features, method and settings chosen
    by cross-validation on the labelled training reals), ``centroid`` (the seed paper),
    ``proximity``, ...; see :data:`ctfp.membership.registry.REGISTRY`. ``embed`` says how the
    slices become embeddings (reused from ``out`` on reruns). One k writes ``out/run.csv``
    (``<id>,<0|1>``), ``out/scores.csv`` (``id,score,label``) and ``out/model/``; a k sweep
    ``out/k<k>/`` for each; ``out/summary.json`` last. ``data`` and ``out`` may be on an
    object store (``s3://...``, :mod:`ctfp.runs.remote`).
    """
    return in_run_folder(
        data, out, "task1", engine, progress, lambda r: _run_task1(r, settings, embed, overrides)
    )


def _run_task1(
    run: Run, settings: Task1Settings | None, embed: EmbedSettings | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    data, out = run.data, run.out
    s = task1_settings(settings, overrides)
    members = is_folder(data.join("train/used")) or not is_folder(data.join("train/not_used"))
    s, warnings = (s, []) if members else non_members_only(s)
    auto = s.method == AUTO
    required = ["train/used", "train/not_used", "test"] if members else ["train/not_used", "test"]
    check_layout(data, required)  # before weights are fetched or anything is embedded
    check_generated(data, s.method)
    if not members:
        check_non_members_before_embedding(data, str(_calibrate(s, auto)))
    embed_settings = embed or EmbedSettings(features="auto" if auto else "resnet50")
    if not auto and embed_settings.features == "auto":
        raise SettingsError(
            f"features 'auto' are chosen by --method auto; method {s.method!r} needs one feature "
            "type (--features resnet50, pixels, ...)"
        )
    check_k_before_embedding(data, s)
    features, skipped, embedded = run.embed(required, embed_settings, AUTO_FEATURES)
    for warning in unread_warnings(data, run.unread):
        logger.warning(f"warning: {warning}")
        warnings.append(warning)
    embedded_at = time.perf_counter()
    first = embedded[features[0]]
    labels = first.labels
    if members:
        require(labels == "used", "train/used/")
    require(labels == "not_used", "train/not_used/")
    if examines_generator(s.method):
        require(labels == "generated", "generated/")
    train = (labels == "used") | (labels == "not_used")
    train_ids, gen_ids = first.ids[train].tolist(), first.ids[labels == "generated"].tolist()
    y = (labels[train] == "used").astype(np.int64)
    ids, test_ids = run_ids(first)
    data_of = {
        f: (rows_by_id(e, train_ids), rows_by_id(e, gen_ids) if gen_ids else None)
        for f, e in embedded.items()
    }
    without_members = None
    if not members and auto:  # nothing to cross-validate: ranked against the test slices
        test_rows = {f: rows_by_id(e, test_ids) for f, e in embedded.items()}
        s, features, without_members = choose_without_members(
            s, features, data_of, test_rows, warnings
        )
        auto = False
    selection = _select(run, s, features, data_of, y, bool(gen_ids))
    selected_at = time.perf_counter()
    calibrate = _calibrate(s, auto)
    how = "on out-of-fold scores" if auto else "on train"
    how = f"chosen for {calibrate} {how}" if calibrate else "fixed"
    # The answer: auto's winner; a named method at each k (a sweep) or at the k it has.
    ks = s.ks if not auto and len(s.ks) > 1 else [None]
    begin_commit(out)
    runs: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    for k in ks:
        fitted, c = _fit(s, selection, k, features, data_of, y)
        x = rows_by_id(embedded[c.features], test_ids)
        score, pred = fitted.score_samples(x), fitted.predict(x)
        kk = c.params.get("k", s.ks[0])
        dest = task1_dir(out, ks, kk)
        write_run(dest / RUN_FILE, ids, pred)
        write_scores(dest / SCORES_FILE, ids, score, pred)
        written += [dest / RUN_FILE, dest / SCORES_FILE, dest / MODEL_DIR]
        trials = [selection.best, *selection.trials] if selection is not None else []
        trial = next((t for t in trials if t.candidate == c), None)
        if trial is not None and trial.oof is not None:  # what the report compares test scores with
            write_scores(dest / TRAIN_SCORES_FILE, train_ids, trial.oof, y)
            written.append(dest / TRAIN_SCORES_FILE)
        recorded = {
            "task1": (s.replace(k=(int(kk),)) if takes_k(s.method) else s).to_dict(),
            "embed": embed_settings.replace(features=c.features).to_dict(),
            "chosen": {"features": c.features, "method": c.method, "params": dict(c.params)},
        }
        identity = embedded[c.features].metadata
        save_model(fitted, dest / MODEL_DIR, identity=identity, settings=recorded)
        n_used = int((pred == fitted.classes_[1]).sum())
        recall = getattr(fitted, "recall_", None)
        runs[str(kk)] = {
            "run": str(dest / RUN_FILE),
            "scores": str(dest / SCORES_FILE),
            "model_dir": str(dest / MODEL_DIR),
            "predicted_used": n_used,
            "threshold": fitted.threshold_,
            "recall_at_1": recall,
        }
        logger.info(
            f"task1 {c.label}: {n_used}/{len(ids)} test slices labelled used (threshold "
            f"{fitted.threshold_:.4g} {how}) -> {dest / RUN_FILE}"
        )
        if recall is not None:
            logger.info(f"task1 {c.params.get('index')} index recall@1 vs exact: {recall:.4f}")
    check = None
    if not members and str(calibrate).startswith("fpr:"):
        check = _false_positive_check(s, c, data_of, y, float(str(calibrate)[4:]), warnings)
    shown = selection.best.candidate if selection is not None else c
    if selection is not None:
        logger.info(f"task1: chose {selection.reason}")
    elif members and not auto:
        warnings.append(
            f"{int(min(y.sum(), (y == 0).sum()))} slices in the smaller training class, too few "
            f"for {SelectionSettings().folds}-fold cross-validation: the run is not measured"
        )
    summary = {
        "task": "task1",
        "method": shown.method,
        "features": shown.features,
        "k": [int(v) for v in s.ks] if len(ks) > 1 else [int(shown.params.get("k", s.ks[0]))],
        "metric": _metric(shown, s),
        "calibrate": calibrate,
        "calibration_check": check,
        "choice_without_members": without_members,
        "selection": None
        if selection is None
        else {**selection.to_dict(), "features_tried": features, "skipped": skipped},
        **settings_record(run, s, embed_settings),
        "n_used": int(y.sum()),
        "n_not_used": int((y == 0).sum()),
        "n_generated": len(gen_ids),
        "n_test": len(ids),
        "n_unreadable": len(run.unread),
        "mode": "members and non-members" if members else "non-members only",
        "evidence": EVIDENCE[examines_generator(s.method)],
        "warnings": warnings,
        "runs": runs,
        "model": model_identity(embedded[shown.features].metadata),
        "seconds": round(time.perf_counter() - run.start, 2),
        "stage_seconds": {  # where the run's time went
            "embedding": round(embedded_at - run.start, 2),
            "selection": round(selected_at - embedded_at, 2),
            "fit_and_files": round(time.perf_counter() - selected_at, 2),
        },
    }
    logger.info(
        "task1 seconds: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in summary["stage_seconds"].items())
    )
    summary["verdict"] = verdict(summary)
    logger.info(f"verdict: {summary['verdict']}")
    write_summary(out, summary, written)
    return summary


def _calibrate(s: Task1Settings, auto: bool) -> str | None:
    """The threshold criterion of the run: auto's selection option, else the method's."""
    return _options(s).calibrate if auto else getattr(s.options, "calibrate", None)


def _false_positive_check(
    s: Task1Settings,
    c: Any,
    data: dict[str, tuple[np.ndarray, np.ndarray | None]],
    y: np.ndarray,
    alpha: float,
    warnings: list[str],
) -> dict[str, Any] | None:
    """A non-members-only run's ``fpr:alpha`` promise checked on the known non-members held
    out, with a warning where they exceed it by more than chance allows (binomial tail < 1 %)."""
    from scipy.stats import binom

    from ctfp.membership.nonmembers import heldout_false_positives
    from ctfp.membership.selection import build

    x, generated = data[c.features]

    def fit(train: np.ndarray) -> Any:
        model = build(c, s.seed, s.device).fit(x[train], y[train], generated)
        return lambda held: (model.predict(x[held]) == model.classes_[1]).sum()

    check = heldout_false_positives(fit, len(y), seed=s.seed)
    if check is None:
        return None
    if binom.sf(check["flagged"] - 1, check["of"], alpha) < 0.01:
        warnings.append(
            f"held out, the threshold flagged {check['flagged']} of {check['of']} known "
            f"non-members ({check['rate']:.0%}), more than the promised {alpha:.0%} allows by "
            "chance: the false-positive bound does not hold on this data"
        )
    return check


def _options(s: Task1Settings) -> SelectionSettings:
    """The selection settings of ``--method auto`` (its options, else the defaults)."""
    return s.options if isinstance(s.options, SelectionSettings) else SelectionSettings()


def _named(s: Task1Settings, features: str, k: int) -> Any:
    """The candidate of the named method on ``features`` (at ``k`` where it takes one), with
    the options given that differ from their defaults."""
    from ctfp.membership.selection import candidate

    given = {}
    if s.options is not None:
        defaults = type(s.options)().to_dict()
        given = {n: v for n, v in s.options.to_dict().items() if v != defaults[n]}
    return candidate(features, s.method, {**given, **({"k": k} if takes_k(s.method) else {})})


def _select(
    run: Run,
    s: Task1Settings,
    features: Sequence[str],
    data: dict[str, tuple[np.ndarray, np.ndarray | None]],
    y: np.ndarray,
    has_generated: bool,
) -> Any:
    """The selection that answers the run: auto's among its grid; a named method's among its
    k (or its one setting), measured only where both classes allow the folds (else None)."""
    from ctfp.membership.selection import CENTROID_KS, default_candidates, select

    n_small = int(min(y.sum(), (y == 0).sum()))
    if s.method == AUTO:
        options = _options(s)
        candidates = default_candidates(features, n_small, has_generated, s.k or CENTROID_KS)
    else:
        options = SelectionSettings(combine="simplest")  # a named method is measured, not mixed
        if n_small < options.folds:
            return None
        candidates = [_named(s, f, k) for f in features for k in s.ks]
    on = f"{len(y)} training reals"
    return cross_validate(run, select, data, y, candidates, options, features, on, s)


def _fit(
    s: Task1Settings,
    selection: Any,
    k: int | None,
    features: Sequence[str],
    data: dict[str, tuple[np.ndarray, np.ndarray | None]],
    y: np.ndarray,
) -> tuple[Any, Any]:
    """The answer (auto's choice, or the named method at ``k``) fitted on every training real,
    and its candidate; auto's threshold is the one set on out-of-fold scores."""
    from ctfp.membership.selection import build

    if s.method == AUTO:
        c = selection.best.candidate
    else:
        chosen = selection.best.candidate.features if selection is not None else features[0]
        c = _named(s, chosen, s.ks[0] if k is None else k)
    x, generated = data[c.features]
    model = build(c, s.seed, s.device).fit(x, y, generated)
    if s.method == AUTO:
        model.threshold_ = selection.extra["threshold"]  # not in-sample scores
    return model, c


def _metric(c: Any, s: Task1Settings) -> str:
    """The distance the answer scores by (L1 for the seed method, L2 where it has none)."""
    from ctfp.membership.selection import build

    metric = build(c, s.seed, "cpu").get_params().get("metric")
    return str(metric or ("l1" if c.method == "centroid" else "l2"))


def non_members_only(s: Task1Settings) -> tuple[Task1Settings, list[str]]:
    """Settings for a folder with ``train/not_used/`` but no ``train/used/``: a method that
    needs members is refused; the threshold becomes ``fpr:0.05`` unless an ``fpr:`` one was
    given; and the notes to warn with."""
    from ctfp.membership.registry import get_method

    if s.method != AUTO and get_method(s.method).needs_members:
        raise InputError(
            f"method {s.method!r} needs known members (train/used/); with train/not_used/ only, "
            "use proximity, density, counting or reconstruction"
        )
    options = s.options.to_dict() if s.options is not None else {}
    calibrate = str(options.get("calibrate", "balanced"))
    notes = []
    if not calibrate.startswith("fpr:"):
        options["calibrate"] = "fpr:0.05"
        notes.append(
            "no train/used/: the threshold flags what at most 5 % of the known non-members reach "
            f"(fpr:0.05) instead of {calibrate!r}, which needs known members"
        )
        logger.warning(f"warning: {notes[0]}")
    return task1_settings(s, {"k": (), **options}), notes  # its k dropped


#: The score a run without known members keeps unless the data show a better one: GAN-Leaks'
#: calibrated distance (Chen et al. 2020), the literature's attack for this setting, on pixels.
NON_MEMBER_DEFAULT = ("pixels", "proximity", {"metric": "l2", "reference": True})


def choose_without_members(
    s: Task1Settings,
    features: Sequence[str],
    data: dict[str, tuple[np.ndarray, np.ndarray | None]],
    test: dict[str, np.ndarray],
    warnings: list[str],
) -> tuple[Task1Settings, list[str], dict[str, Any]]:
    """``--method auto`` with known non-members only: the named method it becomes, its one
    feature type and the record of the choice
    (:func:`ctfp.membership.nonmembers.choose_without_members`)."""
    from ctfp.membership.nonmembers import choose_without_members as choose
    from ctfp.membership.selection import candidate, default_candidates

    n, t = len(next(iter(data.values()))[0]), len(next(iter(test.values())))
    candidates = default_candidates(features, n, True)
    on, method, params = NON_MEMBER_DEFAULT
    default = candidate(on if on in features else features[0], method, params)
    chosen, rows = choose(data, test, candidates, default=default, seed=s.seed, device=s.device)
    measured = {r["label"]: r.get("test_vs_non_members_auc") for r in rows}
    best = max((r for r in rows if "error" not in r), key=lambda r: r["test_vs_non_members_auc"])
    if chosen != default:
        why = f"{best['label']} beat it by more than one standard error"
    elif best["label"] == default.label:
        why = "it measured best"
    else:
        why = (
            f"no score beat it by more than one standard error (the best, {best['label']}: "
            f"{best['test_vs_non_members_auc']:.2f})"
        )
    note = (
        f"no train/used/: with no known members nothing can be cross-validated, so --method "
        f"auto measured {len(rows)} scores that need no members by how far the {t} test slices "
        f"stand above the {n} known non-members held out (ROC-AUC of test slices against them; "
        "it ranks the scores and is not an accuracy) and ran "
        f"{chosen.label} ({measured[chosen.label]:.2f}): the default, GAN-Leaks' calibrated "
        f"distance on {default.features} ({measured.get(default.label) or float('nan'):.2f}), "
        f"unless another beats it by more than one standard error; {why}"
    )
    logger.warning(f"warning: {note}")
    warnings.append(note)
    options = {"calibrate": _options(s).calibrate, **chosen.params}
    named = task1_settings(s, {"k": (), "method": chosen.method, **options})  # s's k dropped
    record = {
        "rule": f"the default ({default.label}) unless another score's ROC-AUC of test slices "
        "against the known non-members held out (5 folds) beats it by more than one standard "
        "error of their gap (bootstrap)",
        "chosen": chosen.label,
        "default": default.label,
        "n_not_used": n,
        "n_test": t,
        "candidates": rows,
    }
    return named, [chosen.features], record


__all__ = [
    "AUTO_FEATURES",
    "EVIDENCE",
    "auto_features",
    "check_generated",
    "examines_generator",
    "run_task1",
    "task1_settings",
    "verdict",
]
