"""The run-folder format, in one place: what ``ctfp run`` writes and everything else reads.

OUT/summary.json           the task, the settings that ran, counts, what was chosen
OUT/run.csv                task 1: <id>,<0|1> (ImageCLEF run file, no header)
OUT/scores.csv             task 1: id,score,label (score: higher = more likely used)
OUT/clusters.csv           task 2: <id>,<cluster> (ImageCLEF run file, no header)
OUT/model/                 the fitted model (:mod:`ctfp.runs.models`)
OUT/k<k>/...               task 1 with several k: run.csv, scores.csv, model/ per k
OUT/embeddings[-<features>]/  the embedding shards, reused by reruns
OUT/origin.json            the data folder and task the run folder belongs to (written before
                           the first embedding; another folder or task is refused)
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.exceptions import InputError
from ctfp.io.fs import PathLike
from ctfp.runs.settings import TASKS
from ctfp.store.writer import write_text_atomic

TEST_PREFIX = "test/"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.csv"
SCORES_FILE = "scores.csv"
#: Task 1: the labelled training reals' out-of-fold scores (``id,score,label``, 1 =
#: train/used), what the report compares the test scores with.
TRAIN_SCORES_FILE = "train_scores.csv"
CLUSTERS_FILE = "clusters.csv"
MODEL_DIR = "model"
#: A saved model folder (:mod:`ctfp.runs.models`): its description, written last, and arrays.
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
REPORT_FILE = "report.html"
#: Task 2's open-set file and the audit files the report writes beside it.
OPEN_SET_FILE = "open_set.csv"
AUDIT_FILES = ("audit.json", "audit.md")
EMBEDDINGS_DIR = "embeddings"
#: ``{"data": <resolved data folder>, "task": "task1"|"task2"}``: whose run folder this is.
ORIGIN_FILE = "origin.json"


def embeddings_dir(out: PathLike, features: str = "resnet50") -> Path | str:
    """Where a run keeps its embeddings: one folder per feature type, reused on reruns (a URI
    where ``out`` is on an object store)."""
    from ctfp.io.fs import child

    safe = features.replace(":", "")  # pixels:32 -> embeddings-pixels32 (portable names)
    name = EMBEDDINGS_DIR if features == "resnet50" else f"{EMBEDDINGS_DIR}-{safe}"
    return child(out, name)


def find_embeddings(
    run_dir: PathLike, summary: dict[str, Any], origin: PathLike | None = None
) -> Path | str | None:
    """The run's embeddings folder, or None; with several, the one whose model identity matches
    the summary's. ``origin``: where the run lives when ``run_dir`` is a local copy of it
    (:func:`ctfp.runs.remote.local_run`)."""
    from ctfp.io.fs import child, resolve
    from ctfp.store.manifest import committed_shards, has_shards
    from ctfp.store.reader import read_schema
    from ctfp.store.schema import read_metadata

    where = run_dir if origin is None else origin
    tops = sorted({n.split("/", 1)[0] for n in resolve(where).list_files() if "/" in n})
    names = [n for n in tops if n == EMBEDDINGS_DIR or n.startswith(EMBEDDINGS_DIR + "-")]
    found = [child(where, n) for n in names if has_shards(child(where, n))]
    if len(found) <= 1:
        return found[0] if found else None
    model = summary.get("model") or {}
    for folder in found:
        meta = read_metadata(read_schema(committed_shards(folder)[0])) or {}
        if all(meta.get(k) == model.get(k) for k in ("model", "weights_sha256")):
            return folder
    return found[0]


def task1_dir(out: PathLike, ks: Sequence[int], k: int) -> Path:
    """Where the files of one k of a task 1 run are: ``out``, or ``out/k<k>`` in a sweep."""
    return Path(out) if len(ks) == 1 else Path(out) / f"k{k}"


def chosen_k(summary: dict[str, Any]) -> int | None:
    """The k a k sweep chose on the training reals (the one shown in detail), or None."""
    if len(summary.get("k") or []) < 2:
        return None
    k = (((summary.get("selection") or {}).get("chosen") or {}).get("params") or {}).get("k")
    return None if k is None else int(k)


def write_scores(path: PathLike, ids: Sequence[str], score: np.ndarray, pred: np.ndarray) -> None:
    """``scores.csv``: ``id,score,label`` with a header."""
    from ctfp.evaluate import quote_field

    rows = "".join(
        f"{quote_field(i)},{s:.6f},{int(p)}\n" for i, s, p in zip(ids, score, pred, strict=True)
    )
    write_text_atomic(path, "id,score,label\n" + rows)


def read_scores(path: PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``scores.csv`` as ids, (n,) float scores and (n,) int predictions."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the run has no {str(path)!r} (written by `ctfp run task1`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "score", "label"} <= set(reader.fieldnames):
            raise InputError(f"{str(path)!r} is not a scores file with columns id,score,label")
        rows = list(reader)
    ids = [r["id"] for r in rows]
    scores = np.array([float(r["score"]) for r in rows], dtype=float)
    pred = np.array([int(r["label"]) for r in rows], dtype=int)
    return ids, scores, pred


#: The top-level names of a run's results, which a new run replaces (``k<k>/`` folders too).
RESULTS = (
    SUMMARY_FILE,
    RUN_FILE,
    SCORES_FILE,
    TRAIN_SCORES_FILE,
    CLUSTERS_FILE,
    OPEN_SET_FILE,
    REPORT_FILE,
    *AUDIT_FILES,
    MODEL_DIR,
)


def is_result(name: str) -> bool:
    """Whether ``name`` (``/``-separated, relative to a run folder) is a file of a run's
    results (:data:`RESULTS`)."""
    top = name.split("/", 1)[0]
    return top in RESULTS or re.fullmatch(r"k\d+", top) is not None


def begin_commit(out: PathLike) -> None:
    """Withdraw the previous run's commit record and results (:func:`is_result`) before this
    run writes its files: a run killed from here on leaves no ``summary.json``, which readers
    refuse as interrupted, and no old file (one k after a sweep) is left to pick up. The
    embeddings stay, to be reused."""
    root = Path(out)
    (root / SUMMARY_FILE).unlink(missing_ok=True)
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not is_result(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def check_origin(out: PathLike, data: str, task: str) -> None:
    """Refuse to run ``task`` on the data folder ``data`` (resolved) into the run folder ``out``
    (local or a URI) that its :data:`ORIGIN_FILE` (else its summary) gives to another data
    folder or task."""
    from ctfp.io.fs import resolve

    where = resolve(out)
    raw = where.join(ORIGIN_FILE).read_bytes() or where.join(SUMMARY_FILE).read_bytes()
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        record = {}  # an unreadable summary: read_summary names it where it is read
    record = record if isinstance(record, dict) else {}
    held_data, held_task = record.get("data", data), record.get("task", task)
    if (held_data, held_task) != (data, task):
        raise InputError(
            f"--out {str(out)!r} holds the {held_task} run of {str(held_data)!r}, not the "
            f"{task} run of {data!r}: its embeddings and results are that run's; use another "
            "--out for this one"
            + (
                f" (or, if the data folder was moved there, remove {ORIGIN_FILE} from --out: "
                "its files are checked against the stored rows)"
                if held_task == task
                else ""
            )
        )


def write_origin(out: PathLike, data: str, task: str) -> None:
    """Record in the run folder ``out`` the data folder and task it belongs to, once."""
    from ctfp.io.fs import child, resolve

    path = child(out, ORIGIN_FILE)
    if not resolve(path).exists():
        write_text_atomic(path, json.dumps({"data": data, "task": task}, indent=2) + "\n")


def fingerprint(path: Path) -> str:
    """What the commit record keeps of one file: its sha256 (files up to 64 MiB), else its size
    and modification time (a large saved index is not hashed at every load)."""
    stat = path.stat()
    if stat.st_size <= 64 * 2**20:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return f"stat:{stat.st_size}:{stat.st_mtime_ns}"


def write_summary(out: PathLike, summary: dict[str, Any], files: Sequence[PathLike] = ()) -> Path:
    """``summary.json``, written atomically and last: the run's commit record, with the
    fingerprint of each of its ``files`` (run files, scores, the model)."""
    root = Path(out)
    listed = {}
    for f in map(Path, files):
        for part in sorted(f.rglob("*")) if f.is_dir() else [f]:
            if part.is_file():
                listed[part.relative_to(root).as_posix()] = fingerprint(part)
    path = root / SUMMARY_FILE
    write_text_atomic(path, json.dumps({**summary, "files": listed}, indent=2) + "\n")
    return path


def check_if_run(folder: Path, marks: Sequence[str] = ()) -> bool:
    """Whether ``folder`` is a run folder (it has a ``summary.json`` or one of ``marks``), its
    summary then checked (:func:`read_summary`): files inside a run are used only if it
    finished and they are the ones it recorded."""
    if any((folder / name).exists() for name in (SUMMARY_FILE, *marks)):
        read_summary(folder)
        return True
    return False


def read_summary(run_dir: PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a run folder, its listed files checked against their
    fingerprints; InputError when ``run_dir`` is not a run folder, its run was interrupted, or
    its files were changed after it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"run folder {str(run)!r} does not exist")
    path = run / SUMMARY_FILE
    if not path.is_file():
        if re.fullmatch(r"k\d+", run.name) and (run.parent / SUMMARY_FILE).is_file():
            raise InputError(
                f"{str(run)!r} is one k of the sweep in {str(run.parent)!r}: give the run folder "
                f"({run.parent}; `ctfp report` takes --k {run.name[1:]})"
            )
        if any((run / name).exists() for name in (RUN_FILE, CLUSTERS_FILE, MODEL_DIR)):
            raise InputError(
                f"the run in {str(run)!r} was interrupted before it finished (its files are there "
                f"but no {SUMMARY_FILE}, written last); rerun the same `ctfp run` command"
            )
        raise InputError(
            f"{str(run)!r} is not a ctfp run folder: it has no {SUMMARY_FILE} (written by "
            "`ctfp run task1|task2 DATA --out OUT`)"
        )
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(summary, dict) or summary.get("task") not in TASKS:
        raise InputError(f"{str(path)!r} does not name a task (task1 or task2)")
    for name, expected in (summary.get("files") or {}).items():
        part = run / name
        if not part.is_file() or fingerprint(part) != expected:
            raise InputError(
                f"{part} is not the file the run recorded in {path} (changed or removed after "
                "it, or a later run was interrupted while writing it); rerun the same `ctfp run` "
                "command"
            )
    return summary


__all__ = [
    "ARRAYS_FILE",
    "CLUSTERS_FILE",
    "MODEL_DIR",
    "MODEL_FILE",
    "ORIGIN_FILE",
    "RUN_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "TEST_PREFIX",
    "begin_commit",
    "check_if_run",
    "check_origin",
    "chosen_k",
    "embeddings_dir",
    "find_embeddings",
    "fingerprint",
    "is_result",
    "read_scores",
    "read_summary",
    "task1_dir",
    "write_origin",
    "write_scores",
    "write_summary",
]
