"""One writer per object-store folder: a lease object with an owner and an expiry.

Object stores have no file locks. A writer of ``s3://bucket/shards`` puts
``s3://bucket/shards/_lease.json`` (``{"owner", "host", "pid", "expires"}``), renews it from a
background thread while it runs and deletes it when done. A second writer that finds a lease
held by someone else and not expired stops with a clear error; one whose owner's process is
gone (same host) or whose expiry has passed (a killed run elsewhere) is taken over. Stores
without conditional writes cannot make two writers starting in the same instant exclude each
other; the lease detects it instead: each writer reads the lease back after writing it and
before every commit, and stops if another owner's lease replaced its own. This is the
single-writer rule, enforced where the store allows and detected where it does not.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from ctfp.exceptions import CtfpError
from ctfp.io.fs import child, delete_file, put_object, read_bytes

LEASE_FILE = "_lease.json"
LEASE_SECONDS = 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The write lease of ``folder`` (an object-store URI), held until :meth:`release`.

    Raises
    ------
    CtfpError
        Another writer holds the folder (the message names it and when its lease expires).
    """

    def __init__(self, folder: str, *, seconds: float = LEASE_SECONDS) -> None:
        if not seconds > 0:
            raise CtfpError(f"a lease must last a positive time, got {seconds}")
        self.folder = folder
        self.path = str(child(folder, LEASE_FILE))
        self.seconds = seconds
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._lost: str | None = None
        self._error: str | None = None  # the renewal thread's last store error
        held = self._read()
        if held is not None and held.get("owner") != self.owner and not self._stale(held):
            raise CtfpError(
                f"another ctfp process ({held.get('host')}, pid {held.get('pid')}) is writing "
                f"into {folder!r}; its lease {self.path} runs until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(held['expires']))}. Wait "
                "for it or use another --out (if that process is gone for good, delete the lease)"
            )
        self._write()
        self.check()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="ctfp-lease", daemon=True)
        self._thread.start()

    def _read(self) -> dict[str, Any] | None:
        raw = read_bytes(self.path)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            float(doc["expires"])
            return doc
        except (ValueError, KeyError, TypeError):
            return None  # not a lease ctfp can read: treated as none, and replaced

    def _stale(self, held: dict[str, Any]) -> bool:
        if float(held["expires"]) < time.time():
            return True
        same_host = held.get("host") == self.host
        pid = held.get("pid")
        return same_host and isinstance(pid, int) and pid != os.getpid() and not _alive(pid)

    def _write(self) -> None:
        doc = {
            "owner": self.owner,
            "host": self.host,
            "pid": os.getpid(),
            "expires": time.time() + self.seconds,
        }
        put_object(self.path, json.dumps(doc).encode("utf-8"))
        self._renewed = time.time()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                held = self._read()
                if held is None or held.get("owner") != self.owner:
                    self._lost = self._describe(held)
                    return
                self._write()
                self._error = None
            except OSError as exc:  # a store hiccup (pyarrow raises OSError): next round, and
                self._error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue  # check() renews itself once the lease is half gone

    @staticmethod
    def _describe(held: dict[str, Any] | None) -> str:
        if held is None:
            return "the lease was deleted"
        return f"another process ({held.get('host')}, pid {held.get('pid')}) took it over"

    def check(self) -> None:
        """Stop (CtfpError) if this writer no longer holds the folder: called before commits.

        Also where failed renewals surface: once half the lease has passed since the last
        renewal that reached the store, the lease is renewed here, and a store that still
        refuses stops the writer (with the store's error) before its lease can expire and
        another writer take the folder."""
        try:
            held = self._read()
        except OSError as exc:
            raise CtfpError(
                f"cannot read the write lease {self.path}: {str(exc).splitlines()[0]}; this "
                "writer stops without committing more (rerun to finish)"
            ) from None
        if self._lost is None and (held is None or held.get("owner") != self.owner):
            self._lost = self._describe(held)
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
                    f"({self._error or str(exc).splitlines()[0]}); this writer stops before "
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
            held = self._read()
            if held is not None and held.get("owner") == self.owner:
                delete_file(self.path)
        except OSError as exc:  # the store is away: the lease expires by itself
            from ctfp.progress import logger

            logger.warning(
                f"warning: could not delete the write lease {self.path} "
                f"({str(exc).splitlines()[0]}); it expires within {self.seconds:.0f} s"
            )


__all__ = ["LEASE_FILE", "LEASE_SECONDS", "Lease"]
