"""How a launch is asked for (`LaunchOptions`), how it ends (`LaunchResult`, exit codes), and the
names of the launcher's files in the state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from migbench.state import LOCK_NAME as LOCK_NAME  # the launcher's files: names kept in migbench.state
from migbench.state import LOG_NAME as LOG_NAME
from migbench.state import StateDir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FLAPPING = 3
EXIT_INTERRUPTED = 130

NOT_STARTED = {126: "found but not executable", 127: "command not found"}
"""Exit codes that say the command never started (the shell's, and the shim's): never retried."""
OOM_RANK_SHIFT = 10**9  # an OOM retry goes ahead of every run queued on its new instance
PKG_ROOT = Path(__file__).resolve().parent.parent.parent  # the directory holding the migbench package


def _env_float(name: str, default: float) -> float:
    try:
        return max(0.001, float(os.environ[name]))
    except (KeyError, ValueError):
        return default


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch. `poll_s` / `mem_poll_s` in seconds (None: from MIGBENCH_POLL_S /
    MIGBENCH_MEM_POLL_S, else 1 s / 2 s)."""

    state_dir: StateDir  # the command's
    drain: bool = False
    lend: bool = True
    force: bool = False
    resume_unknown: bool = False  # re-queue runs whose outcome is unknown (they start with MIGBENCH_RESUME=1)
    poll_s: float | None = None
    mem_poll_s: float | None = None

    def poll(self) -> float:
        return self.poll_s if self.poll_s is not None else _env_float("MIGBENCH_POLL_S", 1.0)

    def mem_poll(self) -> float:
        return self.mem_poll_s if self.mem_poll_s is not None else _env_float("MIGBENCH_MEM_POLL_S", 2.0)


@dataclass
class LaunchResult:
    exit_code: int
    counts: dict[str, int]
    state_dir: Path
    stop_reason: str | None = None


def crash_point(name: str) -> None:
    """For tests of recovery: MIGBENCH_LAUNCH_CRASH_AT=<name> makes the launcher die here at once,
    as `kill -9` would (no cleanup). Points: `before-spawn` (a start is committed, no shim exists
    yet), `after-spawn` (a shim runs, its PID is not recorded yet); a bench's `before-recut` (its
    decision made, nothing changed yet) and `after-recut` (the GPUs re-cut, the bench plan not yet
    rewritten)."""
    if os.environ.get("MIGBENCH_LAUNCH_CRASH_AT") == name:
        os._exit(99)
