"""Small file-system helpers shared by apply, the launcher and the shim."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write JSON through a temp file, fsync and a rename: readers never see half a file, and a
    crash leaves either the old file or the new one."""
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write text through a temp file, fsync and a rename (see `write_json_atomic`); a write that
    fails (a full disk) leaves no temp file behind."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


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
