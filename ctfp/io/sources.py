"""Source discovery: folders, globs, manifests and the ImageCLEF layout, with stable ids."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctfp.exceptions import InputError
from ctfp.io.fs import as_local, is_remote, resolve, scheme_of

# Lower-case suffixes ctfp decodes; ".nii.gz" is checked as a double suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES
# Longest first, so that ".nii.gz" wins over a shorter suffix it ends with.
_SUFFIXES_LONGEST_FIRST = tuple(sorted(SUFFIXES, key=len, reverse=True))
MANIFEST_SUFFIXES = (".csv", ".parquet")
LAYOUTS = ("auto", "plain", "imageclef")


@dataclass(frozen=True)
class InputFile:
    """One file to decode. ``id`` is the row id of a single-slice file; volumes add ``#frame``."""

    id: str
    path: str
    label: str | None = None
    # Set for rows of a decoded-slice cache: the slice's frame, and (shard, row group, row).
    frame: int | None = None
    cache: tuple[str, int, int] | None = None
    #: What the file was when it was found (:func:`file_stamp`; None: not known).
    stamp: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """What its rows were derived from, stored with them (a rerun embeds a changed file
        again): the file's stamp; for a cache row, its place in the cache (never changed)."""
        if self.cache is not None:
            shard, group, row = self.cache
            return f"cache {os.path.basename(shard)} {group} {row}"
        return self.stamp


@dataclass(frozen=True)
class Unreadable:
    """Something under a source that could not be searched (a folder without permission, a
    symlink loop): recorded in the errors table, never silently skipped."""

    id: str
    path: str
    reason: str


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8 (for Parquet, CSV, JSON): a file name's undecodable bytes (lone
    surrogates, ``bad\udcffname``) become ``\\xff`` escapes (``bad\\xffname``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def file_stamp(size: int, mtime_ns: int) -> str:
    """An input file's stamp: its size in bytes and modification time in ns."""
    return f"{size} bytes, mtime {mtime_ns} ns"


def with_stamps(files: list[InputFile]) -> list[InputFile]:
    """``files`` with their stamps (:func:`file_stamp`), taken before anything is decoded; None
    for a file that cannot be looked at. Objects are looked up in one request per store."""
    stamps: dict[str, str | None] = {}
    by_store: dict[str | None, list[InputFile]] = {}
    for f in files:
        if is_remote(f.path):
            by_store.setdefault(scheme_of(f.path), []).append(f)
            continue
        try:
            st = os.stat(f.path)
        except OSError:
            continue
        stamps[f.path] = file_stamp(st.st_size, st.st_mtime_ns)
    for group in by_store.values():
        first = resolve(group[0].path)
        with first.failing():
            infos = first.filesystem.get_file_info([resolve(f.path).path for f in group])
        for f, info in zip(group, infos, strict=True):
            if info.is_file:
                mtime = info.mtime_ns if info.mtime_ns is not None else -1
                stamps[f.path] = file_stamp(info.size, mtime)
    return [dataclasses.replace(f, stamp=stamps.get(f.path)) for f in files]


def suffix_of(path: str | Path) -> str:
    """The decodable suffix of ``path`` in lower case (``.nii.gz`` counts as one), or ``""``."""
    name = str(path).lower()
    if not name.endswith(SUFFIXES):
        return ""
    return next(s for s in _SUFFIXES_LONGEST_FIRST if name.endswith(s))


def strip_suffix(path: str) -> str:
    """``path`` without its decodable suffix (or without its last suffix if it has none of ours)."""
    suffix = suffix_of(path)
    return path[: -len(suffix)] if suffix else os.path.splitext(path)[0]


def discover(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    label_from_dirs: bool = False,
    layout: str = "auto",
    unreadable: list[Unreadable] | None = None,
) -> list[InputFile]:
    """List the input files behind ``sources``, sorted by id.

    Each source is a folder (searched recursively), a glob pattern, a manifest (``.csv`` or
    ``.parquet`` with a ``path`` column and optional ``id`` and ``label`` columns; relative paths
    are relative to the manifest) or a single file. Ids are the path relative to the source root
    without its suffix, in POSIX form. A folder in the ImageCLEF layout (``train/<label>/``,
    ``generated/``, ``test/``) gets labels from it when ``layout`` is ``auto`` or ``imageclef``;
    ``label_from_dirs`` takes the parent folder name as the label for any source. Folder
    symlinks are followed (each real folder once); folders that cannot be read, and links to a
    folder already searched, are appended to ``unreadable``.

    Raises InputError: a source does not exist, holds no decodable file, or two files would
    share one id.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no sources given")
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    problems = unreadable if unreadable is not None else []
    files = [
        f
        for source in sources
        for f in _discover_one(str(source), label_from_dirs, layout, problems)
    ]
    _check_unique(files)
    return sorted(with_stamps(files), key=lambda f: f.id)


def _discover_one(
    source: str, label_from_dirs: bool, layout: str, problems: list[Unreadable]
) -> list[InputFile]:
    source = os.fspath(as_local(source))
    if is_remote(source):
        return _discover_remote(source, label_from_dirs=label_from_dirs, layout=layout)
    if glob.has_magic(source):
        parts = Path(source).parts
        fixed = parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]
        root = str(Path(*fixed)) if fixed else "."
        paths = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p)]
        if not paths:
            raise InputError(f"glob {source!r} matched no files")
        return _inputs(_local(root, sorted(paths)), Path(root).name, label_from_dirs)
    path = Path(source)
    if not path.exists():
        raise InputError(f"source {source!r} does not exist")
    if path.is_dir():
        paths = sorted(_walk(path, problems))
        if not paths:
            raise InputError(
                f"folder {source!r} holds no files ctfp can read (looked for {', '.join(SUFFIXES)})"
            )
        tops = {p.name for p in path.iterdir() if p.is_dir()}
        found = _local(str(path), paths)
        return _inputs(found, path.name, label_from_dirs, layout, tops, f"folder {str(path)!r}")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest(path)
    return _inputs(_local(str(path.parent), [str(path)]), path.parent.name, label_from_dirs)


def _walk(root: Path, problems: list[Unreadable]) -> Iterable[str]:
    """The decodable files under ``root``, following folder symlinks; each real folder is
    searched once (a link loop or a second link to a folder is recorded, not followed)."""
    seen = {os.path.realpath(root)}

    def record(folder: str, reason: str) -> None:
        rel = Path(os.path.relpath(folder, root)).as_posix()
        problems.append(Unreadable(safe_text(rel), safe_text(os.path.abspath(folder)), reason))

    def failed(exc: OSError) -> None:
        record(exc.filename or str(root), f"folder cannot be read: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            folder = os.path.join(dirpath, name)
            real = os.path.realpath(folder)
            if real in seen:
                record(folder, f"a link to {safe_text(real)}, which is searched already; skipped")
                continue
            seen.add(real)
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if not name.startswith(".") and suffix_of(name):
                yield os.path.join(dirpath, name)


def _local(root: str, paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(path relative to root, /-separated; absolute path)`` of each local file."""
    if os.sep != "/":
        return [(Path(os.path.relpath(p, root)).as_posix(), os.path.abspath(p)) for p in paths]
    # What relpath and abspath compute, the working folder and the root's prefix found once
    # (several times faster); a path not under the prefix ("..", "//x") goes the long way.
    cwd = os.getcwd()
    base = os.path.normpath(os.path.join(cwd, root))
    prefix = base if base.endswith("/") else base + "/"
    cut = len(prefix)
    found = []
    for p in paths:
        path = os.path.normpath(os.path.join(cwd, p))
        if path.startswith(prefix) and path[cut : cut + 1] not in ("", "/"):
            found.append((path[cut:], path))
        else:
            found.append((Path(os.path.relpath(p, root)).as_posix(), os.path.abspath(p)))
    return found


def _inputs(
    found: Iterable[tuple[str, str]],
    top: str,
    label_from_dirs: bool,
    layout: str = "",
    tops: Collection[str] = (),
    shown: str = "",
) -> list[InputFile]:
    """Inputs from ``(relative path, path)`` pairs: the id is the relative path without its
    suffix; the label comes from the ImageCLEF layout (``imageclef``, or ``auto`` where the
    folder ``shown`` has it: ``tops`` are its subfolders) or, with ``label_from_dirs``, is the
    parent folder's name (``top`` at the root)."""
    auto = layout == "auto" and "train" in tops and ("test" in tops or "generated" in tops)
    imageclef = layout == "imageclef" or auto
    files = []
    for rel, path in found:
        parts = rel.split("/")
        if imageclef:
            keep, label = _imageclef_label(parts)
        else:
            folder = parts[-2] if len(parts) > 1 else top
            keep, label = True, safe_text(folder) if label_from_dirs else None
        if keep:
            files.append(InputFile(safe_text(strip_suffix(rel)), path, label))
    if imageclef and not files:
        raise InputError(f"{shown} has the ImageCLEF layout but no images in it")
    return files


def _discover_remote(source: str, *, label_from_dirs: bool, layout: str) -> list[InputFile]:
    """The decodable objects under an object-store prefix (or one object); ids, labels and
    hidden names (``.x``, left out) as for a local folder."""
    import pyarrow.fs as pafs

    loc = resolve(source)
    with loc.failing():
        kind = loc.filesystem.get_file_info(loc.path).type
    root = source.rstrip("/")
    if kind == pafs.FileType.File:
        name = root.rsplit("/", 1)[-1]
        if Path(name).suffix.lower() in MANIFEST_SUFFIXES:
            return _manifest(root)
        if not suffix_of(name):
            raise InputError(f"{source!r} is not a file ctfp can read ({', '.join(SUFFIXES)})")
        return [InputFile(id=safe_text(strip_suffix(name)), path=root, label=None)]
    if kind != pafs.FileType.Directory:
        raise InputError(f"source {source!r} does not exist")
    rels = [
        rel
        for rel in loc.list_files()
        if suffix_of(rel) and not any(part.startswith(".") for part in rel.split("/"))
    ]
    if not rels:
        raise InputError(
            f"{source!r} holds no objects ctfp can read (looked for {', '.join(SUFFIXES)})"
        )
    tops = {r.split("/", 1)[0] for r in rels if "/" in r}
    found = [(rel, f"{root}/{rel}") for rel in rels]
    return _inputs(found, root.rsplit("/", 1)[-1], label_from_dirs, layout, tops, repr(source))


def _imageclef_label(parts: Sequence[str]) -> tuple[bool, str | None]:
    """Whether a file at ``parts`` is in the ImageCLEF layout, and its label: ``train/<label>/x``
    has ``<label>``, ``generated/x`` "generated", ``test/x`` none."""
    top = parts[0]
    if top == "train" and len(parts) >= 3:
        return True, safe_text(parts[1])
    if top == "generated":
        return True, "generated"
    if top == "test":
        return True, None
    return False, None  # README files, previews, anything outside the layout


def _manifest(path: Path | str) -> list[InputFile]:
    """The files a manifest lists: a ``path`` column (relative to the manifest's folder,
    absolute, or URIs), optional ``id`` and ``label``."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    remote = is_remote(path)
    shown = str(path)
    try:
        loc = resolve(path)
        with loc.filesystem.open_input_file(loc.path) as source:
            if shown.lower().endswith(".csv"):
                options = pacsv.ConvertOptions(strings_can_be_null=True)
                table = pacsv.read_csv(source, convert_options=options)
            else:
                table = pq.read_table(source)
    except Exception as exc:
        raise InputError(f"cannot read manifest {shown!r}: {exc}") from exc
    if "path" not in table.column_names:
        raise InputError(
            f"manifest {shown!r} has no 'path' column (columns: {', '.join(table.column_names)})"
        )
    root = shown.rsplit("/", 1)[0] if remote else str(Path(path).parent)
    rows = table.to_pylist()
    if not rows:
        raise InputError(f"manifest {shown!r} lists no files")
    files = []
    for line, row in enumerate(rows, start=2):
        raw = row["path"]
        if raw is None or str(raw).strip() == "":
            raise InputError(f"manifest {shown!r} line {line}: empty path")
        text = str(raw)
        if is_remote(text) or remote:
            # A URI as given, or a key relative to the manifest's prefix (elsewhere: its URI).
            full = text if is_remote(text) else f"{root}/{text.lstrip('/')}"
            inside = full.startswith(root + "/")
            default_id = safe_text(strip_suffix(full[len(root) + 1 :] if inside else full))
        else:
            p = Path(text)
            full = os.path.abspath(p if p.is_absolute() else Path(root) / p)
            default_id = safe_text(strip_suffix(Path(os.path.relpath(full, root)).as_posix()))
        row_id = row.get("id")
        label = row.get("label")
        given = row_id not in (None, "")
        file_id = str(row_id) if given else default_id
        problem = id_problem(file_id) if given or not is_remote(file_id) else None
        if problem is not None:
            where = f"manifest {shown!r} line {line}"
            if given:
                raise InputError(f"{where}: id {file_id!r} {problem}; give it a plain id")
            raise InputError(
                f"{where}: {text!r} lies outside the manifest's folder, so its id would be "
                f"{file_id!r}; give the row an id (an 'id' column), or put the manifest in a "
                "folder above its files"
            )
        files.append(
            InputFile(id=file_id, path=full, label=None if label in (None, "") else str(label))
        )
    return files


def id_problem(file_id: str) -> str | None:
    """Why ``file_id`` cannot be an input's id (None: it can): blank, absolute, or with empty,
    ``.`` or ``..`` parts."""
    if not file_id.strip():
        return "is blank"
    if file_id.startswith(("/", "\\")):
        return "is an absolute path"
    if {"", ".", ".."} & set(re.split(r"[/\\]", file_id)):
        return "has an empty, '.' or '..' part"
    return None


FRAME_ID = re.compile(r"^(.*)#(\d+)$")


def _check_unique(files: list[InputFile]) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for f in files:
        if f.id in seen:
            clashes.append(f"{f.id!r}: {seen[f.id]} and {safe_text(f.path)}")
        seen[f.id] = f.path
    # The rows of a multi-frame file are "<id>#<frame>": a file whose id is another's plus
    # "#<digits>" could give the same row id, and resuming could take one for the other.
    for f in files:
        match = FRAME_ID.match(f.id)
        if match and match.group(1) in seen:
            clashes.append(
                f"{f.id!r} ({safe_text(f.path)}) looks like frame {match.group(2)} of "
                f"{match.group(1)!r} ({safe_text(seen[match.group(1)])})"
            )
    if clashes:
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise InputError(
            "two inputs would get the same id; give them distinct names or explicit ids in a "
            "manifest: " + "; ".join(clashes[:5]) + more
        )
