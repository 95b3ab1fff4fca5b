"""Metrics and ImageCLEF run files: write, read, validate, and score against the truth."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctfp.exceptions import InputError
from ctfp.io.fs import Location, as_local, resolve
from ctfp.runs.settings import TASKS


@dataclass(frozen=True)
class Problem:
    """One reason a run file is invalid, with where it is."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}"


def _file_type(path: str | os.PathLike[str]) -> tuple[Location, Any]:
    """``path`` (local or a store URI) resolved, and its ``pyarrow.fs.FileType``."""
    where = resolve(as_local(path))
    with where.failing():
        return where, where.filesystem.get_file_info(where.path).type


def _read_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of ``path`` (local or on a store), line ends as stored; errors name
    ``what`` and the file."""
    import pyarrow.fs as pafs

    name = str(path)
    where, kind = _file_type(path)
    if kind != pafs.FileType.File:
        reason = "it is a folder" if kind == pafs.FileType.Directory else "no such file"
        raise InputError(f"cannot read {what} {name!r}: {reason}")
    with where.failing(name), where.filesystem.open_input_stream(where.path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{what} {name!r} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None


# -- metrics -----------------------------------------------------------------------------------
def membership_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], scores: Sequence[float] | None = None
) -> dict[str, Any]:
    """Task 1 metrics with "used" (1) as the positive class.

    F1 alone flatters: labelling every slice "used" scores 2p/(1+p) for a fraction p of used
    slices (0.667 on a balanced set), so accuracy, Cohen's kappa and ROC-AUC (from ``scores``,
    higher = more likely used) come with it, plus that all-"used" baseline on the same truth.
    """
    from scipy.stats import rankdata
    from sklearn import metrics as skm

    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    both = len(np.unique(t)) == 2
    auc = None
    if scores is not None and both:
        # On the ranks: the same AUC (only the order counts), and +/-inf scores keep theirs.
        auc = float(skm.roc_auc_score(t, rankdata(np.asarray(scores, dtype=float))))
    return {
        "n": len(t),
        "n_used": int(t.sum()),
        "f1": float(skm.f1_score(t, p, pos_label=1, zero_division=0)),
        "accuracy": float(skm.accuracy_score(t, p)),
        "kappa": float(skm.cohen_kappa_score(t, p)) if both or len(np.unique(p)) > 1 else 0.0,
        "roc_auc": auc,
        "precision": float(skm.precision_score(t, p, zero_division=0)),
        "recall": float(skm.recall_score(t, p, zero_division=0)),
        "baseline_all_used_f1": float(skm.f1_score(t, np.ones_like(t), zero_division=0)),
    }


def aucs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC (Mann-Whitney with mid-ranks for ties) of each row of ``scores`` (b, n) against
    labels ``y`` (n,) or (b, n), 1 = positive."""
    from scipy.stats import rankdata

    y = np.broadcast_to(y, scores.shape).astype(bool)
    ranks = rankdata(scores, axis=1)
    pos = y.sum(1)
    neg = y.shape[1] - pos
    u = np.where(y, ranks, 0).sum(1) - pos * (pos + 1) / 2
    return u / np.maximum(pos * neg, 1)


def bootstrap_indices(y_true: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) row numbers drawn with replacement within each truth class (so every
    resample keeps the class counts, and an AUC exists in each)."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.choice(rows, (resamples, len(rows)), replace=True)
        for rows in (np.flatnonzero(y_true == v) for v in np.unique(y_true))
    ]
    return np.concatenate(parts, axis=1)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(n,) fold number of each row: each class shuffled (seeded) and dealt round-robin, so
    every fold holds both classes in the training proportions."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for value in np.unique(y):
        rows = np.flatnonzero(y == value)
        rng.shuffle(rows)
        fold[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return fold


def membership_intervals(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    scores: Sequence[float] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """95 % bootstrap percentile intervals of F1, accuracy, kappa and ROC-AUC (resampling the
    test slices within each truth class): how far the figures could move on another test set
    of the same size. ``<metric>_ci95`` keys, ``[low, high]``; None where undefined."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    idx = bootstrap_indices(t, resamples, seed)
    tb, pb = t[idx], p[idx]
    tp = (tb & pb).sum(1).astype(float)
    fp = ((1 - tb) & pb).sum(1).astype(float)
    fn = (tb & (1 - pb)).sum(1).astype(float)
    n = t.size
    tn = n - tp - fp - fn
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    accuracy = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    kappa = np.divide(accuracy - expected, 1 - expected, out=np.zeros_like(tp), where=expected < 1)
    both = scores is not None and len(np.unique(t)) == 2
    auc = aucs(tb, np.asarray(scores, dtype=float)[idx]) if both else None
    values = {"f1": f1, "accuracy": accuracy, "kappa": kappa, "roc_auc": auc}
    return {
        f"{name}_ci95": None
        if v is None
        else [round(float(q), 4) for q in np.percentile(v, [2.5, 97.5])]
        for name, v in values.items()
    }


def attribution_metrics(y_true: Sequence[Any], y_pred: Sequence[int]) -> dict[str, Any]:
    """Task 2 metrics: adjusted Rand index and normalised mutual information."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "n": len(y_true),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "n_clusters": len(set(y_pred)),
        "n_groups": len(set(y_true)),
    }


# -- run files ---------------------------------------------------------------------------------
OPEN_SET_HINT = " (-1, in no known group, is open_set.csv's mark; a challenge run is clusters.csv)"


def quote_field(field: str) -> str:
    """``field`` as one RFC 4180 CSV field: as it is when it can be, else in double quotes
    (commas, quotes, line breaks, or spaces at its ends that a reader would strip)."""
    if field and field == field.strip() and not any(c in field for c in ',"\r\n'):
        return field
    return '"' + field.replace('"', '""') + '"'


def write_run(path: str | os.PathLike[str], ids: Iterable[str], values: Iterable[int]) -> None:
    """Write an ImageCLEF run file: ``<id>,<value>`` per line, no header, ids quoted where
    needed (:func:`quote_field`)."""
    from ctfp.store.writer import write_text_atomic

    lines = "".join(f"{quote_field(i)},{int(v)}\n" for i, v in zip(ids, values, strict=True))
    write_text_atomic(path, lines)


def csv_records(text: str) -> list[tuple[int, list[tuple[str, bool]]]]:
    """RFC 4180 records of ``text``: (line number where the record starts, [(field, quoted)]).

    Whether a field was quoted is kept, so that a reader strips the spaces of unquoted fields
    only. An empty line is a record with no fields; a quote left open is an error.
    """
    records: list[tuple[int, list[tuple[str, bool]]]] = []
    fields: list[tuple[str, bool]] = []
    field: list[str] = []
    quoted = in_quotes = False
    line = start = 1
    i = 0
    while i < len(text):
        c = text[i]
        if in_quotes:
            if text[i : i + 2] == '""':
                field.append('"')
                i += 1
            elif c == '"':
                in_quotes = False
            else:
                line += c == "\n" or (c == "\r" and text[i + 1 : i + 2] != "\n")
                field.append(c)
        elif c == '"' and not "".join(field).strip():
            field, quoted, in_quotes = [], True, True
        elif c == ",":
            fields.append(("".join(field), quoted))
            field, quoted = [], False
        elif c in "\r\n":
            i += text[i : i + 2] == "\r\n"
            if fields or field or quoted:
                fields.append(("".join(field), quoted))
            records.append((start, fields))
            fields, field, quoted = [], [], False
            line += 1
            start = line
        else:
            field.append(c)
        i += 1
    if in_quotes:
        raise InputError(f"line {start}: a quoted field is never closed")
    if fields or field or quoted:
        fields.append(("".join(field), quoted))
        records.append((start, fields))
    return records


def validate_run(
    path: str | os.PathLike[str],
    task: str,
    ids: Sequence[str] | None = None,
    ids_file: str = "ids",
    unknown: bool = False,
) -> list[Problem]:
    """All the reasons ``path`` is not a valid run file for ``task``, in file order.

    Checks: empty lines, lines without exactly two comma-separated fields, ids not in ``ids``,
    ids given more than once, values that are not 0/1 (task 1) or non-negative integers
    (task 2; with ``unknown``, -1 too: a slice in no known group, as ``open_set.csv`` marks
    it), and ids of ``ids`` missing from the run (reported at their line in the id list).
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    import pyarrow.fs as pafs

    name = str(path)
    where, kind = _file_type(path)
    if kind == pafs.FileType.Directory:
        runs = re.compile(r"run\.csv|clusters\.csv|k[^/]*/run\.csv")
        found = [where.join(f).uri for f in where.list_files() if runs.fullmatch(f)]
        hint = f"; the run files in it: {', '.join(found[:4])}" if found else ""
        raise InputError(f"{name!r} is a folder, not a run file{hint}")
    text = _read_text(path, "run file")
    problems: list[Problem] = []
    known = None if ids is None else {i: n for n, i in enumerate(ids, start=1)}
    seen: dict[str, int] = {}

    def problem(number: int, reason: str, file: str = name) -> None:
        problems.append(Problem(file, number, reason))

    try:
        records = csv_records(text)
    except InputError as exc:
        return [Problem(name, 0, str(exc))]
    if not records:
        problem(1, "the run file is empty")
    for number, fields in records:
        if not fields or (len(fields) == 1 and not fields[0][1] and not fields[0][0].strip()):
            problem(number, "empty line")
            continue
        if len(fields) != 2:
            shown = ",".join(quote_field(f) if q else f for f, q in fields)
            n = len(fields)
            problem(number, f"expected 2 comma-separated fields <id>,<value>, got {n}: {shown!r}")
            continue
        (id_text, id_quoted), (value, _) = fields
        run_id, value = (id_text if id_quoted else id_text.strip()), value.strip()
        if known is not None and run_id not in known:
            problem(number, f"id {run_id!r} is not in the id list")
        if run_id in seen:
            first = seen[run_id]
            problem(number, f"id {run_id!r} is given more than once (first on line {first})")
        else:
            seen[run_id] = number
        if task == "task1" and value not in ("0", "1"):
            problem(number, f"label {value!r} is not the integer 0 or 1")
        cluster = (value.isdigit() and value.isascii()) or (unknown and value == "-1")
        if task == "task2" and not cluster:
            hint = OPEN_SET_HINT if value == "-1" else ""
            problem(number, f"cluster {value!r} is not a non-negative integer{hint}")
    for run_id, number in (known or {}).items():
        if run_id not in seen:
            problem(number, f"id {run_id!r} is missing from the run", ids_file)
    return problems


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """An id list: one id per line; blank lines are ignored and the spaces around an id are
    not its own. An id in double quotes (RFC 4180, as run files quote it) is exactly what the
    quotes hold: commas, quotes, line breaks and spaces at its ends included. An id given twice
    is an error naming both lines."""
    name = str(path)
    text = _read_text(path, "id list")
    try:
        records = csv_records(text)
    except InputError as exc:
        raise InputError(f"id list {name!r} {exc}") from None
    ids: dict[str, int] = {}
    for number, fields in records:
        if not any(quoted for _, quoted in fields):
            found = ",".join(field for field, _ in fields).strip()  # the line as it is
            if not found:
                continue
        elif len(fields) == 1:
            found = fields[0][0]
        else:
            raise InputError(
                f"id list {name!r} line {number}: expected one id, got {len(fields)} fields "
                "(quote an id that holds a comma as a whole)"
            )
        if found in ids:
            raise InputError(
                f"id list {name!r} line {number}: id {found!r} is given more than once (first "
                f"on line {ids[found]}); keep one line per id"
            )
        ids[found] = number
    return list(ids)


def read_run(path: str | os.PathLike[str], task: str, unknown: bool = False) -> dict[str, int]:
    """A valid run file as ``{id: value}``; raises InputError listing the problems otherwise
    (``unknown``: task 2 clusters may be -1, :func:`validate_run`)."""
    problems = validate_run(path, task, unknown=unknown)
    if problems:
        shown = "; ".join(map(str, problems[:5]))
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError(f"invalid {task} run file: {shown}{more}")
    run = {}
    for _, ((run_id, quoted), (value, _)) in csv_records(_read_text(path, "run file")):
        run[run_id if quoted else run_id.strip()] = int(value)
    return run


def read_table(path: str | os.PathLike[str], value_column: str) -> dict[str, str]:
    """``{id: value}`` from a CSV with a header naming ``id`` and ``value_column`` (in any
    case), or of headerless ``<id>,<value>`` lines. Fields are RFC 4180 CSV (an unquoted
    field's outer spaces are not its own); an id given twice is an error naming both lines."""
    return {i: value for i, (value, _) in _table_lines(path, value_column).items()}


def _table_lines(path: str | os.PathLike[str], value_column: str) -> dict[str, tuple[str, int]]:
    """:func:`read_table`'s ``{id: (value, line number)}``."""
    name = str(path)
    text = _read_text(path, "file")
    try:
        records = csv_records(text)
    except InputError as exc:  # say which file
        raise InputError(f"{name!r} {exc}") from None
    numbered = [
        (number, [field if quoted else field.strip() for field, quoted in fields])
        for number, fields in records
        if any(quoted or field.strip() for field, quoted in fields)
    ]
    if not numbered:
        raise InputError(f"{name!r} is empty")
    columns = numbered[0][1]
    header = [c.lower() for c in columns]
    if "id" not in header and len(header) >= 2 and not _is_number(header[1]):
        raise InputError(
            f"{name!r} starts with a header ({', '.join(columns)}) without an 'id' column; "
            f"name its columns id,{value_column} (or drop the header line)"
        )
    if "id" in header:
        if value_column not in header:
            raise InputError(
                f"{name!r} has no {value_column!r} column (columns: {', '.join(columns)})"
            )
        i, v = header.index("id"), header.index(value_column)
        numbered = numbered[1:]
        if not numbered:
            raise InputError(f"{name!r} has a header ({', '.join(columns)}) but no rows")
    else:
        i, v = 0, 1
    table: dict[str, tuple[str, int]] = {}
    for n, r in numbered:
        if len(r) <= max(i, v):
            raise InputError(f"{name!r} line {n}: too few fields")
        if r[i] in table:
            raise InputError(
                f"{name!r} line {n}: id {r[i]!r} is given more than once (first on line "
                f"{table[r[i]][1]}); keep one row per id"
            )
        table[r[i]] = (r[v], n)
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def evaluate_run(
    task: str,
    run_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    scores_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score a run file against a truth CSV (``id,label`` for task 1, ``id,cluster`` for task 2).

    Task 1 gives 95 % bootstrap intervals too (:func:`membership_intervals`), and ROC-AUC from
    ``scores_path`` (``id,score,...``; default the run's ``scores.csv`` where there is one;
    +/-inf are scores, NaN is refused). Task 2 takes ``open_set.csv`` too: its -1 slices are
    scored as one cluster of their own, counted in ``n_unknown``.
    """
    run = read_run(run_path, task, unknown=task == "task2")
    truth = _table_lines(truth_path, "label" if task == "task1" else "cluster")
    missing = sorted(set(truth) - set(run))
    extra = sorted(set(run) - set(truth))
    if missing or extra:
        counts = [
            f"{len(some)} {where} (e.g. {', '.join(map(repr, some[:3]))})"
            for some, where in ((missing, "missing from the run"), (extra, "not in the truth"))
            if some
        ]
        raise InputError(
            f"the run {str(run_path)!r} and the truth {str(truth_path)!r} cover different ids: "
            f"{'; '.join(counts)}; give the truth of the run's test set"
        )
    ids = sorted(truth)
    if task == "task2":
        result = attribution_metrics([truth[i][0] for i in ids], [run[i] for i in ids])
        unknown = sum(run[i] == -1 for i in ids)
        return {**result, "n_unknown": unknown} if unknown else result
    bad = [i for i in ids if truth[i][0] not in ("0", "1")]
    if bad:
        label, line = truth[bad[0]]
        raise InputError(
            f"{str(truth_path)!r} line {line}: id {bad[0]!r} has the label {label!r}; task 1 "
            "truth labels must be 0 or 1"
        )
    y_true = [int(truth[i][0]) for i in ids]
    if scores_path is None:  # the run folder's scores.csv, local or on a store
        beside = resolve(os.path.dirname(str(run_path)) or ".").join("scores.csv")
        scores_path = beside.uri if beside.exists() else None
    scores = None
    if scores_path is not None:
        table = _table_lines(scores_path, "score")
        absent = [i for i in ids if i not in table]
        if absent:
            raise InputError(
                f"{str(scores_path)!r} has no score for {len(absent)} id(s) of the truth "
                f"(e.g. {absent[:3]})"
            )
        scores = []
        for i in ids:
            text, line = table[i]
            value = float(text) if _is_number(text) else math.nan
            if math.isnan(value):
                raise InputError(
                    f"{str(scores_path)!r} line {line}: the score {text!r} of id {i!r} is not a "
                    "number (inf and -inf are; a ROC-AUC ranks every id of the truth)"
                )
            scores.append(value)
    predicted = [run[i] for i in ids]
    result = membership_metrics(y_true, predicted, scores)
    result["scores"] = None if scores_path is None else str(scores_path)
    result.update(membership_intervals(y_true, predicted, scores))
    return result


def format_table(metrics: dict[str, Any]) -> str:
    """Metrics as a two-column plain-text table."""
    width = max(len(k) for k in metrics)
    lines = []
    for key, value in metrics.items():
        if isinstance(value, list) and len(value) == 2:  # a 95 % interval
            value = f"[{value[0]:.4f}, {value[1]:.4f}]"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"{key:<{width}}  {'-' if value is None else value}")
    return "\n".join(lines)
