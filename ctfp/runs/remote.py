"""Run folders and saved models on an object store (``s3://``, ``gs://``, ``abfs://``).

A run's embeddings go straight to the store. Its small files are written in a local staging
folder, then published under a lease on the run folder (:func:`publish`), so a run killed
before leaves the previous one as it was. Readers fetch the commit record and the files it
names into a local folder and check them as a local run folder's (:func:`local_run`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ctfp.exceptions import InputError
from ctfp.io.fs import Location, PathLike, as_local, is_remote, resolve
from ctfp.io.locks import LEASE_FILE

if TYPE_CHECKING:
    from ctfp.engine.settings import EngineSettings
    from ctfp.runs.layout import Run

T = TypeVar("T")


def in_run_folder(
    data: PathLike,
    out: PathLike,
    task: str,
    engine: str | EngineSettings,
    progress: bool,
    body: Callable[[Run], T],
) -> T:
    """``body(run)``: the ``task`` run (:class:`~ctfp.runs.layout.Run`) reading ``data``, writing
    its files into ``run.out`` and its embeddings under ``run.root``. Locally both are ``out``;
    on a store ``run.out`` is a staging folder, published to ``out`` when ``body`` returns.

    A run folder belongs to one data folder and task (:func:`~ctfp.runs.folder.check_origin`)
    and has one writer: ``run.claim()``, called before the first write, takes its lock (lease)
    until the commit record is written, and records what the folder belongs to."""
    from ctfp.runs.folder import check_origin, write_origin
    from ctfp.runs.layout import Run, data_folder

    where, out = data_folder(data), as_local(out)
    source = where.uri
    uri = os.fspath(out).rstrip("/") if is_remote(out) else None
    root: PathLike = uri or Path(out)
    check_origin(root, source, task)
    with ExitStack() as held:
        locks: list[Any] = []

        def claim() -> None:
            if not locks:
                locks.append(held.enter_context(resolve(root).lock()))
                check_origin(root, source, task)  # a run that claimed it meanwhile
                write_origin(root, source, task)

        if uri is None:
            return body(Run(task, where, Path(out), Path(out), claim, engine, progress))
        with tempfile.TemporaryDirectory(prefix="ctfp-run-") as tmp:
            result = body(Run(task, where, Path(tmp), uri, claim, engine, progress))
            claim()
            publish(Path(tmp), uri, locks[0])
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


def publish(local: Path, uri: str, lease: Any) -> None:
    """Put the files of ``local`` under ``uri``, ``summary.json`` (the commit record) last and
    the previous one withdrawn first, under ``lease`` (the run's, held already). The previous
    run's results that the new files do not replace are deleted
    (:func:`ctfp.runs.folder.is_result`; the embeddings and other objects stay)."""
    from ctfp.runs.folder import SUMMARY_FILE, is_result

    target = resolve(uri)
    target.join(SUMMARY_FILE).delete()
    new = resolve(local).list_files()
    for name in target.list_files():
        if name not in new and name != LEASE_FILE and is_result(name):
            target.join(name).delete()
    for name in sorted(new, key=lambda n: n == SUMMARY_FILE):  # the commit record last
        lease.check()
        data = (local / name).read_bytes()
        if name == SUMMARY_FILE:  # its paths renamed to the store (it is not fingerprinted)
            with suppress(ValueError):
                data = (
                    json.dumps(relocate(json.loads(data), str(local), uri), indent=2) + "\n"
                ).encode()
        target.join(name).put(data)


@contextmanager
def local_run(location: PathLike) -> Iterator[tuple[Path, PathLike]]:
    """``(local folder, where it lives)`` of a run folder or saved model: locally the folder
    itself; on a store, a temporary copy of its commit record (``summary.json``, or a model's
    ``model.json``) and the files it names, removed on leaving."""
    from ctfp.runs.folder import ARRAYS_FILE, MODEL_FILE, SUMMARY_FILE, fingerprint

    location = as_local(location)
    if not is_remote(location):
        yield Path(location), Path(location)
        return
    uri = os.fspath(location).rstrip("/")
    tmp = Path(tempfile.mkdtemp(prefix="ctfp-fetch-"))
    try:
        uri, inside = _run_of(uri)
        run = resolve(uri)
        record = run.join(SUMMARY_FILE).read_bytes()
        if record is not None:
            try:
                files = dict(json.loads(record).get("files") or {})
            except (ValueError, AttributeError, TypeError):
                files = {}  # read_summary names the damage
            _fetch(run, tmp, list(files))
            for name, expected in files.items():
                if fingerprint(tmp / name) != expected:
                    raise InputError(
                        f"{uri}/{name} is not the file the run recorded in "
                        f"{uri}/{SUMMARY_FILE} (changed after it, or a later run was "
                        "interrupted while publishing); rerun the same `ctfp run` command"
                    )
            (tmp / SUMMARY_FILE).write_bytes(record)
        elif run.join(MODEL_FILE).exists():
            _fetch(run, tmp, [ARRAYS_FILE, MODEL_FILE])
        elif run.list_files():
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
        above = "/".join(parts[:-up])
        if (
            resolve(f"{above}/{SUMMARY_FILE}").exists()
            and not resolve(f"{uri}/{SUMMARY_FILE}").exists()
        ):
            return above, "/".join(inside)
    return uri, ""


def _fetch(run: Location, local: Path, names: list[str]) -> None:
    for name in names:
        if "/" in name and ".." in name.split("/"):
            raise InputError(f"{run}: the record names {name!r}, outside the folder")
        data = run.join(name).read_bytes()
        if data is None:
            raise InputError(
                f"{run}/{name} is missing: {str(run)!r} names it but it is not there (removed "
                "after the run, or a later run was interrupted while publishing)"
            )
        dest = local / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


__all__ = ["in_run_folder", "local_run", "publish", "relocate"]
