"""Small file-system helpers: reading the files a user names (one place for every way that fails),
atomic writes, PID locks."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

from migbench.errors import InputError, MigbenchError, Problem, from_os_error

MAX_INPUT_BYTES = 16 * 2**20
"""The default size limit of a file the user names (a sweep, catalogue text): refused before parsing."""


def read_input(path: str | os.PathLike[str], what: str, *, limit: int = MAX_INPUT_BYTES, hint: str | None = None) -> bytes:
    """The bytes of a file the user named as `what` ("sweep file", "plan file"...), or an `InputError`
    that says which of the usual things is wrong: missing, a directory, unreadable, a special file,
    larger than `limit` (checked before reading; a pipe is read up to the limit). `hint` says how to
    get a good one."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):  # pragma: no cover - open() refuses directories on Linux
                raise IsADirectoryError(21, "Is a directory", str(p))
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise _too_big(p, what, st.st_size, limit)
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {p} does not exist", hint=hint or "check the path") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a directory, not a {what}", hint=hint or "give the file's path") from None
    except OSError as exc:
        err = from_os_error(exc, f"read the {what}")
        raise InputError(err.message, hint=err.hint) from None
    if len(data) > limit:
        raise _too_big(p, what, None, limit)
    return data


def read_input_text(path: str | os.PathLike[str], what: str, *, limit: int = MAX_INPUT_BYTES, hint: str | None = None) -> str:
    """`read_input` decoded as UTF-8 text; a file that is not text (invalid UTF-8, a NUL byte) is an
    `InputError` naming the line."""
    data = read_input(path, what, limit=limit, hint=hint)
    return decode_text(data, str(path), what)


def decode_text(data: bytes, file: str, what: str) -> str:
    """UTF-8 text without NUL bytes, or an `InputError` with the line of the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        prob = Problem(f"not UTF-8 text (byte {exc.start}); is it a binary file?", file, line, None, "save it as UTF-8 text")
        raise InputError(f"{file}: the {what} is not text", problems=[prob]) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        prob = Problem("a NUL byte; is it a binary file?", file, line, None, "remove the NUL character")
        raise InputError(f"{file}: the {what} is not text", problems=[prob])
    return text


def _too_big(p: Path, what: str, size: int | None, limit: int) -> InputError:
    have = f"{size / 2**20:.0f} MiB" if size is not None else "more than that"
    return InputError(
        f"{p} is too large for a {what} ({have}; the limit is {limit // 2**20} MiB)",
        hint="is it the right file? the README lists migbench's input limits",
    )


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write JSON through a temp file, fsync and a rename: readers never see half a file, and a
    crash leaves either the old file or the new one."""
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str | None = None) -> Path:
    """Write text through a temp file beside it, fsync and a rename: readers never see half a file,
    and a crash leaves the old file or the new one. A device or a pipe (`-o /dev/null`) is written
    through, never replaced. Any failure (a read-only directory, a name too long, a full disk, an
    interrupt) leaves the old file and no temp file, and raises the OSError, or, given `what` (the
    "plan file"), an `Error:` that says what could not be written and why."""
    p = Path(path)
    if what is not None and p.is_dir():
        raise MigbenchError(f"{p} is a directory", hint=f"give the {what}'s name")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    if len(os.fsencode(tmp.name)) > 255:  # keep a long (but legal) name writable
        tmp = p.with_name(f".migbench.{os.getpid()}.tmp")
    try:
        if p.exists() and not p.is_file():
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
            return p
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if what is None or not isinstance(exc, OSError):
            raise
        raise from_os_error(exc, f"write the {what}") from None
    return p


class PidLock:
    """An exclusive, non-blocking flock on a file that holds its owner's PID while held.

    Subclasses say what being refused means (`busy_error`); `with lock:` takes it or raises that,
    `ensure_free()` raises it without taking the lock."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.fd: int | None = None

    def busy_error(self) -> Exception:  # pragma: no cover - every subclass overrides it
        return RuntimeError(f"lock {self.path} is held by PID {self.holder()}")

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def is_held(self) -> bool:
        """Whether another process holds the lock now (without taking it)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def ensure_free(self) -> None:
        if self.is_held():
            raise self.busy_error()

    def __enter__(self) -> PidLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self.busy_error() from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
