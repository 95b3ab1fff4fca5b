"""Where a path lives: a local folder or an object store, as a ``pyarrow.fs`` filesystem.

Every path or URI is resolved once (:func:`resolve`) into a :class:`Location`, which reads,
lists, writes atomically and locks the same way wherever it lives. ``s3://``, ``gs://``
(``gcs://``), ``abfs://`` (``abfss://``, ``az://``) and ``hdfs://`` are pyarrow's native
filesystems; other schemes go through fsspec where it knows them. Credentials and endpoints
come from each store's standard environment (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``~/.aws/config``...) and are never printed. Requests to S3 or GCS have time limits
(:data:`STORE_TIMEOUTS`); errors become one :class:`~ctfp.exceptions.StorageError` naming the
path or URI.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ctfp.exceptions import InputError, StorageError, first_line
from ctfp.io.locks import alive

#: A local path or a URI, as every path-taking function of ctfp accepts it.
PathLike = str | os.PathLike[str]

#: Schemes pyarrow opens natively (``pyarrow.fs.FileSystem.from_uri``).
NATIVE = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
#: Time limits of object-store requests, in seconds: to connect; a request transferring
#: nothing this long; attempts of one S3 call; the time one GCS call may spend retrying.
STORE_TIMEOUTS = {"connect": 5.0, "request": 3.0, "attempts": 3, "retry": 8.0}


@dataclass(frozen=True)
class Location:
    """A resolved path: ``uri`` as given (a local path made absolute), ``path`` the
    filesystem's own (``bucket/key`` on a store), ``local`` for the local filesystem."""

    uri: str
    path: str
    filesystem: Any = field(repr=False, compare=False)
    local: bool

    def join(self, *parts: str) -> Location:
        """The location ``parts`` below this one."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return replace(
            self, uri=f"{self.uri.rstrip('/')}/{tail}", path=f"{self.path.rstrip('/')}/{tail}"
        )

    def __str__(self) -> str:
        return self.uri

    @contextlib.contextmanager
    def failing(self, where: object = None) -> Iterator[None]:
        """The system's or the store's errors in the block as one
        :class:`~ctfp.exceptions.StorageError` naming ``where`` (default: this location, or
        locally the file the system names) and a store's endpoint."""
        import pyarrow as pa

        try:
            yield
        except StorageError:
            raise
        except (OSError, pa.ArrowException) as exc:
            if not isinstance(exc, OSError) and type(exc) is not pa.ArrowException:
                raise  # pyarrow's ValueError, TypeError...: not the storage's
            where = where or (getattr(exc, "filename", None) if self.local else None) or self.uri
            endpoint = None if self.local else _endpoint(self.filesystem)
            raise StorageError.of(exc, where, endpoint) from exc

    def exists(self) -> bool:
        """Whether this file or object is there (one metadata request on a store)."""
        with self.failing(self.uri):
            return self.filesystem.get_file_info(self.path).is_file

    def read_bytes(self) -> bytes | None:
        """The content of this file or object, or None where there is none."""
        if self.local and not self.exists():  # (a local folder cannot be opened)
            return None
        with self.failing(self.uri):
            try:  # on a store, one request fewer than exists() and then opening
                stream = self.filesystem.open_input_stream(self.path)
            except FileNotFoundError:
                return None
            with stream:
                return stream.read()

    def put(self, data: bytes | Callable[[BinaryIO], Any]) -> int:
        """Write this file atomically (readers see all of it or none) and return its size.
        Locally a temp file beside it, fsynced and renamed over it (over a link: the link
        itself), the folder made if missing and fsynced; on a store one request built in
        memory first. ``data``: bytes, or a function writing to a file.

        Raises StorageError: something other than a file is there (a folder, a device, a FIFO,
        a socket), or the write failed (no space, a read-only file system, the store's error).
        """
        if not self.local:
            if callable(data):
                import pyarrow as pa

                sink = pa.BufferOutputStream()
                data(sink)
                data = sink.getvalue()
            with self.failing(self.uri), self.filesystem.open_output_stream(self.path) as f:
                f.write(data)
            return len(data)
        self.check_file()
        write = data if callable(data) else lambda f: f.write(data)
        path = Path(self.path)
        with self.failing():  # naming the folder that cannot be made
            path.parent.mkdir(parents=True, exist_ok=True)
        with self.failing(self.uri):
            fd, name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
            )
            try:
                os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result: a plain file
                with open(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                    size = os.fstat(f.fileno()).st_size
                os.replace(name, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return size

    def check_file(self) -> None:
        """Refuse (:class:`~ctfp.exceptions.StorageError`) where :meth:`put` would: a local
        folder, device, FIFO or socket is there (a rename would replace it); a link is fine."""
        if not self.local:
            return
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:  # nothing there, or no folder there: put makes it or says why not
            return
        if stat.S_ISDIR(mode):
            raise StorageError.of(IsADirectoryError(errno.EISDIR, ""), self.uri)
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise StorageError(
                f"{self.uri}: is not a regular file (a device, pipe or socket); ctfp writes "
                "its outputs as files and does not replace it: give a file's path"
            )

    def delete(self) -> None:
        """Delete this file or object if it is there."""
        if self.exists():
            with self.failing(self.uri):
                self.filesystem.delete_file(self.path)

    def list_files(self, recursive: bool = True) -> dict[str, int]:
        """Every file under this folder (``recursive``) or in it by its ``/``-separated path
        relative to the folder, with its size; empty where there is no such folder. Locally,
        links are left out (and not followed)."""
        if self.local:
            root = Path(self.path)
            if not root.is_dir():
                return {}
            return {
                f.relative_to(root).as_posix(): f.stat().st_size
                for f in sorted(root.rglob("*") if recursive else root.iterdir())
                if f.is_file() and not f.is_symlink()
            }
        import pyarrow.fs as pafs

        base = self.path.rstrip("/")
        with self.failing(self.uri):
            infos = self.filesystem.get_file_info(
                pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
            )
        return {
            i.path[len(base) + 1 :]: i.size
            for i in sorted(infos, key=lambda i: i.path)
            if i.is_file and i.path.startswith(base + "/")
        }

    def lock(self) -> Any:
        """Keep every other writer out of this folder until the returned lock's ``release()``:
        a :class:`~ctfp.io.locks.FolderLock` locally (the folder made if missing), a
        :class:`~ctfp.io.locks.Lease` on a store."""
        from ctfp.io.locks import FolderLock, Lease

        if not self.local:
            return Lease(self)
        with self.failing():  # a file there, a read-only file system...
            Path(self.path).mkdir(parents=True, exist_ok=True)
        return FolderLock(self.path)


# Temp files are ".<final name>.<pid>.<random>.tmp": created exclusively, removed later only
# when their process is gone; cleanup looks for those of shard folders' files only.
_TEMP_RE = re.compile(
    r"^\.(part-[A-Za-z0-9_-]+\.parquet|errors\.parquet|_manifest\.json)\.(\d+)\.([a-z0-9_]{8})\.tmp$"
)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def remove_stale_temp_files(folder: Path) -> None:
    """Remove ctfp's own temp files in ``folder`` whose process is gone (a killed run's); any
    other file, and the temp files of a live process, are left alone."""
    for tmp in folder.iterdir() if folder.is_dir() else ():
        match = _TEMP_RE.match(tmp.name)
        if match and tmp.is_file() and not tmp.is_symlink() and not alive(int(match.group(2))):
            tmp.unlink(missing_ok=True)


def scheme_of(location: str | os.PathLike[str]) -> str | None:
    """The URI scheme of ``location`` (lower case), or None for a plain path."""
    m = _SCHEME.match(os.fspath(location))
    return m.group(1).lower() if m else None


def as_local(location: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``location`` with a ``file://`` URI turned into its local path (``file:///data/x`` ->
    ``/data/x``); other locations as given."""
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


def local_only(
    flag: str, path: str | os.PathLike[str] | None, what: str, error: type = InputError
) -> None:
    """Refuse (``error``) an object-store URI given to ``flag``, a local (or mounted) path."""
    if path is not None and is_remote(path):
        raise error(
            f"{flag} {os.fspath(path)!r}: {what} is a local or mounted path, not an object "
            "store; copy it here (or mount the store)"
        )


# Remote filesystems by (pid, scheme, authority, the environment that configures them): a
# client per file would be slow; a client made before a fork is not used after it.
_FILESYSTEMS: dict[tuple[str, ...], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()
_CONFIG = ("AWS_", "GOOGLE_", "AZURE_")  # the environment that configures a store
_CACHED_SCHEMES = ("s3", "gs", "gcs")  # where the filesystem path is "<authority>/<key>"


def _bounded(fs: Any) -> Any:
    """``fs`` with :data:`STORE_TIMEOUTS` on its requests (S3 and GCS; others as they are)."""
    import datetime

    import pyarrow.fs as pafs

    if isinstance(fs, pafs.S3FileSystem):
        limits = {
            "connect_timeout": STORE_TIMEOUTS["connect"],
            "request_timeout": STORE_TIMEOUTS["request"],
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(int(STORE_TIMEOUTS["attempts"])),
        }
    elif isinstance(fs, pafs.GcsFileSystem):
        limits = {"retry_time_limit": datetime.timedelta(seconds=STORE_TIMEOUTS["retry"])}
    else:
        return fs
    rebuild, (options,) = fs.__reduce__()  # the options from_uri found (region, endpoint)
    return rebuild({**options, **limits})


def _endpoint(fs: Any) -> str | None:
    """Where the store ``fs`` sends its requests, to name in an error (None: not known)."""
    import pyarrow.fs as pafs

    if not isinstance(fs, pafs.S3FileSystem | pafs.GcsFileSystem):
        return None
    options = fs.__reduce__()[1][0]
    if options.get("endpoint_override"):
        return str(options["endpoint_override"])
    if isinstance(fs, pafs.GcsFileSystem):
        return "storage.googleapis.com"
    return f"s3.{options.get('region') or 'us-east-1'}.amazonaws.com"


def _native(text: str, scheme: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    rest = text.split("://", 1)[1]
    authority, _, key = rest.partition("/")
    if scheme not in _CACHED_SCHEMES or not authority:
        fs, path = pafs.FileSystem.from_uri(text)
        return _bounded(fs), path
    config = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(_CONFIG))
    cache_key = (str(os.getpid()), scheme, authority, *config)
    with _FILESYSTEMS_LOCK:
        fs = _FILESYSTEMS.get(cache_key)
        if fs is None:
            fs = _bounded(pafs.FileSystem.from_uri(f"{scheme}://{authority}/")[0])
            _FILESYSTEMS[cache_key] = fs
    return fs, f"{authority}/{key}".rstrip("/")


def resolve(location: str | os.PathLike[str] | Location) -> Location:
    """The filesystem and path of ``location`` (a :class:`Location` as it is).

    Raises InputError: an empty location, a scheme neither pyarrow nor fsspec knows, ``.`` or
    ``..`` in a URI's path, or a store that cannot be opened (the message names the location and
    the store's reason; credentials are never part of it).
    """
    import pyarrow as pa
    import pyarrow.fs as pafs

    if isinstance(location, Location):
        return location
    text = os.fspath(location)
    if not text:
        raise InputError("an empty path or URI")
    scheme = scheme_of(text)
    if scheme is None:
        given = Path(text).expanduser()
        full = given.resolve()
        if given.is_symlink() and not full.is_dir():  # a write replaces the link, not its file
            full = given.absolute().parent.resolve() / given.name
        return Location(str(full), str(full), pafs.LocalFileSystem(), True)
    if scheme == "file":
        fs, path = pafs.FileSystem.from_uri(text)
        return Location(text, path, fs, True)
    if {".", ".."} & set(text.split("://", 1)[1].split("/")):
        raise InputError(
            f"{text!r}: '.' and '..' name no folder on an object store (keys are names, not "
            "paths); write the key in full"
        )
    if scheme in NATIVE:
        try:
            fs, path = _native(text, scheme)
        except (OSError, ValueError, pa.ArrowException) as exc:  # the reason, without secrets
            raise InputError(f"cannot open {text!r}: {first_line(exc)}") from None
        return Location(text, path, fs, False)
    try:
        import fsspec
    except ImportError:
        fsspec = None
    if fsspec is not None and scheme in fsspec.available_protocols():
        try:
            inner = fsspec.filesystem(scheme)
        except (ImportError, ValueError, OSError) as exc:
            raise InputError(f"cannot open {text!r} through fsspec: {first_line(exc)}") from None
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


__all__ = [
    "NATIVE",
    "STORE_TIMEOUTS",
    "Location",
    "PathLike",
    "as_local",
    "child",
    "is_remote",
    "local_only",
    "remove_stale_temp_files",
    "resolve",
    "scheme_of",
]
