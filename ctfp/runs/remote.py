"""Run folders and saved models on an object store (``s3://``, ``gs://``, ``abfs://``).

A run's embeddings go straight to the store (shard folders have their own commit record and
lease, :mod:`ctfp.store.manifest`). Its small files (run files, scores, the model, the report)
are written in a local staging folder by the same code as a local run, then published: under a
lease on the run folder, the previous ``summary.json`` is withdrawn first (from then on readers
see an unfinished run, never a mix), the previous run's other results are deleted, each new
file is put in one request, and ``summary.json``, the run's commit record with every file's
fingerprint, goes last. A run that fails or is killed before that publishes nothing and leaves
the previous run as it was, or as an unfinished run if it died while publishing.

Readers (``ctfp score``, ``ctfp report``, :func:`ctfp.runs.models.load_model`) fetch the record
and the files it names into a local folder and check them against their fingerprints, as for
a local run folder (:func:`ctfp.runs.folder.read_summary`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ctfp.exceptions import InputError
from ctfp.io.fs import (
    PathLike,
    as_local,
    child,
    delete_file,
    exists,
    is_remote,
    list_files,
    put_object,
    read_bytes,
    resolve,
)
from ctfp.io.locks import LEASE_FILE

T = TypeVar("T")


def in_run_folder(out: PathLike, body: Callable[[Path, PathLike], T]) -> T:
    """``body(local, root)``: a run writing its files into ``local`` and its embeddings under
    ``root``. Locally both are ``out``; on a store ``local`` is a staging folder, published to
    ``out`` when ``body`` returns (the summary it returned names ``out``, not the staging
    folder)."""
    out = as_local(out)
    if not is_remote(out):
        return body(Path(out), Path(out))
    uri = os.fspath(out).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="ctfp-run-") as tmp:
        result = body(Path(tmp), uri)
        publish(Path(tmp), uri)
        return relocate(result, tmp, uri)


def relocate(value: Any, local: str, uri: str) -> Any:
    """``value`` (a summary) with every string naming a file under ``local`` naming it under
    ``uri``."""
    if isinstance(value, str):
        return uri + value[len(local) :] if value.startswith(local) else value
    if isinstance(value, dict):
        return {k: relocate(v, local, uri) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(relocate(v, local, uri) for v in value)
    return value


def publish(
    local: Path,
    uri: str,
    *,
    commit: str = "summary.json",
    replaces: Callable[[str], bool] | None = None,
) -> None:
    """Put the files of ``local`` under ``uri``, ``commit`` (the commit record) last and the
    previous one withdrawn first. The previous files that ``replaces(name)`` says the new ones
    replace and that are not among them are deleted (default: a run's results,
    :func:`ctfp.runs.folder.is_result`; the embeddings and other objects stay)."""
    from ctfp.runs.folder import is_result

    replaced = is_result if replaces is None else replaces
    lease = resolve(uri).lock()
    try:
        delete_file(child(uri, commit))
        new = list_files(local)
        for name in list_files(uri):
            if name not in new and name != LEASE_FILE and replaced(name):
                delete_file(child(uri, name))
        for name in new:
            if name != commit:
                lease.check()
                put_object(child(uri, name), (local / name).read_bytes())
        if commit in new:
            lease.check()
            put_object(child(uri, commit), _relocated(local / commit, local, uri))
    finally:
        lease.release()


def _relocated(path: Path, local: Path, uri: str) -> bytes:
    """The staged commit record, its paths renamed from the staging folder to the store (the
    record itself is not fingerprinted; the files it names keep their bytes)."""
    data = path.read_bytes()
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    return (json.dumps(relocate(doc, str(local), uri), indent=2) + "\n").encode()


@contextmanager
def local_run(location: PathLike) -> Iterator[tuple[Path, PathLike]]:
    """``(local folder, where it lives)`` of a run folder or saved model: locally the folder
    itself; on a store, a temporary copy of its commit record and the files that record names
    (a run's ``summary.json``, or a model's ``model.json`` and ``arrays.npz``), checked by
    the readers as a local folder is. The copy is removed on leaving."""
    from ctfp.runs.folder import ARRAYS_FILE, MODEL_FILE, SUMMARY_FILE, fingerprint

    location = as_local(location)
    if not is_remote(location):
        yield Path(location), Path(location)
        return
    uri = os.fspath(location).rstrip("/")
    tmp = Path(tempfile.mkdtemp(prefix="ctfp-fetch-"))
    try:
        uri, inside = _run_of(uri)
        record = read_bytes(child(uri, SUMMARY_FILE))
        if record is not None:
            try:
                files = dict(json.loads(record).get("files") or {})
            except (ValueError, AttributeError, TypeError):
                files = {}  # read_summary names the damage
            _fetch(uri, tmp, list(files))
            for name, expected in files.items():
                if fingerprint(tmp / name) != expected:
                    raise InputError(
                        f"{child(uri, name)} is not the file the run recorded in "
                        f"{child(uri, SUMMARY_FILE)} (changed after it, or a later run was "
                        "interrupted while publishing); rerun the same `ctfp run` command"
                    )
            (tmp / SUMMARY_FILE).write_bytes(record)
        elif exists(child(uri, MODEL_FILE)):
            _fetch(uri, tmp, [ARRAYS_FILE, MODEL_FILE])
        elif list_files(uri):
            raise InputError(
                f"{uri!r} has no {SUMMARY_FILE} or {MODEL_FILE}: not a finished ctfp run or "
                "saved model (an interrupted run publishes its summary last)"
            )
        else:
            raise InputError(f"{uri!r} does not exist (no object under it)")
        yield (tmp / inside if inside else tmp), (f"{uri}/{inside}" if inside else uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_of(uri: str) -> tuple[str, str]:
    """``(run folder, path inside it)`` for a URI naming a run, its model (``OUT/model``), one
    k of a sweep (``OUT/k3``) or that k's model; ``(uri, "")`` for anything else."""
    import re

    from ctfp.runs.folder import MODEL_DIR, SUMMARY_FILE

    parts = uri.split("/")
    for up in (1, 2):
        inside = parts[-up:]
        if len(parts) - up < 3 or not all(
            n == MODEL_DIR or re.fullmatch(r"k\d+", n) for n in inside
        ):
            break
        if exists(child("/".join(parts[:-up]), SUMMARY_FILE)) and not exists(
            child(uri, SUMMARY_FILE)
        ):
            return "/".join(parts[:-up]), "/".join(inside)
    return uri, ""


def _fetch(uri: str, local: Path, names: list[str]) -> None:
    for name in names:
        if "/" in name and ".." in name.split("/"):
            raise InputError(f"{uri}: the record names {name!r}, outside the folder")
        data = read_bytes(child(uri, name))
        if data is None:
            raise InputError(
                f"{child(uri, name)} is missing: {uri!r} names it but it is not there (removed "
                "after the run, or a later run was interrupted while publishing)"
            )
        dest = local / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


__all__ = ["in_run_folder", "local_run", "publish", "relocate"]
