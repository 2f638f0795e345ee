"""`migbench launch --detach`: the supervisor as a daemon in its own session, logging to
`<state dir>/launcher.log`; returns once the daemon holds the plan's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from migbench.backend.select import sim_dir, use_simulated_host
from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE, NotRegularFile, create_private
from migbench.launch.hostbook import HostBooking
from migbench.launch.options import PKG_ROOT, LaunchOptions
from migbench.launch.prepare import preflight
from migbench.launch.procs import LauncherLock
from migbench.launch.store import Store, db_path
from migbench.plan import Plan
from migbench.state import configure_modes


@dataclass
class Detached:
    pid: int
    state_dir: Path
    log: Path


def exit_error(rc: int, log: Path) -> MigbenchError:
    """A detached launcher that exited with `rc` at its start, as an error: the last lines of its
    `log`, or, when this start ended in a traceback (an unexpected exception), an internal error
    naming the exception, the traceback left in the log (it was printed as the error)."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError as exc:
        lines = [f"(cannot read {log}: {exc})"]
    starts = [n for n, line in enumerate(lines) if line.startswith("--- ") and " detached launcher for " in line]
    mine = lines[starts[-1] + 1 :] if starts else lines  # this start's lines, not an earlier launcher's
    if any(line.startswith("Traceback (most recent call last)") for line in mine):
        return MigbenchError(
            f"internal error (the detached launcher exited with code {rc}: {mine[-1].strip() if mine else 'no message'})",
            hint=f"this is a bug in migbench: please report it with the command you ran and the traceback in {log}",
        )
    return MigbenchError(f"the detached launcher exited with code {rc}:\n  " + "\n  ".join(lines[-8:]), hint=f"see {log}")


def detach(plan: Plan, opts: LaunchOptions, *, wait_s: float = 20.0) -> Detached:
    """Start the supervisor as a daemon (new session, output to `<state dir>/launcher.log`) and
    return once it holds the plan's lock (or raise with its error)."""
    use_simulated_host(sim_dir())
    prep = preflight(plan, opts.state_dir)
    HostBooking(prep, lambda _: None).check()  # the plan runs already, or its instances are another launch's
    configure_modes(plan)
    sd = prep.state_dir.ensure()
    lock = LauncherLock(sd.lock)
    lock.ensure_free()
    log = sd.log
    cmd = [sys.executable, "-m", "migbench.launch", str(Path(plan.path or "").resolve()), "--state-dir", str(sd.resolve())]
    if opts.drain:
        cmd.append("--drain")
    if not opts.lend:
        cmd.append("--no-lend")
    if opts.force:
        cmd.append("--force")
    if opts.resume_unknown:
        cmd.append("--resume-unknown")
    env = dict(os.environ, MIGBENCH_LAUNCHER_LOG=str(log.resolve()))
    try:
        with os.fdopen(create_private(log), "ab") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} detached launcher for {plan.path}\n".encode())
            f.flush()
            # cwd: the directory holding the migbench package, so `-m migbench.launch` imports it even
            # from a source checkout; every path the launcher uses is absolute.
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=str(PKG_ROOT))
    except OSError as exc:
        full = exc.errno in NO_SPACE
        raise MigbenchError(
            f"cannot write the launcher's log {log}: {os_reason(exc)}",
            hint="free space on that file system"
            if full
            else "migbench writes it only as a regular file, and something else put this one there: remove it and run the command again"
            if isinstance(exc, NotRegularFile)
            else "check the state directory's permissions (or pass --state-dir)",
        ) from None
    deadline = time.monotonic() + wait_s
    db = db_path(sd)
    while time.monotonic() < deadline:
        rc = p.poll()
        if rc == 0:
            return Detached(p.pid, sd.path, log)
        if rc is not None:
            raise exit_error(rc, log)
        if db.exists():
            try:
                st = Store.open_readonly(db)
                try:
                    row = st.launcher()
                finally:
                    st.close()
                if row is not None and row.pid == p.pid:
                    return Detached(p.pid, sd.path, log)
            except Exception:  # noqa: BLE001 - the database may be mid-creation
                pass
        time.sleep(0.05)
    return Detached(p.pid, sd.path, log)
