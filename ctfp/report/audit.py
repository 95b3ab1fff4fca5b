"""The audit summary of a run folder, written beside its HTML report (so ``ctfp report OUT``
regenerates it): ``OUT/audit.json`` (schema :data:`AUDIT_SCHEMA`), what a privacy officer files
about one run (verdict, the numbers behind it, counts, method and why, model identity, version,
folder, time), and ``OUT/audit.md``, the same in plain words (:mod:`ctfp.report.audit_md`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ctfp import __version__
from ctfp.exceptions import InputError
from ctfp.io.fs import PathLike
from ctfp.report.audit_md import audit_paragraph, criterion_meaning
from ctfp.runs.folder import (
    AUDIT_FILES,
    CLUSTERS_FILE,
    OPEN_SET_FILE,
    REPORT_FILE,
    RUN_FILE,
    SCORES_FILE,
    SUMMARY_FILE,
    chosen_k,
    find_embeddings,
    read_summary,
    task1_dir,
)
from ctfp.runs.verdict import EVIDENCE, beyond_chance, evidence_of

#: The ``schema`` value of every audit record this version writes.
AUDIT_SCHEMA = "ctfp-audit/1"
AUDIT_JSON, AUDIT_MD = AUDIT_FILES
#: The JSON Schema (draft 2020-12) of ``audit.json``, shipped in the package.
SCHEMA_FILE = "audit.schema.json"

QUESTIONS = {
    "task1": "membership: was each real test slice used to train the generator?",
    "task2": "attribution: which generator made each synthetic test slice?",
}


def audit_schema() -> dict[str, Any]:
    """The JSON Schema of ``audit.json`` (draft 2020-12), read from the package."""
    text = (resources.files("ctfp.report") / SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def audit_record(
    run_dir: PathLike,
    truth: PathLike | None = None,
    *,
    report: PathLike | None = None,
    origin: PathLike | None = None,
) -> dict[str, Any]:
    """The audit record of the ``ctfp run`` folder ``run_dir``: what ``audit.json`` holds,
    JSON-ready (NaN and infinity are None) and valid against :func:`audit_schema`.

    It comes from the run's ``summary.json`` and its shards' metadata; nothing is refitted. A
    task 1 k sweep is described at :func:`shown_k`. ``truth`` (the CSV ``ctfp evaluate`` takes)
    adds the test metrics; ``report`` names the HTML page (default ``run_dir/report.html``
    where it exists); ``origin`` is where the run lives when ``run_dir`` is a local copy of a
    run on a store. Raises InputError as :func:`ctfp.runs.folder.read_summary`, or where the
    truth misses run ids.
    """
    run = Path(run_dir)
    summary = read_summary(run)
    task = summary["task"]
    files = _files(run, summary, report)
    evidence, counts, method = (_task1 if task == "task1" else _task2)(summary)
    metrics = None
    if truth is not None:
        from ctfp.evaluate import evaluate_run

        scores = run / files["scores"] if files["scores"] else None
        metrics = evaluate_run(task, run / files["run"], truth, scores)
        metrics.pop("scores", None)  # the path of the scores file: in "files"
    record = {
        "schema": AUDIT_SCHEMA,
        "task": task,
        "question": QUESTIONS[task],
        "verdict": str(summary.get("verdict") or "The run recorded no verdict."),
        "evidence": evidence,
        "test_metrics": metrics,
        "counts": counts,
        "method": method,
        "model": _model(run, summary, origin),
        "warnings": [str(w) for w in summary.get("warnings") or []],
        "truth": None
        if truth is None
        else {"file": str(Path(truth).resolve()), "sha256": _sha256(Path(truth))},
        "files": files,
        "run_dir": str(run.resolve()) if origin is None else os.fspath(origin),
        "summary_sha256": _sha256(run / SUMMARY_FILE),
        "ctfp_version": __version__,
        "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return _finite(record)  # NaN and infinity are not JSON: null


def write_audit(
    run_dir: PathLike,
    truth: PathLike | None = None,
    *,
    report: PathLike | None = None,
    origin: PathLike | None = None,
    record: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``run_dir/audit.json`` and ``run_dir/audit.md`` (atomically) of the
    :func:`audit_record` of the same arguments (or of ``record``). Returns their paths."""
    from ctfp.store.writer import write_text_atomic

    if record is None:
        record = audit_record(run_dir, truth, report=report, origin=origin)
    run = Path(run_dir)
    json_path, md_path = run / AUDIT_JSON, run / AUDIT_MD
    write_text_atomic(json_path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    write_text_atomic(md_path, audit_paragraph(record) + "\n")
    return json_path, md_path


# -- the record, part by part -------------------------------------------------------------------
def _measured(
    summary: dict[str, Any], metric: str, why_not: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The selection record, and whether the method was measured by cross-validation with
    its ``metric`` there."""
    selection = summary.get("selection") or {}
    chosen = selection.get("chosen") or {}
    interval = chosen.get(f"{metric}_95")
    evidence = {
        "measured": bool(selection),
        "why_not_measured": None if selection else why_not,
        f"cv_{metric}": chosen.get(metric),
        f"cv_{metric}_se": chosen.get(f"{metric}_se"),
        f"cv_{metric}_95": list(interval) if interval and None not in interval else None,
    }
    return selection, evidence


def _method(
    summary: dict[str, Any],
    requested: Any,
    chosen_by: str,
    reason: str,
    members: int | None,
    features_tried: Any,
) -> dict[str, Any]:
    selection = summary.get("selection") or {}
    cv = selection.get("settings") or {}
    return {
        "requested": requested,
        "name": summary.get("method"),
        "features": summary.get("features") or _setting(summary, "embed", "features"),
        "label": (selection.get("chosen") or {}).get("label"),
        "members": members,
        "chosen_by": chosen_by,
        "reason": reason,
        "rule": selection.get("rule"),
        "cross_validation": {"folds": cv.get("folds"), "repeats": cv.get("repeats")}
        if selection
        else None,
        "features_tried": features_tried,
        "left_out": selection.get("skipped") or {},
        "mode": summary.get("mode"),
    }


def _task1(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if summary.get("mode") == "non-members only":
        why_not = "there are no known members in train/used/ to measure it on"
    else:
        why_not = "too few labelled slices in a training class for cross-validation"
    selection, evidence = _measured(summary, "roc_auc", why_not)
    chosen = selection.get("chosen") or {}
    k = shown_k(summary)
    runs = summary.get("runs") or {}
    first = (runs.get(str(k)) if k is not None else next(iter(runs.values()), None)) or {}
    n_used, n_not_used = _int(summary.get("n_used")), _int(summary.get("n_not_used"))
    labelled = _int(selection.get("n_labelled", (n_used or 0) + (n_not_used or 0)))
    # Older runs recorded no evidence kind: their method's registry entry says it.
    kind = summary.get("evidence") or evidence_of(summary.get("method"))
    test = selection.get("permutation") or {}  # the whole choice on shuffled labels
    held = selection.get("heldout") or {}  # the whole choice held out
    evidence |= {
        "examines_generator": kind == EVIDENCE[True],
        "heldout_roc_auc": chosen.get("heldout_roc_auc"),
        "heldout_roc_auc_95": held.get("roc_auc_95"),
        "p_value": test.get("p_value"),
        "permutations": test.get("permutations"),
        "distinguishable_from_chance": beyond_chance(selection) if selection else None,
        "n_labelled": labelled,
        "n_candidates": len(selection["candidates"]) if selection.get("candidates") else None,
        "k": k,
        "k_rule": K_RULE if chosen_k(summary) is not None else None,
        "test_flagged_used": _int(first.get("predicted_used")),
        "n_test": _int(summary.get("n_test")),
        "threshold": first.get("threshold"),
        "criterion": summary.get("calibrate"),
        "criterion_meaning": criterion_meaning(summary.get("calibrate")),
    }
    counts = {
        "train_used": n_used,
        "train_not_used": n_not_used,
        "labelled": labelled,
        "generated": _int(summary.get("n_generated")),
        "test": _int(summary.get("n_test")),
    }
    requested = _setting(summary, "task1", "method")
    warnings = [str(w) for w in summary.get("warnings") or []]
    if selection and requested == "auto":
        chosen_by, reason = "cross-validation", str(selection.get("reason") or "")
    elif summary.get("mode") == "non-members only":
        # --method auto without members: a choice on the test slices (0.3, 0.4: a default)
        choice = summary.get("choice_without_members")
        by_auto = choice is not None or any("--method auto ran" in w for w in warnings)
        chosen_by = (
            ("test vs held-out non-members" if choice else "default") if by_auto else "given"
        )
        requested = "auto" if by_auto else requested
        reason = "; ".join(warnings) or "no known members"
    else:
        chosen_by, reason = "given", f"--method {summary.get('method')} was named"
    members = len((chosen.get("params") or {}).get("members") or []) or None
    tried = selection.get("features_tried")
    return evidence, counts, _method(summary, requested, chosen_by, reason, members, tried)


def _task2(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    why_not = "no labelled examples in train/<group>/ were used: the grouping is blind"
    selection, evidence = _measured(summary, "ari", why_not)
    groups = [str(g) for g in summary.get("groups") or selection.get("groups") or []]
    open_set = summary.get("open_set") or None
    labelled = _int(selection.get("n_labelled", (summary.get("train_check") or {}).get("n")))
    evidence |= {
        "cv_accuracy": (selection.get("chosen") or {}).get("accuracy"),
        "n_labelled": labelled,
        "n_candidates": len(selection["candidates"]) if selection.get("candidates") else None,
        "n_clusters": _int(summary.get("k")),
        "groups": groups,
        "cluster_groups": {
            str(k): str(v) for k, v in (summary.get("cluster_groups") or {}).items()
        },
        "cluster_sizes": [int(s) for s in summary.get("cluster_sizes") or []],
        "n_test": _int(summary.get("n_test")),
        "unknown": None if open_set is None else _int(open_set.get("unknown")),
        "open_set": None
        if open_set is None
        else {
            "unknown": _int(open_set.get("unknown")),
            "reject": open_set.get("reject"),
            "expected_by_chance": open_set.get("expected_by_chance"),
            "can_flag": open_set.get("min_pvalue") is None
            or float(open_set["min_pvalue"]) <= float(open_set.get("reject") or 0),
            "extra_group": bool(open_set.get("extra_group")),
            "file": OPEN_SET_FILE,
        },
    }
    counts = {"labelled": labelled, "groups": len(groups), "test": _int(summary.get("n_test"))}
    requested = _setting(summary, "task2", "method")
    if selection:
        chosen_by = "cross-validation" if summary.get("mode") == "auto" else "given"
        reason = str(selection.get("reason") or "")
    elif requested not in (None, "auto"):
        chosen_by, reason = "given", f"--method {requested} was named"
    else:
        chosen_by = "default"
        reason = "no labelled examples in train/<group>/: the blind Gaussian mixture"
    features = [c.get("features") for c in selection.get("candidates") or []]
    tried = list(dict.fromkeys(features)) if features else None
    return evidence, counts, _method(summary, requested, chosen_by, reason, None, tried)


#: How a k sweep chooses its k.
K_RULE = (
    "the smallest k within one paired standard error of the best ROC-AUC on out-of-fold scores "
    "of the training reals"
)


def shown_k(summary: dict[str, Any]) -> int | None:
    """The k of a task 1 run the audit describes: the one a k sweep chose (the report shows it
    in detail), else the first."""
    ks = [int(k) for k in summary.get("k") or []]
    chosen = chosen_k(summary)
    return chosen if chosen in ks else next(iter(ks), None)


def _setting(summary: dict[str, Any], stage: str, name: str) -> Any:
    return ((summary.get("settings") or {}).get(stage) or {}).get(name)


def _model(run: Path, summary: dict[str, Any], origin: PathLike | None) -> dict[str, Any]:
    """The model identity: the summary's, completed by the metadata of the run's shards."""
    model = dict(summary.get("model") or {})
    shards = find_embeddings(run, summary, origin)
    meta: dict[str, Any] = {}
    if shards is not None:
        from ctfp.store.manifest import committed_shards
        from ctfp.store.reader import read_schema
        from ctfp.store.schema import read_metadata

        meta = read_metadata(read_schema(committed_shards(shards)[0])) or {}
    weights = meta.get("weights", model.get("weights"))
    text = str(weights or "")
    return {
        "model": meta.get("model", model.get("model")),
        "weights": weights,
        "weights_sha256": meta.get("weights_sha256", model.get("weights_sha256")),
        "random_weights": bool(re.search(r"(^|\+)random(:|$)", text)),
        "learned_weights": bool(re.search(r"(^|\+)(imagenet|file):", text)),
        "dim": meta.get("dim"),
        "dtype": meta.get("dtype"),
        "preprocessing": meta.get("preprocessing"),
        "decode_window": (meta.get("decode") or {}).get("window"),
        "embeddings_ctfp_version": meta.get("ctfp_version"),
        "embeddings": None if shards is None else _relative(shards, run),
    }


def _files(run: Path, summary: dict[str, Any], report: PathLike | None) -> dict[str, Any]:
    """The run's files, relative to the run folder where inside."""
    if summary["task"] == "task1":
        ks = [int(k) for k in summary.get("k") or []]
        k = shown_k(summary)
        dest = task1_dir(run, ks, k) if k is not None else run
        answers: dict[str, Any] = {
            "run": _relative(dest / RUN_FILE, run),
            "scores": _relative(dest / SCORES_FILE, run),
            "open_set": None,
        }
    else:
        answers = {
            "run": CLUSTERS_FILE,
            "scores": None,
            "open_set": OPEN_SET_FILE if (run / OPEN_SET_FILE).is_file() else None,
        }
    page = Path(report) if report is not None else run / REPORT_FILE
    return {
        "summary": SUMMARY_FILE,
        **answers,
        "report": _relative(page, run) if report is not None or page.is_file() else None,
        "audit_json": AUDIT_JSON,
        "audit_md": AUDIT_MD,
    }


def _relative(path: Path | str, run: Path) -> str:
    if isinstance(path, str):  # a URI: the run's embeddings on an object store
        return path
    try:
        return path.resolve().relative_to(run.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (which JSON cannot hold) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


__all__ = [
    "AUDIT_JSON",
    "AUDIT_MD",
    "AUDIT_SCHEMA",
    "SCHEMA_FILE",
    "audit_record",
    "audit_schema",
    "shown_k",
    "write_audit",
]
