"""Where a path lives: a local folder or an object store, as a ``pyarrow.fs`` filesystem.

Every place ctfp takes a path will go through :func:`resolve` (issue 18; so far the shard
readers of the object-store tests use it). Local paths and ``file://`` URIs are the local
filesystem; ``s3://``, ``gs://`` (``gcs://``), ``abfs://`` (``abfss://``, ``az://``) and
``hdfs://`` are pyarrow's native filesystems; any other scheme goes through fsspec when it is
installed and knows it. Credentials and endpoints come from each store's standard environment
and configuration chain (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``~/.aws/config``), so any S3-compatible store works
with no ctfp-specific setting; ctfp never prints them (a :class:`Location` shows its URI only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctfp.exceptions import InputError

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


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names something outside the local filesystem."""
    return scheme_of(location) not in (None, "file")


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
            fs, path = pafs.FileSystem.from_uri(text)
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


__all__ = ["NATIVE", "Location", "is_remote", "resolve", "scheme_of"]
