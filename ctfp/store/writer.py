"""Atomic, resumable shard writer: a run killed at any moment and rerun ends with the same rows."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctfp.exceptions import CtfpError, InputError, ShardMismatchError
from ctfp.io.fs import (
    PathLike,
    as_local,
    child,
    is_remote,
    remove_stale_temp_files,
    resolve,
)
from ctfp.io.sources import InputFile, safe_text
from ctfp.progress import logger
from ctfp.store.delta import (
    CommitRefused,
    DeltaLog,
    Unlocked,
    table_metadata,
    table_of,
    table_schema,
)
from ctfp.store.manifest import (
    MANIFEST_FILE,
    Part,
    file_sizes,
    list_parts,
    manifest_bytes,
    missing_parts,
    read_record,
)
from ctfp.store.parts import (
    BufferedFile,
    rows_table,
    write_atomic,
    write_part,
    write_text_atomic,
)
from ctfp.store.reader import of_inputs, read_schema, read_table
from ctfp.store.schema import (
    ERRORS_DIR,
    ERRORS_FILE,
    ERRORS_SCHEMA,
    FINGERPRINT,
    input_of,
    read_metadata,
    shard_schema,
)

# A part's number; a table's parts also name their writer.
_SHARD_RE = re.compile(r"^part-(\d+)(?:-[a-z0-9]+)?\.parquet$")
# Metadata fields that must match for a run to add shards to an existing output folder.
RESUME_FIELDS = ("format", "model", "weights_sha256", "dim", "preprocessing", "dtype", "decode")


def frame_id(base: str, frame: int, n_frames: int) -> str:
    """Row id of ``frame`` of a file with id ``base``: the base itself for single-slice files."""
    return base if n_frames == 1 else f"{base}#{frame}"


def _after(names: list[str]) -> int:
    """The part number after those of ``names``."""
    return max((int(m.group(1)) + 1 for m in map(_SHARD_RE.match, names) if m), default=0)


def same_file(stored: str, path: str) -> bool:
    """Whether the source ``stored`` in a row and the input ``path`` are one file: the same
    text, or, locally, one file reached by two paths (a link)."""
    if stored == safe_text(path):
        return True
    if is_remote(stored) or is_remote(path):
        return False
    try:
        return os.path.samefile(stored, path)
    except (OSError, ValueError):  # one of them is gone (moved files: another source)
        return False


class ShardWriter:
    """Buffers rows per input file and commits ``part-NNNNN.parquet`` shards atomically.

    A shard only holds whole input files, so a file is done once one of its rows is in a
    finished shard. Failed files are never done (a rerun retries them); ``_errors/errors.parquet``
    holds the latest reason of every input still failing. Commits go to a shard folder's record
    (:mod:`ctfp.store.manifest`, one writer at a time: a lock) or, for ``delta:PATH`` or an
    existing table, a Delta log (:mod:`ctfp.store.delta`, no lock). :meth:`resume` takes out the
    rows of inputs changed since (:meth:`changed`, :meth:`supersede`) before they are embedded
    again, so readers never see two rows of one id, nor an old one.

    ``out_dir`` is created if missing; its shards must agree with ``metadata``
    (:func:`ctfp.store.schema.make_metadata`). A shard is committed at a file boundary once it
    holds ``rows_per_shard`` rows, or ``commit_seconds`` after the last commit (None: never).
    """

    def __init__(
        self,
        out_dir: PathLike,
        *,
        metadata: dict[str, Any],
        rows_per_shard: int = 10_000,
        commit_seconds: float | None = 30.0,
    ) -> None:
        if rows_per_shard < 1:
            raise CtfpError(f"rows per shard must be at least 1, got {rows_per_shard}")
        if commit_seconds is not None and not commit_seconds > 0:
            raise CtfpError(f"commit_seconds must be positive, got {commit_seconds}")
        self.commit_seconds = commit_seconds
        self._last_commit = time.monotonic()
        out_dir = as_local(out_dir)
        table = table_of(out_dir)
        # A table stores float16 embeddings as float32 (the same values).
        self._half = table is not None and metadata.get("dtype") == "float16"
        if table is not None:
            if table[1] is not None:
                raise CtfpError(f"{os.fspath(out_dir)!r}: writers add to a table's latest version")
            out_dir, metadata = as_local(table[0]), table_metadata(metadata)
        self._loc = resolve(out_dir)
        self._errors = self._loc.join(ERRORS_DIR, ERRORS_FILE)
        self.remote = not self._loc.local
        #: The folder: a Path locally, a URI string on an object store.
        self.out_dir: Path | str = os.fspath(out_dir) if self.remote else Path(out_dir)
        self.metadata = metadata
        self.dim = int(metadata["dim"])
        self.dtype = str(metadata["dtype"])
        self.rows_per_shard = rows_per_shard
        schema = shard_schema(self.dim, self.dtype, metadata, fingerprints=True)
        self.schema = table_schema(schema) if table else schema
        self._suffix = f"-{uuid.uuid4().hex[:8]}" if table else ""
        self._table: DeltaLog | None = None
        self._lock = Unlocked() if table else self._loc.lock()  # released by release()
        try:
            if table:
                self._table = DeltaLog(self._loc, self.schema, metadata)
            if not self.remote:  # a killed run's temp files; never a finished shard
                for folder in (self.out_dir, self.out_dir / ERRORS_DIR):
                    remove_stale_temp_files(folder)
            self.done_sources: dict[str, str] = {}  # input-file id -> source
            # Input-file id (and row id) -> (label, fingerprint, part) of finished shards.
            self._stored: dict[str, tuple[str | None, str | None, str]] = {}
            self._retired: list[str] = []  # files the record says are not parts (see manifest)
            self._unrecorded: set[str] = set()  # ids of rows in parts without fingerprints
            self._row_ids: set[str] = set()  # row ids of finished shards
            self._frame_ids: dict[str, list[str]] | None = None  # see clashes()
            self._parts: list[Part] = []  # what the folder's commit record names
            self.done_ids: set[str] = set()
            self._next_seq = self._scan_existing()
            self._old_errors = read_table(self._errors).to_pylist() if self._errors.exists() else []
        except BaseException:
            self.release()  # a folder that cannot be resumed is not left locked
            raise
        self._new_errors: list[dict[str, str]] = []
        self._forgotten: set[str] = set()  # ids of old errors resume() dropped
        self._buffer: list[BufferedFile] = []
        self._buffered_rows = 0
        self.shards_written: list[Path | str] = []
        self._processed: set[str] = set()

    def _scan_existing(self) -> int:
        """Resume state from the commit record: the parts it names (checked to be there with
        their sizes) and orphans (parts a killed run did not record), adopted; returns the next
        part number. A table's parts are those of its latest version (old orphans deleted)."""
        if self._table is not None:
            self._table.clean()
            names = sorted(self._table.files)
            for name in names:
                self._take_in(name)
            return _after(names)
        record = read_record(self.out_dir)
        recorded, retired = record if record is not None else ([], [])
        listed = list_parts(self._loc)
        changed = record is None and bool(listed)  # a folder from before commit records
        for name in retired:  # replaced parts and unfinished copies (see supersede)
            if name in listed:
                self._loc.join(name).delete()
                del listed[name]
            changed = True
        rerun = "rerun to embed its inputs again"
        for part in missing_parts(self.out_dir, recorded, listed, rerun):
            logger.warning(
                f"warning: {child(self.out_dir, part.name)}, named by the folder's commit "
                f"record, is missing; its {part.rows} rows' inputs are embedded again"
            )
            changed = True
        parts = [part for part in recorded if part.name in listed]
        orphans = sorted(set(listed) - {p.name for p in recorded})
        seq = _after([p.name for p in parts] + orphans + retired)
        for part in parts:
            self._take_in(part.name)
        for name in orphans:
            rows = len(self._take_in(name, orphan=True))
            parts.append(Part(name, rows, listed[name]))
            changed = True
            logger.info(
                f"adopted {child(self.out_dir, name)}: a finished part the last run did not record"
            )
        self._parts = parts
        if changed:
            self._write_manifest()
        return seq

    def _take_in(self, name: str, orphan: bool = False) -> list[str]:
        """Add the rows of the committed part ``name`` to the resume state (checked to be
        ctfp's, of these settings; an ``orphan`` to hold no committed row); its row ids."""
        path = child(self.out_dir, name)
        schema = read_schema(path)
        meta = read_metadata(schema)
        if meta is None:
            raise ShardMismatchError(
                f"{path} was not written by ctfp; use an empty folder for --out"
            )
        diffs = [k for k in RESUME_FIELDS if meta.get(k) != self.metadata.get(k)]
        if diffs:
            detail = ", ".join(
                f"{k}: {meta.get(k)!r} there vs {self.metadata.get(k)!r} now" for k in diffs
            )
            raise ShardMismatchError(
                f"{path} was written with other settings ({detail}); rerun with the same "
                "settings to resume, or write into a new --out folder"
            )
        stamped = FINGERPRINT in schema.names
        columns = ["id", "frame", "source", "label", *([FINGERPRINT] if stamped else [])]
        table = read_table(path, columns=columns)
        ids = table.column("id").to_pylist()
        clash = sorted(set(ids) & self._row_ids) if orphan else []
        if clash:
            raise ShardMismatchError(
                f"{path} is not named by the folder's commit record and holds rows that "
                f"committed shards hold too (e.g. {clash[0]!r}): not a part of this run; remove it"
            )
        frames, sources, labels = (
            table.column(c).to_pylist() for c in ("frame", "source", "label")
        )
        stamps = table.column(FINGERPRINT).to_pylist() if stamped else [None] * len(ids)
        if not stamped:
            self._unrecorded.update(ids)
        self.done_ids.update(ids)
        self._row_ids.update(ids)
        for i, f, src, label, stamp in zip(ids, frames, sources, labels, stamps, strict=True):
            base = input_of(i, f)  # a volume's row "<base>#<frame>": its file is done as base
            self.done_ids.add(base)
            for key in (base, i):
                self.done_sources.setdefault(key, src)
                self._stored.setdefault(key, (label, stamp, name))
            if not stamped:
                self._unrecorded.add(base)
        self._frame_ids = None
        return ids

    def _commit(
        self, added: list[Part], removed: list[str], ids: Sequence[str], info: dict[str, Any]
    ) -> None:
        """One table transaction (:meth:`DeltaLog.commit`); a row of ``ids`` among the parts
        other writers committed meanwhile stops this writer."""
        assert self._table is not None
        parts = [p.name for p in added]
        info = {**info, "parts": parts, "rows": sum(p.rows for p in added), "removed": removed}
        added_rows = [(p.name, p.rows, p.bytes) for p in added]
        try:
            take_in = lambda names: {i for name in names for i in self._take_in(name)}  # noqa: E731
            self._table.commit(added_rows, removed, ids, take_in, info)
        except CommitRefused:  # these rows are another writer's now: never committed later
            self._buffer.clear()
            self._buffered_rows = 0
            raise

    def _write_manifest(self) -> None:
        self._lock.check()  # a second writer took the folder over: commit nothing more
        self._loc.join(MANIFEST_FILE).put(manifest_bytes(self._parts, self._retired))

    def pending(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` (input-file ids) that are not yet in a finished shard."""
        return set(ids) - self.done_ids

    def changed(self, files: Iterable[InputFile]) -> set[str]:
        """The ids of ``files`` done in this folder whose rows are not of the file as it is now:
        another label or fingerprint, or none recorded (rows from before fingerprints). None
        there and now (a file that could not be looked at) compares equal."""
        found = set()
        for f in files:
            stored = self._stored.get(f.id)
            if stored is None or f.id not in self.done_ids:
                continue
            label, stamp, _ = stored
            if f.id in self._unrecorded or label != f.label or stamp != f.fingerprint:
                found.add(f.id)
        return found

    def supersede(self, ids: Iterable[str]) -> None:
        """Take the rows of the input files ``ids`` out of this folder, so that they are
        embedded again (:meth:`pending`) and readers never see the old rows beside new ones.

        Each part holding some is replaced by a copy without them, in three steps that a rerun
        after a kill completes: the record names the copies as retired, the copies are written,
        then one record names the copies as parts and the replaced parts as retired (deleted
        next). In a table, one transaction adds the copies and removes the replaced parts.
        """
        ids = set(ids) & self.done_ids
        affected = sorted({self._stored[i][2] for i in ids if i in self._stored})
        if not affected:
            return
        copies = dict(zip(affected, self.reserve_names(len(affected)), strict=True))
        if self._table is None:
            self._retired = sorted({*self._retired, *copies.values()})
            self._write_manifest()
        written: list[Part] = []
        for old, new in copies.items():
            table = read_table(child(self.out_dir, old))
            drop = of_inputs(table, ids)
            gone = drop.to_pylist()
            columns = (table.column(c).to_pylist() for c in ("id", "frame"))
            for i, f, out in zip(*columns, gone, strict=True):
                for key in (i, input_of(i, f)) if out else ():
                    self._row_ids.discard(key)
                    self.done_ids.discard(key)
                    self.done_sources.pop(key, None)
                    self._stored.pop(key, None)
                    self._unrecorded.discard(key)
            if all(gone):
                continue
            rows = table.filter(pc.invert(drop))
            if FINGERPRINT not in rows.column_names:  # a part from before fingerprints
                rows = rows.append_column(
                    pa.field(FINGERPRINT, pa.string()), pa.nulls(rows.num_rows, pa.string())
                )
            self._lock.check()
            size = write_part(child(self.out_dir, new), rows)
            written.append(Part(new, rows.num_rows, size))
            self.shards_written.append(child(self.out_dir, new))
        if self._table is not None:
            self._commit(written, affected, [], {"operation": "supersede", "inputs": len(ids)})
        else:
            self._parts = [p for p in self._parts if p.name not in copies] + written
            self._retired = affected
            self._write_manifest()  # the commit
            for old in affected:
                self._loc.join(old).delete()
            self._retired = []  # dropped from the record with its next write
        self._frame_ids = None
        logger.info(
            f"{len(ids)} input(s) changed since their rows were written to "
            f"{str(self.out_dir)!r} (e.g. {sorted(ids)[0]!r}): their rows are taken out and "
            "they are embedded again"
        )

    def resume(self, files: Sequence[InputFile]) -> set[str]:
        """Prepare this folder for a run over ``files`` and return the ids of those it still
        needs: not done, or changed since (whose old rows are taken out first). Errors of inputs
        no longer among ``files`` are forgotten; an id done here from another file (not a link
        to it) is refused: resuming by id would skip it and keep the other file's rows."""
        current = {f.id for f in files}
        self._forgotten = {e["id"] for e in self._old_errors} - current
        self._old_errors = [e for e in self._old_errors if e["id"] in current]
        for f in files:
            done = self.done_sources.get(f.id)
            if done is not None and not same_file(done, f.path):
                raise InputError(
                    f"{str(self.out_dir)!r} already holds id {f.id!r}, embedded from {done!r}; "
                    f"{safe_text(f.path)!r} has the same id and would be skipped. Embed other "
                    "sources into another --out (or, if the files were moved, into a new one)"
                )
        changed = self.changed(files)
        unknown = changed & self._unrecorded
        if unknown:
            logger.warning(
                f"warning: {len(unknown)} input(s) in {str(self.out_dir)!r} were embedded by a "
                "ctfp that did not record what each file was (size, modification time); they "
                "are embedded again to be sure their rows are of the files as they are now"
            )
        self.supersede(changed)
        return self.pending(current)

    def add(
        self,
        file_id: str,
        ids: Sequence[str],
        source: str,
        frames: Sequence[int],
        label: str | None,
        embeddings: np.ndarray,
        fingerprint: str | None = None,
    ) -> int:
        """Add all rows of input file ``file_id``; ``embeddings`` is (n, dim), ``fingerprint``
        what the file was when found (None: unknown). Returns the rows added: 0 when a row id
        is already in the folder (recorded as an error). ``embeddings`` already in the storage
        type is kept, not copied: change it only after the next commit."""
        if embeddings.shape != (len(ids), self.dim):
            raise ValueError(f"embeddings of shape {embeddings.shape} for {len(ids)} ids")
        clash = sorted(set(ids) & self._row_ids)
        if clash:  # e.g. frame 3 of scan.dcm after a file scan#3.png was embedded here
            self.add_error(
                file_id,
                source,
                f"its row id {clash[0]!r} is already in {str(self.out_dir)!r} from "
                f"{self.done_sources.get(clash[0], 'another input')!r}; embed it into another "
                "--out",
            )
            return 0
        self._processed.add(file_id)
        if self._half:
            embeddings = embeddings.astype(np.float16, copy=False)
        self._buffer.append(
            (list(ids), safe_text(source), list(frames), label, embeddings, fingerprint)
        )
        self._buffered_rows += len(ids)
        overdue = (
            self.commit_seconds is not None
            and time.monotonic() - self._last_commit >= self.commit_seconds
        )
        if self._buffered_rows >= self.rows_per_shard or overdue:
            self.flush()
        return len(ids)

    def add_error(self, id: str, source: str, reason: str) -> None:
        """Record that input ``id`` could not be read; written with the next commit."""
        self._processed.add(id)
        self._new_errors.append(
            {"id": safe_text(id), "source": safe_text(source), "reason": safe_text(reason)}
        )

    def flush(self) -> None:
        """Commit buffered rows as one shard (all or nothing), then the errors table."""
        if self._buffer:
            table = rows_table(self.schema, self._buffer)
            [name] = self.reserve_names(1)
            self._lock.check()
            size = write_part(child(self.out_dir, name), table)
            self._record(name, table.num_rows, size, [ids for ids, *_ in self._buffer])
            self._buffer.clear()
            self._buffered_rows = 0
        self._last_commit = time.monotonic()
        self._write_errors()

    def _record(self, name: str, rows: int, size: int, files: Sequence[Sequence[str]]) -> None:
        """The commit of the part ``name`` (``files``: its inputs' row ids)."""
        if self._table is not None:
            ids = [i for f in files for i in f]
            self._commit([Part(name, rows, size)], [], ids, {"inputs": len(files)})
        else:
            self._parts.append(Part(name, rows, size))
            self._write_manifest()
        self.shards_written.append(child(self.out_dir, name))
        for ids in files:
            self.done_ids.update(ids)

    def reserve_names(self, n: int) -> list[str]:
        """Names for ``n`` parts that other processes (the Ray engine's workers) write into the
        folder, numbered consecutively after this folder's parts."""
        names = [f"part-{self._next_seq + k:05d}{self._suffix}.parquet" for k in range(n)]
        self._next_seq += n
        return names

    def clashes(self, file_id: str) -> list[str]:
        """Row ids already in the folder that a volume with id ``file_id`` could produce
        (``<file_id>#<frame>``): what a worker checks before writing that file's frames."""
        # Built once per plan: parts committed since hold this run's inputs (kept apart).
        if self._frame_ids is None:
            self._frame_ids = {}
            for i in self._row_ids:
                base, sep, frame = i.rpartition("#")
                if sep and frame.isdigit():
                    self._frame_ids.setdefault(base, []).append(i)
        return sorted(self._frame_ids.get(file_id, []))

    def commit_part(
        self, name: str, rows: int, size: int, files: Sequence[tuple[str, Sequence[str], str]]
    ) -> None:
        """Record a part that another process wrote as ``name`` (see :meth:`reserve_names`);
        ``files`` are its inputs as ``(file id, row ids, source)``. The part is checked to be
        there with ``size`` bytes first: the record never names what is not there."""
        found = file_sizes(self._loc, [name])[name]
        if found != size:
            raise CtfpError(
                f"{child(self.out_dir, name)} should hold {size} bytes as its worker wrote it, "
                f"but {'is missing' if found is None else f'has {found}'}: is --out a folder "
                "every node sees (a shared filesystem or an object store)? Nothing was recorded "
                "for it; rerun to embed its inputs again"
            )
        for file_id, ids, source in files:
            self._processed.add(file_id)
            self.done_ids.add(file_id)
            self._row_ids.update(ids)
            for key in (file_id, *ids):
                self.done_sources.setdefault(key, safe_text(source))
        self._record(name, rows, size, [ids for _, ids, _ in files])
        self._write_errors()

    def _write_errors(self) -> None:
        # An old error stands until its file is tried again in this run (or is found done).
        old = self._old_errors
        if self._table is not None and self._errors.exists():  # what other writers recorded too
            old = [
                e for e in read_table(self._errors).to_pylist() if e["id"] not in self._forgotten
            ]
        keep = [e for e in old if e["id"] not in self._processed and e["id"] not in self.done_ids]
        errors = keep + self._new_errors
        if errors:
            write_atomic(pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA), self._errors)
        else:
            self._errors.delete()

    @property
    def errors(self) -> list[dict[str, str]]:
        """Errors recorded in this run."""
        return list(self._new_errors)

    def close(self) -> None:
        """Commit what is buffered and release the folder."""
        with self._lock:
            self.flush()

    def release(self) -> None:
        """Release the folder lock without committing (after an exception)."""
        self._lock.release()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Interrupted (Ctrl-C, an error elsewhere): buffered rows are whole files, keep them.
        with self._lock, contextlib.suppress(Exception):
            self.flush()


__all__ = [  # the part helpers, as before they moved to ctfp.store.parts
    "RESUME_FIELDS",
    "BufferedFile",
    "ShardWriter",
    "frame_id",
    "rows_table",
    "same_file",
    "write_atomic",
    "write_part",
    "write_text_atomic",
]
