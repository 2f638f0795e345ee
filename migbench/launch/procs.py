"""The process layer's helpers: starting a shim, liveness by PID and create time, finding a shim,
signalling a process group, and the one-launcher-per-plan lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from migbench.errors import MigbenchError
from migbench.fsutil import create_private, read_regular
from migbench.pidlock import PidLock


def spawn_shim(adir: Path, *, new_session: bool = True, result_fd: int | None = None) -> subprocess.Popen:
    """Start the per-run shim on the attempt directory `adir` (its `cmd.json` written), its own
    messages in `adir/shim.log`; in a new session (so it outlives its starter) unless told not to
    (an engine's task, whose session the engine ends). With `result_fd` (a pipe's write end), the
    shim also writes its `exit.json` document there. Raises OSError."""
    from migbench.launch.options import PKG_ROOT

    extra = [] if result_fd is None else [str(result_fd)]
    # a state file as the shim's own messages there are (`shim._log`): the state mode, never through a link or into a pipe
    with os.fdopen(create_private(adir / "shim.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "migbench.launch.shim", str(adir), *extra],
            pass_fds=() if result_fd is None else (result_fd,),
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
        doc = json.loads(read_regular(path))
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

    error_type = MigbenchError

    def busy_error(self) -> MigbenchError:
        return MigbenchError(
            f"another launcher (PID {self.holder()}) is already running this plan (lock {self.path})",
            hint="watch it with `migbench status`, stop it with `migbench stop`; one launcher per plan",
        )


def wait_group_gone(pgid: int, timeout_s: float = 2.0) -> bool:
    """Poll until process group `pgid` has no member left (after a SIGKILL). True when it is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        if all(_zombie(p) for p in _members(pgid)):
            return True
        time.sleep(0.01)
    return False


def _members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except OSError:
            continue
    return out


def _zombie(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def set_child_subreaper(on: bool) -> bool:
    """Make this process the child subreaper of its descendants (Linux): when a shim dies, its run
    is re-parented to the launcher, which can then wait for it and learn how it ended. True when set."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def wait_child(pid: int) -> tuple[bool, int | None]:
    """Poll our child `pid` without blocking: (True, None) while it runs, (True, status) once it
    has ended (reaped now), (False, None) when it is not our child."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False, None
    return True, (status if got == pid else None)


def reap_strays(keep: set[int]) -> int:
    """Reap ended children that are not in `keep` (processes a subreaper inherits when a run's own
    children outlive it), so none stays a zombie. Returns how many."""
    n = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return n
        if info is None or info.si_pid in keep:
            return n
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return n
        n += 1
