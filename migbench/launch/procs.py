"""The process layer's helpers: liveness by PID and create time, finding a shim, signalling a
process group, and the one-launcher-per-plan lock."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import psutil

from migbench.errors import MigbenchError


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """True when `pid` runs (not a zombie) and started at `create_time` (PID reuse check)."""
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - float(create_time)) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def create_time_of(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def find_shim(adir: Path) -> tuple[int, float] | None:
    """A live shim whose command line names `adir` (recovery of a start whose PID was not recorded)."""
    target = str(adir)
    for p in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        try:
            cl = p.info.get("cmdline") or []
            if "migbench.shim" in cl and target in cl and p.info.get("status") != psutil.STATUS_ZOMBIE:
                return int(p.info["pid"]), float(p.info["create_time"])
        except (psutil.Error, TypeError, KeyError):
            continue
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def kill_group(pid: int | None, sig: int) -> bool:
    """Signal process group `pid` if it still has members. True when the signal was sent."""
    if not pid:
        return False
    try:
        os.killpg(int(pid), sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class LauncherLock:
    """One launcher per plan: an exclusive non-blocking flock on `<state dir>/launcher.lock` that
    holds the owner's PID."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def __enter__(self) -> "LauncherLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MigbenchError(
                f"another launcher (PID {self.holder()}) is already running this plan (lock {self.path})",
                hint="watch it with `migbench status`, stop it with `migbench stop`; one launcher per plan",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

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
