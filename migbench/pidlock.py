"""PID lock files: a non-blocking flock that says who holds it (`PidLock`), shared or exclusive,
opened without following links, and refused when another user owns the file."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migbench.errors import os_reason
from migbench.fsutil import NO_SPACE, describe_user, make_dirs


class LockProblem(Exception):
    """A lock file migbench must not use (its subclasses raise their own error type)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class PidLock:
    """A non-blocking flock on `path`: exclusive (the file then holds the owner's PID and an
    optional note) or, with `shared=True`, shared (several holders; the file is only read).

    Subclasses say what being refused means (`busy_error`) and which error type to raise
    (`error_type`, constructed as `error_type(message, hint=...)`). `with lock:` takes the lock or
    raises; `acquire(blocking=False)` returns False when busy. `previous` is what an exclusive
    holder that died without releasing the lock left in the file (its PID and note), else None."""

    error_type: Callable[..., Exception] = LockProblem
    dir_mode: int | None = None  # of the lock's directory when the lock creates it (None: the state mode)

    def __init__(self, path: str | os.PathLike[str], *, shared: bool = False, note: dict[str, Any] | None = None):
        self.path = Path(path)
        self.shared = shared
        self.note = note
        self.fd: int | None = None
        self.previous: dict[str, Any] | None = None

    # -- what refusal means ----------------------------------------------------------------------
    def busy_error(self) -> Exception:  # pragma: no cover - every subclass overrides it
        return self.error_type(f"lock {self.path} is held by PID {self.holder()}")

    def _problem(self, why: str, hint: str) -> Exception:
        return self.error_type(f"cannot use the lock file {self.path}: {why}", hint=hint)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self, *, write: bool, create: bool) -> int:
        flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
            try:
                if self.dir_mode is None:
                    make_dirs(self.path.parent)
                elif not self.path.parent.exists():
                    os.makedirs(self.path.parent, self.dir_mode, exist_ok=True)
                    os.chmod(self.path.parent, self.dir_mode)
            except OSError as exc:
                raise self._open_problem(exc) from None
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise self._open_problem(exc) from None
        try:
            st = os.fstat(fd)
            self._check(st, write)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_problem(self, exc: OSError) -> Exception:
        if exc.errno == errno.ELOOP:
            return self._problem("it is a symbolic link (refusing to follow it)", f"remove it (`rm {self.path}`) if you did not make it")
        if exc.errno == errno.EISDIR:
            return self._problem("it is a directory", f"remove it (`rmdir {self.path}`)")
        if exc.errno in NO_SPACE:
            return self._problem("no space left on the device", "free some space")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return self._problem(os_reason(exc), "check the permissions of the file and its directory")
        return self._problem(os_reason(exc), "check the file and its directory")

    def _check(self, st: os.stat_result, write: bool) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise self._problem("it is not a regular file", f"remove it (`rm {self.path}`) if you did not make it")
        if st.st_nlink != 1:
            raise self._problem(f"it has {st.st_nlink} hard links", f"remove it (`rm {self.path}`); a lock file has one name")
        me = os.geteuid()
        if st.st_uid != me and (write or st.st_uid != 0):
            raise self._problem(
                f"it is owned by {describe_user(st.st_uid)}, not by {describe_user(me)}",
                f"if no migbench of {describe_user(st.st_uid)} runs, remove it (`sudo rm {self.path}`)",
            )

    # -- taking and releasing --------------------------------------------------------------------
    def acquire(self, *, blocking: bool = False, create: bool = True) -> bool:
        """Take the lock. False when it is busy (never when `blocking`)."""
        fd = self._open(write=not self.shared, create=create)
        op = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return False
        if not self.shared:
            try:
                self.previous = _parse_content(os.pread(fd, 65536, 0))
                os.ftruncate(fd, 0)
                text = f"{os.getpid()}\n" + (json.dumps(self.note, sort_keys=True) + "\n" if self.note else "")
                os.pwrite(fd, text.encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise self._open_problem(exc) from None
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if not self.shared:
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> PidLock:
        if not self.acquire():
            raise self.busy_error()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- who holds it ----------------------------------------------------------------------------
    def content(self) -> dict[str, Any] | None:
        """The PID and note in the file (an exclusive holder's, or one left by a holder that died)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return _parse_content(os.pread(fd, 65536, 0))
        except OSError:
            return None
        finally:
            os.close(fd)

    def holders(self) -> list[tuple[int, bool]]:
        """(PID, exclusive) of each process holding the lock now, from /proc/locks (Linux)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            return []
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        out = []
        for line in lines:
            parts = line.split()
            if "->" in parts:  # a waiter
                continue
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
                try:
                    out.append((int(parts[4]), parts[3] == "WRITE"))
                except ValueError:
                    continue
        return out

    def holder(self) -> str:
        """The PID(s) holding the lock, as text ("unknown" when not known)."""
        pids = sorted({pid for pid, _ in self.holders()})
        if pids:
            return ", ".join(map(str, pids))
        doc = self.content()
        return str(doc["pid"]) if doc else "unknown"

    def is_held(self) -> bool:
        """Whether another process holds the lock exclusively now (without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._open_problem(exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._problem("it is not a regular file", f"remove it (`rm {self.path}`) if you did not make it")
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def ensure_free(self) -> None:
        if self.is_held():
            raise self.busy_error()


def _parse_content(data: bytes) -> dict[str, Any] | None:
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    first, _, rest = text.partition("\n")
    doc: dict[str, Any] = {}
    if rest.strip():
        try:
            note = json.loads(rest)
            if isinstance(note, dict):
                doc.update(note)
        except ValueError:
            pass
    try:
        doc["pid"] = int(first.strip())
    except ValueError:
        doc["pid"] = None
    return doc
