"""The commit record of a shard folder: which parts are finished, so readers never list-and-trust.

A shard folder holds ``part-*.parquet`` files and one ``_manifest.json`` naming the finished
ones with their row count and size::

    {"format": "ctfp-manifest/1", "parts": [{"name": "part-00000.parquet", "rows": 4096,
     "bytes": 8520311}, ...], "retired": ["part-00003.parquet"]}

Writers put a part, then rewrite the record (both atomically): a part the record does not name
is not there for readers (the next writer adopts it); a named part missing or of another size
is an error. Folders from before records are read by listing, locally only. ``retired``
(optional) names files that are not parts, whatever they hold (a part replaced by a copy
without some rows, and copies being written): readers leave them out, the next writer deletes
them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.fs import Location, PathLike, child, resolve
from ctfp.progress import logger
from ctfp.store.schema import PART_RE

MANIFEST_FILE = "_manifest.json"
MANIFEST_FORMAT = "ctfp-manifest/1"
# What a record may name: a plain file name in the folder (a scores folder takes its input
# shards' names, which need not be ctfp's).
NAME_RE = re.compile(r"^[^/\\.][^/\\]*\.parquet$")


@dataclass(frozen=True)
class Part:
    """One finished part: its file name in the folder, rows and size in bytes."""

    name: str
    rows: int
    bytes: int


def file_sizes(folder: PathLike | Location, names: list[str]) -> dict[str, int | None]:
    """The size of each of ``names`` in ``folder`` (None: missing), in one request on a store."""
    loc = resolve(folder)
    infos = loc.filesystem.get_file_info([loc.join(n).path for n in names]) if names else []
    return {n: i.size if i.is_file else None for n, i in zip(names, infos, strict=True)}


def list_parts(folder: PathLike | Location) -> dict[str, int]:
    """Every ``part-*.parquet`` file in ``folder`` by name, with its size."""
    files = resolve(folder).list_files(recursive=False)
    return {name: size for name, size in files.items() if PART_RE.match(name)}


def read_manifest(folder: PathLike) -> list[Part] | None:
    """The finished parts ``folder``'s record names, in name order; None without a record.

    Raises ShardMismatchError: the record is not ctfp's or cannot be read.
    """
    record = read_record(folder)
    return None if record is None else record[0]


def read_record(folder: PathLike) -> tuple[list[Part], list[str]] | None:
    """``folder``'s record: the finished parts (in name order) and the retired file names;
    None without a record (errors: :func:`read_manifest`)."""
    path = child(folder, MANIFEST_FILE)
    raw = resolve(path).read_bytes()
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        parts = [Part(str(e["name"]), int(e["rows"]), int(e["bytes"])) for e in doc["parts"]]
        retired = [str(name) for name in doc.get("retired", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShardMismatchError(
            f"{path} is not a ctfp commit record ({exc}); it names a folder's finished shards: "
            "restore it or write into a new --out"
        ) from None
    bad = [name for name in [p.name for p in parts] + retired if not NAME_RE.match(name)]
    if bad:
        raise ShardMismatchError(f"{path} names {bad[0]!r}, which is not a shard file name")
    return sorted(parts, key=lambda p: p.name), sorted(retired)


def manifest_bytes(parts: list[Part], retired: Iterable[str] = ()) -> bytes:
    """The record naming ``parts`` (sorted by name) and the ``retired`` files, as written."""
    doc: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "parts": [asdict(p) for p in sorted(parts, key=lambda p: p.name)],
    }
    if retired:
        doc["retired"] = sorted(retired)
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def missing_parts(
    folder: PathLike, parts: list[Part], sizes: dict[str, int | None], rerun: str
) -> Iterator[Part]:
    """Those of ``parts`` that ``sizes`` (name -> bytes) lacks, in turn; one of another size
    than recorded is a ShardMismatchError (the remedy: delete it and ``rerun``)."""
    for part in parts:
        size = sizes.get(part.name)
        if size is None:
            yield part
        elif size != part.bytes:
            raise ShardMismatchError(
                f"{child(folder, part.name)} has {size} bytes where the folder's commit record "
                f"says {part.bytes}: it was replaced since it was written; restore it, or "
                f"delete it and {rerun}"
            )


def has_shards(folder: PathLike) -> bool:
    """Whether ``folder`` has a commit record, a Delta log or (locally) part files."""
    from ctfp.store.delta import table_of

    loc = resolve(folder)
    if loc.join(MANIFEST_FILE).exists() or table_of(folder) is not None:
        return True
    return loc.local and bool(list_parts(loc))


def committed_shards(folder: PathLike, required: bool = True) -> list[str | Path] | None:
    """The finished shard files of ``folder`` in name order: those its record names, each
    checked to be there with its recorded size; not ``required``: None where ``folder`` is no
    shard folder.

    Raises InputError: a named part is missing, no part is finished, or an object-store folder
    has no record; ShardMismatchError: a named part has another size than recorded (replaced
    since it was committed).
    """
    from ctfp.store.delta import snapshot, table_of

    table = table_of(folder)
    if table is not None:
        return snapshot(*table).files
    loc = resolve(folder)
    record = read_record(folder)
    if record is None:
        listed = sorted(list_parts(loc)) if loc.local else []  # a folder from before records
        if listed or not required:
            return [child(folder, name) for name in listed] or None
        if not loc.local:
            raise InputError(
                f"no ctfp shards in {os.fspath(folder)!r}: it has no commit record "
                f"({MANIFEST_FILE}); ctfp reads only the parts a record names"
            )
        raise InputError(f"no ctfp shards (part-*.parquet) in {os.fspath(folder)!r}")
    parts, retired = record
    if not parts:
        raise InputError(f"no finished ctfp shards in {os.fspath(folder)!r} (its record is empty)")
    sizes = file_sizes(loc, [p.name for p in parts])
    for part in missing_parts(folder, parts, sizes, "rerun the embed command"):
        raise InputError(
            f"{child(folder, part.name)} is missing: the folder's commit record names it "
            f"({part.rows} rows); it was deleted outside ctfp. Rerun the embed command "
            "into this folder to embed its inputs again"
        )
    if loc.local:
        stray = sorted(set(list_parts(loc)) - {p.name for p in parts} - set(retired))
        if stray:
            logger.warning(
                f"warning: {os.fspath(folder)!r} holds {len(stray)} shard file(s) its commit "
                f"record does not name (e.g. {stray[0]}), left out: a killed run's part (the "
                "next embed run into the folder checks and adopts it) or a file copied in"
            )
    return [child(folder, p.name) for p in parts]


__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "Part",
    "committed_shards",
    "has_shards",
    "list_parts",
    "manifest_bytes",
    "missing_parts",
    "read_manifest",
    "read_record",
]
