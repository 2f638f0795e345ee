"""The process layer's helpers: starting a shim, liveness by PID and create time, finding a shim,
signalling a process group, and the one-launcher-per-plan lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from migbench.errors import MigbenchError
from migbench.fsutil import PidLock


def spawn_shim(adir: Path, *, new_session: bool = True) -> subprocess.Popen:
    """Start the per-run shim on the attempt directory `adir` (its `cmd.json` written), its own
    messages in `adir/shim.log`; in a new session (so it outlives its starter) unless told not to
    (an engine's task, whose session the engine ends). Raises OSError."""
    from migbench.launch.options import PKG_ROOT

    with open(adir / "shim.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "migbench.launch.shim", str(adir)],
            cwd=str(PKG_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=new_session,
            close_fds=True,
        )


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
            if "migbench.launch.shim" in cl and target in cl and p.info.get("status") != psutil.STATUS_ZOMBIE:
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


class LauncherLock(PidLock):
    """One launcher per plan: an exclusive non-blocking flock on `<state dir>/launcher.lock` that
    holds the owner's PID."""

    def busy_error(self) -> MigbenchError:
        return MigbenchError(
            f"another launcher (PID {self.holder()}) is already running this plan (lock {self.path})",
            hint="watch it with `migbench status`, stop it with `migbench stop`; one launcher per plan",
        )
