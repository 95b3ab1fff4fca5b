"""Errors ctfp raises on purpose: each says what went wrong, where, and how to fix it."""

from __future__ import annotations

import errno
import re
from typing import Self


class CtfpError(Exception):
    """Base class for errors a user can act on (bad input, bad settings)."""


class InputError(CtfpError):
    """A source could not be turned into a list of inputs (missing path, empty folder, ...)."""


class DecodeError(CtfpError):
    """One input file could not be decoded into CT slices; the run records it and goes on."""


class ShardMismatchError(CtfpError):
    """Shards in one dataset were written by different models, weights or settings."""


class WeightsUnavailableError(CtfpError):
    """The requested backbone weights cannot be loaded."""


class DeviceError(CtfpError):
    """The requested device or precision is not available on this machine."""


class StorageError(CtfpError, OSError):
    """A file, folder or object could not be written or read: the reason in one line, naming
    the path or URI and what to do (:meth:`of`). An ``OSError`` too, for code that catches
    those."""

    @classmethod
    def of(cls, exc: BaseException, where: object = None, endpoint: str | None = None) -> Self:
        """The error of ``exc`` (an ``OSError``, or pyarrow's error of a store) at ``where``
        (default: the file the OS names); ``endpoint`` is named where a store does not answer."""
        if isinstance(exc, cls):
            return exc
        errno_ = getattr(exc, "errno", None)
        if errno_ in _LOCAL:
            reason, hint = _LOCAL[errno_]
        else:
            reason = first_line(exc)
            if where is not None:  # pyarrow's "When reading key 'k' in bucket 'b': " says it
                reason = re.sub(r"^When [^:]* in bucket '[^']*': ", "", reason)
            hint = next(
                (h for words, h in _STORE if re.search(words, reason)),
                "check the path or URI and rerun",
            )
            if hint is _NO_ANSWER:
                hint = hint.format(at=f" at {endpoint}" if endpoint else "")
        if where is None:
            where = getattr(exc, "filename", None)
        return cls(f"{where}: {reason}; {hint}" if where is not None else f"{reason}; {hint}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, without a store's request id, or its type."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"\s*\(Request ID: [^)]*\)", "", line)  # AWS's
    line = line.split(" error_info=", 1)[0]  # GCS's details, longer than the message
    return line if len(line) <= 400 else line[:399] + "…"


_RERUN = "then rerun the same command (it resumes)"
# The system's errors of writing and reading files: errno -> (reason, what to do).
_LOCAL: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", f"free some space or write elsewhere, {_RERUN}"),
    errno.EDQUOT: ("disk quota exceeded", f"free some space or write elsewhere, {_RERUN}"),
    errno.EFBIG: ("file too large (a limit of the file system or of ulimit -f)", "write elsewhere"),
    errno.EROFS: ("read-only file system", "write to a writable folder"),
    errno.EACCES: ("permission denied", "write to a folder you may write to, or fix its rights"),
    errno.EPERM: ("operation not permitted", "write to a folder you may write to"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "correct the path"),
    errno.EISDIR: ("is a folder, not a file", "remove it or give a file's path"),
    errno.EEXIST: ("exists and is not a folder", "remove it or choose another output folder"),
    errno.ENOENT: ("no such file or folder", "correct the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.EIO: ("input/output error", "check the disk, then rerun"),
}
_NO_ANSWER = "the store{at} did not answer; check the endpoint, the network and rerun"
# A store's error (pyarrow's AWS, GCS and Azure messages) and what to do.
_STORE: tuple[tuple[str, str], ...] = (
    (
        r"NO_SUCH_BUCKET|bucket does not exist|ContainerNotFound",
        "create the bucket or correct the URI",
    ),
    (
        r"NETWORK_CONNECTION|curlCode|Could not connect|UNAVAILABLE|[Tt]imeout|timed out"
        r"|Connection refused",
        _NO_ANSWER,
    ),
    (
        r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|[Cc]redential"
        r"|token|Authentication|UNAUTHENTICATED",
        "check the store's credentials (its standard environment variables or config files)",
    ),
)
