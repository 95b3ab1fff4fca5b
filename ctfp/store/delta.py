"""Delta Lake tables: a shard folder whose commit record is the Delta log, so every engine
(Spark, Trino, DuckDB, Polars, delta-rs) reads exactly the committed rows.

A new table is spelled ``delta:PATH`` (``delta:s3://bucket/emb``); a folder with
``_delta_log/`` is one however it is spelled; ``delta:PATH@vN`` reads version ``N`` (what
:func:`pin` returns). Its parts are ctfp's, except that the embedding column is Delta's
``array<float>`` (float16 embeddings stored as their exact float32 values). A writer puts a
part, then commits it in one transaction (:class:`DeltaLog`) at exactly the version after the
one it last read (the store's conditional write); one that finds the table moved on commits
after it or, where that holds rows of its own inputs, stops. Writers take no lease; parts in
no version are deleted once :data:`ORPHAN_HOURS` old.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ctfp.exceptions import CtfpError, InputError, ShardMismatchError, StorageError, first_line
from ctfp.io.fs import Location, PathLike, child, resolve
from ctfp.io.locks import Held
from ctfp.progress import logger
from ctfp.store.schema import PART_RE

PREFIX = "delta:"
LOG_DIR = "_delta_log"
PROPERTY = "ctfp.metadata"  # the table property holding the shards' ctfp metadata (JSON)
#: Parts no version names are deleted once this old (a younger one may be a live writer's).
ORPHAN_HOURS = 1
_VERSION = re.compile(r"^(.*)@v(\d+)$")


class CommitRefused(CtfpError):
    """Another writer committed rows of the same inputs first: this commit is not made."""


def split(location: PathLike) -> tuple[str, int | None] | None:
    """``(table location, version)`` of ``delta:PATH[@vN]`` (version None: the latest); None
    for a location not spelled as a table."""
    text = os.fspath(location)
    if not text.startswith(PREFIX):
        return None
    text = text[len(PREFIX) :]
    match = _VERSION.match(text)
    if not text or (match and not match.group(1)):
        raise InputError(f"{os.fspath(location)!r}: write a table as delta:PATH or delta:URI")
    return (match.group(1), int(match.group(2))) if match else (text, None)


def table_of(location: PathLike) -> tuple[str, int | None] | None:
    """``(table location, version)`` where ``location`` is a Delta table: spelled
    ``delta:...`` (:func:`split`) or a folder holding ``_delta_log/``; else None."""
    spelled = split(location)
    if spelled is not None:
        return spelled
    import pyarrow.fs as pafs

    loc = resolve(location)
    with loc.failing():
        kind = loc.filesystem.get_file_info(loc.join(LOG_DIR).path).type
    return (os.fspath(location), None) if kind == pafs.FileType.Directory else None


def storage_options(loc: Location) -> dict[str, str]:
    """delta-rs's options for the store of ``loc`` (credentials and endpoint from the same
    environment as pyarrow's; plain HTTP only for an ``http://`` endpoint), never the unsafe
    rename, which lets two writers overwrite each other's commits."""
    if loc.local:
        return {}
    unsafe = os.environ.get("AWS_S3_ALLOW_UNSAFE_RENAME", "").strip().lower()
    if unsafe in ("1", "true", "yes"):
        raise CtfpError(
            "AWS_S3_ALLOW_UNSAFE_RENAME is set: two writers of a Delta table could then replace "
            "each other's commits and lose rows. ctfp commits through the store's conditional "
            "writes (S3 If-None-Match: AWS S3, MinIO and most S3-compatible stores); unset it"
        )
    options = {"connect_timeout": "5s", "timeout": "120s"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def require() -> Any:
    """The deltalake package, or a CtfpError saying how to install it."""
    try:
        import deltalake
    except ImportError:
        raise CtfpError(
            "Delta tables need the deltalake package: pip install 'ctfp[delta]'"
        ) from None
    return deltalake


def _uri(loc: Location) -> str:
    return loc.path if loc.local else loc.uri.rstrip("/")


def _open(loc: Location, version: int | None = None) -> Any:
    """The :class:`deltalake.DeltaTable` at ``loc`` (at ``version``), or None where none."""
    require()
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        with _failing(loc):
            return DeltaTable(_uri(loc), version=version, storage_options=storage_options(loc))
    except TableNotFoundError:
        return None


@contextlib.contextmanager
def _failing(loc: Location) -> Iterator[None]:
    """delta-rs's errors on ``loc`` as a StorageError naming it (but a commit conflict and a
    missing table)."""
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    try:
        yield
    except (CommitFailedError, TableNotFoundError, CtfpError):
        raise
    except (DeltaError, OSError) as exc:
        raise StorageError(f"{loc.uri}: the Delta table: {first_line(exc)}") from exc


def metadata_of(dt: Any) -> dict[str, Any] | None:
    """The ctfp metadata a table records (its :data:`PROPERTY`), or None."""
    raw = dt.metadata().configuration.get(PROPERTY)
    return None if raw is None else json.loads(raw)


def table_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` (:func:`~ctfp.store.schema.shard_schema`) with the embedding column as a
    Delta ``array<float>`` (a variable-size list of non-null float32), metadata kept."""
    i = schema.get_field_index("embedding")
    if i < 0:
        raise CtfpError("a decoded-slice cache is written as a shard folder, not a Delta table")
    element = pa.field("element", pa.float32(), nullable=False)
    return schema.set(i, pa.field("embedding", pa.list_(element), nullable=False))


def table_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a table's parts: float32 storage (Delta has no 16-bit float)."""
    if metadata.get("dtype") not in ("float16", "float32"):
        raise CtfpError(
            f"a Delta table holds float embeddings; {metadata.get('dtype')!r} (a decoded-slice "
            "cache) is written as a shard folder"
        )
    return {**metadata, "dtype": "float32"}


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: its number and its parts (absolute paths, in name order)."""

    location: str
    version: int
    files: list[Path | str]


def snapshot(location: PathLike, version: int | None = None) -> Snapshot:
    """The parts of the table at ``location`` (``version``: that one, else the latest).

    Raises InputError: there is no table there, or no such version, or it has no rows.
    """
    loc = resolve(location)
    try:
        dt = _open(loc, version)
    except StorageError as exc:
        if version is not None and "version" in str(exc).lower():
            raise InputError(f"{loc.uri} has no version {version}: {exc}") from None
        raise
    if dt is None:
        raise InputError(f"no Delta table at {os.fspath(location)!r}")
    names = sorted(active(dt))
    if not names:
        raise InputError(f"the Delta table {loc.uri} (version {dt.version()}) holds no rows")
    return Snapshot(os.fspath(location), dt.version(), [child(location, n) for n in names])


def active(dt: Any) -> dict[str, int]:
    """The parts of the table version ``dt`` by file name, with their sizes."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    bad = [p for p in paths if "/" in p or not p.endswith(".parquet")]
    if bad:  # partitioned or foreign: not a table ctfp wrote
        raise ShardMismatchError(
            f"the Delta table {dt.table_uri} holds {bad[0]!r}, which is not a ctfp part; ctfp "
            "reads the unpartitioned tables it writes"
        )
    return dict(zip(paths, sizes, strict=True))


def pin(location: Any) -> Any:
    """``location`` (a list: each item) pinned to the version read now where it is a table
    (``delta:PATH@vN``), else as given: what a result records."""
    if not isinstance(location, str | os.PathLike):
        return [pin(item) for item in location]
    spec = table_of(location)
    if spec is None or spec[1] is not None:
        return location
    dt = _open(resolve(spec[0]))
    if dt is None:
        raise InputError(f"no Delta table at {spec[0]!r}")
    return f"{PREFIX}{spec[0]}@v{dt.version()}"


class DeltaLog:
    """The commit record of a writer into a table: opens (or creates) the table, names its
    parts, commits parts added and removed as one transaction each."""

    def __init__(self, loc: Location, schema: pa.Schema, metadata: dict[str, Any]) -> None:
        deltalake = require()
        self.loc = loc
        dt = _open(loc)
        if dt is None:
            listed = loc.list_files(recursive=False)
            if listed:  # a shard folder, or anything else: never a table beside it
                raise InputError(
                    f"{loc.uri} is not empty (e.g. {sorted(listed)[0]}) and is not a Delta "
                    "table; write a new table into an empty folder (or a new one)"
                )
            with _failing(loc):
                deltalake.DeltaTable.create(
                    _uri(loc),
                    deltalake.Schema.from_arrow(schema),
                    mode="ignore",  # two writers creating it at once: one table
                    configuration={PROPERTY: json.dumps(metadata, sort_keys=True)},
                    storage_options=storage_options(loc),
                    raise_if_key_not_exists=False,
                )
            dt = _open(loc)
        self._dt = dt
        recorded = metadata_of(dt)
        if recorded is None:
            raise ShardMismatchError(
                f"the Delta table {loc.uri} was not written by ctfp (no {PROPERTY} property); "
                "write into a new table"
            )
        self.metadata = recorded
        self._schema = dt.schema()
        self.files = active(dt)  # the parts of the version this writer last read

    @property
    def version(self) -> int:
        return int(self._dt.version())

    def clean(self) -> None:
        """Delete the parts no version names older than :data:`ORPHAN_HOURS` (a killed
        writer's): what a full vacuum would delete and a plain one (which keeps older versions'
        parts) would not."""
        kwargs = dict(retention_hours=ORPHAN_HOURS, dry_run=True, enforce_retention_duration=False)
        with _failing(self.loc):
            full = set(self._dt.vacuum(full=True, **kwargs))
            kept = set(self._dt.vacuum(**kwargs))
        for name in sorted(p for p in full - kept if "/" not in p and PART_RE.match(p)):
            self.loc.join(name).delete()
            logger.info(f"deleted {child(self.loc.uri, name)}: a part no version of the table has")

    def commit(
        self,
        added: Iterable[tuple[str, int, int]],
        removed: Collection[str],
        ids: Collection[str],
        take_in: Callable[[list[str]], set[str]],
        info: dict[str, Any],
    ) -> None:
        """Commit the parts ``added`` (``(name, rows, bytes)``, written already) and take the
        parts ``removed`` out, in one transaction; ``ids``: the row and input ids of the rows
        added; ``take_in(names)`` reads parts other writers committed since and returns the ids
        they hold.

        Raises CommitRefused: another writer committed rows of the same inputs, or replaced
        parts, since this one read the table: nothing is committed (added parts are deleted).
        """
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, CommitProperties, RemoveAction

        added = list(added)
        now = int(time.time() * 1000)
        actions: list[Any] = [
            AddAction(name, size, {}, now, True, json.dumps({"numRecords": rows}))
            for name, rows, size in added
        ]
        actions += [RemoveAction(name, True, now, self.files.get(name)) for name in removed]
        props = CommitProperties(custom_metadata={"ctfp": info}, max_commit_retries=0)
        while True:
            try:
                with _failing(self.loc):
                    self._dt.create_write_transaction(
                        actions, "append", self._schema, commit_properties=props
                    )
                break
            except CommitFailedError:  # another writer committed first: what did it commit?
                theirs, gone = self._since()
                clash = sorted(take_in(theirs) & set(ids))
                lost = sorted(set(removed) & gone) or sorted(gone)
                if clash or lost:
                    for name, _, _ in added:
                        self.loc.join(name).delete()
                    what = (
                        f"rows of the same inputs (e.g. {clash[0]!r})"
                        if clash
                        else f"a version without {lost[0]} (it replaced rows)"
                    )
                    raise CommitRefused(
                        f"another writer committed {what} to the Delta table {self.loc.uri} "
                        "while this one was writing; this one stops without committing them. "
                        "Rerun to finish: the rerun resumes from what both committed"
                    ) from None
        self.files.update((name, size) for name, _, size in added)
        for name in removed:
            self.files.pop(name, None)
        theirs, _ = self._since()  # committed by others just after this commit: taken in too
        take_in(theirs)

    def _since(self) -> tuple[list[str], set[str]]:
        """Move to the latest version: the parts others added since, and those gone."""
        with _failing(self.loc):
            self._dt.update_incremental()
        now = active(self._dt)
        theirs = sorted(set(now) - set(self.files))
        gone = set(self.files) - set(now)
        self.files = now
        return theirs, gone


class Unlocked(Held):
    """What a table writer holds instead of a lock: nothing (see :class:`DeltaLog`)."""

    def release(self) -> None:
        """Nothing to release."""


__all__ = [
    "ORPHAN_HOURS",
    "PREFIX",
    "CommitRefused",
    "DeltaLog",
    "Snapshot",
    "metadata_of",
    "pin",
    "snapshot",
    "split",
    "table_metadata",
    "table_of",
    "table_schema",
]
