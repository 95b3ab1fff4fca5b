"""One writer per output folder: a lock file locally, a lease object on an object store.

A local folder is locked with a POSIX record lock on ``folder/.lock`` (:class:`FolderLock`).
On a store a writer puts ``folder/_lease.json`` (``{"owner", "host", "pid", "expires"}``),
renews it from a background thread and deletes it when done (:class:`Lease`); a second writer
stops at a lease that is live and someone else's. Two writers starting in the same instant
are detected: each reads the lease back after writing it and before every commit.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

from ctfp.exceptions import CtfpError, StorageError, first_line

LEASE_FILE = "_lease.json"
LEASE_SECONDS = 120.0
#: The longest a read of the lease may take (the stores' own time limits come first).
LEASE_READ_SECONDS = 60.0


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (another user's counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Output folders locked by writers of this process (see FolderLock).
_LOCKED_HERE: set[str] = set()


class Held:
    """A held lock: ``with`` blocks release it on leaving."""

    def check(self) -> None:
        """Stop if this writer no longer holds the folder: nothing to check where a lock
        cannot be taken over (a :class:`Lease` can)."""

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class FolderLock(Held):
    """One writer at a time in an output folder: an exclusive lock on ``folder/.lock``, held
    until :meth:`release`; a second one, in another process or this one, gets a clear error."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder, path = Path(folder), str(Path(folder) / ".lock")
        key = str(folder.resolve())
        if key in _LOCKED_HERE:  # POSIX locks do not exclude the process that holds them
            raise CtfpError(f"another ctfp writer in this process is writing into {str(folder)!r}")
        # Append, never truncate (it may be someone's file); O_NOFOLLOW refuses a symlink.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)  # O_NONBLOCK: a FIFO planted there never hangs
        except OSError as exc:
            raise CtfpError(f"cannot open the lock file {path!r}: {exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CtfpError(f"the lock file {path!r} is not a regular file; remove it")
        handle = open(fd, "a")  # noqa: SIM115 - held until release()
        try:
            # A POSIX record lock, not flock: forked DataLoader workers do not inherit it, so a
            # killed run's orphaned workers cannot keep the folder locked.
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CtfpError(
                f"another ctfp process is writing into {str(folder)!r}; wait for it or use "
                "another --out"
            ) from None
        _LOCKED_HERE.add(key)
        self._key, self._handle = key, handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            _LOCKED_HERE.discard(self._key)


class Lease(Held):
    """The write lease of ``folder`` (an object-store :class:`~ctfp.io.fs.Location`), held
    until :meth:`release` (or the end of a ``with`` block).

    Raises CtfpError: another writer holds the folder (named, with its lease's expiry).
    """

    def __init__(self, folder: Any, *, seconds: float = LEASE_SECONDS) -> None:
        if not seconds > 0:
            raise CtfpError(f"a lease must last a positive time, got {seconds}")
        self.folder = str(folder)
        self._lease = folder.join(LEASE_FILE)  # a ctfp.io.fs.Location
        self.path = str(self._lease)
        self.seconds = seconds
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._lost: str | None = None
        self._error: str | None = None  # the renewal thread's last store error
        held = self._read()  # never this writer's: its owner id is new
        if held is not None and not self._stale(held):
            raise CtfpError(
                f"another ctfp process ({held.get('host')}, pid {held.get('pid')}) is writing "
                f"into {self.folder!r}; its lease {self.path} runs until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(held['expires']))}. Wait "
                "for it or use another --out (if that process is gone for good, delete the lease)"
            )
        self._write()
        self.check()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="ctfp-lease", daemon=True)
        self._thread.start()

    def _read(self) -> dict[str, Any] | None:
        # In a daemon thread, left there after LEASE_READ_SECONDS: a store whose client has no
        # time limit of its own (fsspec's) does not keep a writer waiting forever.
        done: dict[str, Any] = {}

        def target() -> None:
            try:
                done["value"] = self._lease.read_bytes()
            except BaseException as exc:  # handed to the caller
                done["error"] = exc

        thread = threading.Thread(target=target, name="ctfp-store-call", daemon=True)
        thread.start()
        thread.join(LEASE_READ_SECONDS)
        if thread.is_alive():
            raise StorageError(
                f"{self.path}: the store did not answer within {LEASE_READ_SECONDS:.0f} s; check "
                "the endpoint and the network, then rerun"
            )
        if "error" in done:
            raise done["error"]
        try:
            doc = json.loads(done["value"])  # TypeError where there is none
            float(doc["expires"])
            return doc
        except (ValueError, KeyError, TypeError):
            return None  # none, or not a lease ctfp can read: treated as none, and replaced

    def _stale(self, held: dict[str, Any]) -> bool:
        if float(held["expires"]) < time.time():
            return True
        same_host = held.get("host") == self.host
        pid = held.get("pid")
        return same_host and isinstance(pid, int) and pid != os.getpid() and not alive(pid)

    def _loss(self, held: dict[str, Any] | None) -> str | None:
        """How this writer lost the lease, if ``held`` is not its own (None: it holds it)."""
        if held is None:
            return "the lease was deleted"
        if held.get("owner") != self.owner:
            return f"another process ({held.get('host')}, pid {held.get('pid')}) took it over"
        return None

    def _write(self) -> None:
        doc = {
            "owner": self.owner,
            "host": self.host,
            "pid": os.getpid(),
            "expires": time.time() + self.seconds,
        }
        self._lease.put(json.dumps(doc).encode("utf-8"))
        self._renewed = time.time()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                lost = self._loss(self._read())
                if lost:
                    self._lost = lost
                    return
                self._write()
                self._error = None
            except OSError as exc:  # a store hiccup: next round (check() renews the lease
                self._error = first_line(exc)  # itself once half of it has passed)

    def check(self) -> None:
        """Stop (CtfpError) if this writer no longer holds the folder: called before commits.
        Once half the lease has passed since the last renewal that reached the store, it is
        renewed here: a store that still refuses stops the writer before the lease expires."""
        try:
            held = self._read()
        except OSError as exc:
            raise CtfpError(
                f"cannot read the write lease: {StorageError.of(exc, self.path)}; this writer "
                "stops without committing more (rerun to finish)"
            ) from None
        self._lost = self._lost or self._loss(held)
        if self._lost is not None:
            raise CtfpError(
                f"lost the write lease of {self.folder!r}: {self._lost}. Two writers were "
                "writing into one folder; this one stops without committing more (rerun it "
                "alone to finish)"
            )
        age = time.time() - self._renewed
        if age > self.seconds / 2:
            try:
                self._write()
            except OSError as exc:
                raise CtfpError(
                    f"could not renew the write lease of {self.folder!r} for {age:.0f} s "
                    f"({self._error or first_line(exc)}); this writer stops before "
                    "the lease expires (rerun to finish)"
                ) from None

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this writer's."""
        if getattr(self, "_thread", None) is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            if self._loss(self._read()) is None:
                self._lease.delete()
        except OSError as exc:  # the store is away: the lease expires by itself
            from ctfp.progress import logger

            logger.warning(
                f"warning: could not delete the write lease {self.path} "
                f"({first_line(exc)}); it expires within {self.seconds:.0f} s"
            )


__all__ = ["LEASE_FILE", "LEASE_SECONDS", "FolderLock", "Held", "Lease", "alive"]
