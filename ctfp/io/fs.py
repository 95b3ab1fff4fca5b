"""Where a path lives: a local folder or an object store, as a ``pyarrow.fs`` filesystem.

Embedding sources, shard folders (the writer, the readers, the commit record) and score
folders take object-store URIs through :func:`resolve` and :func:`filesystem_of`; the rest of
ctfp's paths follow (issue 18). Local paths and ``file://`` URIs are the local filesystem; ``s3://``,
``gs://`` (``gcs://``), ``abfs://`` (``abfss://``, ``az://``) and ``hdfs://`` are pyarrow's
native filesystems; any other scheme goes through fsspec when it is
installed and knows it. Credentials and endpoints come from each store's standard environment
and configuration chain (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``~/.aws/config``), so any S3-compatible store works
with no ctfp-specific setting; ctfp never prints them (a :class:`Location` shows its URI only).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctfp.exceptions import InputError

#: A local path or a URI, as every path-taking function of ctfp accepts it.
PathLike = str | os.PathLike[str]

#: Schemes pyarrow opens natively (``pyarrow.fs.FileSystem.from_uri``).
NATIVE = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class Location:
    """A resolved path: the filesystem it lives on and the path within it.

    ``uri`` is what the user gave (a local path made absolute); ``path`` is the filesystem's
    own path (``bucket/key`` on an object store); ``local`` is true for the local filesystem,
    where renames are atomic (object stores have no rename: they need commit records).
    """

    uri: str
    path: str
    filesystem: Any = field(repr=False, compare=False)
    local: bool

    def join(self, *parts: str) -> Location:
        """The location ``parts`` below this one."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return Location(
            uri=self.uri.rstrip("/") + "/" + tail,
            path=self.path.rstrip("/") + "/" + tail,
            filesystem=self.filesystem,
            local=self.local,
        )

    def __str__(self) -> str:
        return self.uri


def scheme_of(location: str | os.PathLike[str]) -> str | None:
    """The URI scheme of ``location`` (lower case), or None for a plain path."""
    m = _SCHEME.match(os.fspath(location))
    return m.group(1).lower() if m else None


def as_local(location: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``location`` with a ``file://`` URI turned into its local path (``file:///data/x`` ->
    ``/data/x``), so that code taking local paths never reads the URI as a relative folder
    named ``file:``; other locations as given."""
    if scheme_of(location) != "file":
        return location
    from urllib.parse import unquote, urlparse

    parsed = urlparse(os.fspath(location))
    if parsed.netloc not in ("", "localhost"):
        raise InputError(
            f"{os.fspath(location)!r}: a file:// URI names this machine's files (file:///path), "
            f"not host {parsed.netloc!r}"
        )
    return Path(unquote(parsed.path))


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names something outside the local filesystem."""
    return scheme_of(location) not in (None, "file")


# Remote filesystems by (scheme, authority, the environment that configures them): opening an
# S3 filesystem per file would cost a client each time; a changed endpoint or key opens anew.
_FILESYSTEMS: dict[tuple[str, ...], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()
_CONFIG_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
)
_CACHED_SCHEMES = ("s3", "gs", "gcs")  # where the filesystem path is "<authority>/<key>"


def filesystem_of(location: str | os.PathLike[str]) -> tuple[Any | None, str]:
    """``(filesystem, path)`` for pyarrow's readers and writers: ``(None, location)`` for a
    local path (pyarrow opens it itself), the store's filesystem and ``bucket/key`` for a
    remote URI (see :func:`resolve`)."""
    if not is_remote(location):
        text = os.fspath(location)
        if scheme_of(text) == "file":
            loc = resolve(text)
            return None, loc.path
        return None, text
    loc = resolve(location)
    return loc.filesystem, loc.path


def _native(text: str, scheme: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    rest = text.split("://", 1)[1]
    authority, _, key = rest.partition("/")
    if scheme not in _CACHED_SCHEMES or not authority:
        return pafs.FileSystem.from_uri(text)
    # Per process too: a client made before a fork (DataLoader workers) is not used after it.
    cache_key = (str(os.getpid()), scheme, authority, *(os.environ.get(k, "") for k in _CONFIG_ENV))
    with _FILESYSTEMS_LOCK:
        fs = _FILESYSTEMS.get(cache_key)
        if fs is None:
            fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{authority}/")
            _FILESYSTEMS[cache_key] = fs
    return fs, f"{authority}/{key}".rstrip("/")


def resolve(location: str | os.PathLike[str]) -> Location:
    """The filesystem and path of ``location``.

    Raises
    ------
    InputError
        An empty location, a scheme neither pyarrow nor fsspec knows, or a store that cannot
        be opened (the message names the location and the store's reason; credentials are
        never part of it).
    """
    import pyarrow.fs as pafs

    text = os.fspath(location)
    if not text:
        raise InputError("an empty path or URI")
    scheme = scheme_of(text)
    if scheme is None:
        path = str(Path(text).expanduser().resolve())
        return Location(path, path, pafs.LocalFileSystem(), True)
    if scheme == "file":
        fs, path = pafs.FileSystem.from_uri(text)
        return Location(text, path, fs, True)
    if scheme in NATIVE:
        try:
            fs, path = _native(text, scheme)
        except (OSError, ValueError) as exc:  # pyarrow's reason, without secrets
            raise InputError(f"cannot open {text!r}: {exc}") from None
        return Location(text, path, fs, False)
    try:
        import fsspec
    except ImportError:
        fsspec = None
    if fsspec is not None and scheme in fsspec.available_protocols():
        try:
            inner = fsspec.filesystem(scheme)
        except (ImportError, ValueError, OSError) as exc:
            raise InputError(f"cannot open {text!r} through fsspec: {exc}") from None
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(inner))
        return Location(text, inner._strip_protocol(text), fs, False)
    raise InputError(
        f"{text!r}: unknown storage scheme {scheme!r}; ctfp reads local paths, file://, "
        f"{', '.join(s + '://' for s in NATIVE)} and what an installed fsspec knows"
    )


def child(folder: str | os.PathLike[str], name: str) -> str | Path:
    """``name`` inside ``folder``: a :class:`~pathlib.Path` locally, a URI on an object store."""
    if is_remote(folder):
        return os.fspath(folder).rstrip("/") + "/" + name
    return Path(folder) / name


def read_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """The content of the file or object ``path``, or None where there is none."""
    fs, p = filesystem_of(path)
    if fs is None:
        try:
            return Path(p).read_bytes()
        except FileNotFoundError:
            return None
    import pyarrow.fs as pafs

    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read()


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether the file or object ``path`` is there (one metadata request on a store)."""
    fs, p = filesystem_of(path)
    if fs is None:
        return Path(p).is_file()
    import pyarrow.fs as pafs

    return fs.get_file_info(p).type == pafs.FileType.File


def put_object(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` as the object ``path`` (a remote URI) in one request: an object store
    shows all of it or none of it, the atomicity that a rename gives a local file."""
    fs, p = filesystem_of(path)
    if fs is None:
        raise ValueError(f"{os.fspath(path)!r} is a local path; write it with a rename")
    with fs.open_output_stream(p) as f:
        f.write(data)


def delete_file(path: str | os.PathLike[str]) -> None:
    """Delete the file or object ``path`` if it is there."""
    fs, p = filesystem_of(path)
    if fs is None:
        Path(p).unlink(missing_ok=True)
        return
    import pyarrow.fs as pafs

    if fs.get_file_info(p).type == pafs.FileType.File:
        fs.delete_file(p)


def list_files(folder: str | os.PathLike[str]) -> dict[str, int]:
    """Every file (object) under ``folder``, recursively: its path relative to ``folder``
    (``/``-separated) and its size; empty where there is no such folder."""
    fs, p = filesystem_of(folder)
    if fs is None:
        root = Path(p)
        if not root.is_dir():
            return {}
        return {
            f.relative_to(root).as_posix(): f.stat().st_size
            for f in sorted(root.rglob("*"))
            if f.is_file()
        }
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(p.rstrip("/"), allow_not_found=True, recursive=True))
    base = p.rstrip("/") + "/"
    return {
        i.path[len(base) :]: i.size
        for i in sorted(infos, key=lambda i: i.path)
        if i.type == pafs.FileType.File and i.path.startswith(base)
    }


__all__ = [
    "NATIVE",
    "Location",
    "PathLike",
    "as_local",
    "child",
    "delete_file",
    "exists",
    "filesystem_of",
    "is_remote",
    "list_files",
    "put_object",
    "read_bytes",
    "resolve",
    "scheme_of",
]
