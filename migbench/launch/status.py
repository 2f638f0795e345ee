"""The read side of a launch: find a state, summarise it, ask its launcher to stop, find logs.

Everything here opens `launch.db` read-only except `request_stop`, which sets the launcher row's
`stop_requested` and signals the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, TypedDict

from migbench.backend.base import HostState
from migbench.errors import MigbenchError
from migbench.fsutil import read_regular, require_trusted
from migbench.launch.procs import process_alive
from migbench.launch.spec import attempt_dir, check_run_id
from migbench.launch.store import ACTIVE_STATES, STATES, LauncherRow, Store, db_path, key_of, open_checked, read_state, start_command
from migbench.plan import read_identity
from migbench.state import DB_NAME, StateDir, require_trusted_state
from migbench.sweep.model import LaunchSettings


class _LauncherSeen(TypedDict):
    alive: bool
    pid: int | None
    state: str | None  # running, draining, ..., exited; `dead (<state>)` for a launcher that died


class LauncherDoc(_LauncherSeen, total=False):
    """The launcher as `status --json` shows it (only `alive`, `pid` and `state` when it never started)."""

    started_at: float | None
    heartbeat_at: float | None
    ended_at: float | None
    stop_requested: str | None  # graceful | now
    stop_reason: str | None
    flapping: str | None
    exit_code: int | None
    cpu_s: float | None
    lend: bool | None
    drain: bool | None
    plan_file: str | None
    log_file: str | None


class _RunStatusCore(TypedDict):
    id: str
    group: str
    state: str
    attempt: int
    instance: str | None  # where its latest attempt ran, else the instance whose queue holds it
    queue: str | None
    mig_uuid: str | None
    elapsed_s: float | None
    peak_mib: int | None
    memory_mib: int
    instance_mib: int | None
    exit_code: int | None
    signal: int | None
    retry_at: float | None
    start_at: float | None
    end_at: float | None
    last_error: str | None


class RunStatus(_RunStatusCore, total=False):
    """One run as `status --json` shows it; `params` is added where its parameters are known."""

    params: dict[str, Any] | None


class StatusDoc(TypedDict):
    """`status --json`'s `runs` part (`status_doc`)."""

    state_dir: str
    sweep: str | None
    plan_file: str | None
    plan_sha256: str | None
    launcher: LauncherDoc
    counts: dict[str, int]
    total: int
    runs: list[RunStatus]


class ProcessDoc(TypedDict):
    pid: int
    used_memory_mib: int | None


class DeviceDoc(TypedDict):
    uuid: str
    gi: int
    ci: int
    memory_total_mib: int
    memory_used_mib: int
    processes: list[ProcessDoc]


class InstanceDoc(TypedDict):
    gi: int
    placement: str
    memory_mib: int | None


class GpuDoc(TypedDict):
    index: int
    uuid: str
    name: str
    mig_current: bool | None
    mig_pending: bool | None
    instances: list[InstanceDoc]
    devices: list[DeviceDoc]


class HostDoc(TypedDict):
    """`status --json`'s `host` part (`host_doc`)."""

    driver: str
    simulated: bool
    gpus: list[GpuDoc]


def find_state_dir(plan_file: str | Path | None, state_dir: str | Path | None) -> tuple[StateDir | None, list[str]]:
    """The state dir to show: `--state-dir`, else the plan's, else the only (or newest)
    `./runs/*/launch.db`. Returns (dir or None, notes). One another user could change is refused
    before anything in it is read (`state.require_trusted_state`)."""
    if state_dir or plan_file:
        sd = StateDir.of_file(plan_file or "", state_dir)
        require_trusted_state(sd, _launch_settings(plan_file) if plan_file else None)
        return sd, []
    found = sorted(Path.cwd().glob("runs/*/" + DB_NAME), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        return None, []
    newest = found[-1].parent
    require_trusted_state(newest)
    if len(found) == 1:
        return StateDir(newest), []
    return StateDir(newest), [f"{len(found)} launch states under ./runs; showing the newest, {newest} (pass PLAN or --state-dir to choose)"]


def _launch_settings(plan_file: str | Path) -> LaunchSettings | None:
    """The plan's launch settings (its `state_mode` says whether its group may write the state
    directory), from the file's head; None when it cannot be read (with `--state-dir` the plan
    file need not be there)."""
    try:
        return read_identity(plan_file)[1]
    except MigbenchError:
        return None


def run_params(sd: Path, ids: list[str], plan_file: str | Path | None) -> dict[str, dict[str, Any]]:
    """The parameters of runs `ids`: from `<state dir>/<run>/params.json` (written when a run first
    starts), and from the plan file for runs that never started (read only then: a 30,000-run plan
    is seconds of YAML). Runs whose parameters cannot be found are left out."""
    out: dict[str, dict[str, Any]] = {}
    missing = []
    for rid in ids:
        try:
            doc = json.loads(read_regular(sd / rid / "params.json"))
        except (OSError, ValueError):
            missing.append(rid)
            continue
        if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
            out[rid] = doc["params"]
        else:
            missing.append(rid)
    if missing and plan_file:
        from migbench.plan import Plan

        try:
            plan = Plan.load(plan_file)
        except (MigbenchError, OSError, ValueError):
            return out
        want = set(missing)
        out.update({r.id: dict(r.params) for r in plan.runs if r.id in want})
    return out


def open_state(sd: str | os.PathLike[str]) -> Store:
    """`launch.db` opened read-only, checked first: a missing, empty or damaged file is a
    MigbenchError saying so and how to recover (see `store.read_state`)."""
    return open_checked(sd)


def launcher_alive(sd: Path) -> bool:
    return bool(read_state(sd, lambda st: launcher_doc(st.launcher()))["alive"])


def launcher_doc(row: LauncherRow | None) -> LauncherDoc:
    if row is None:
        return {"alive": False, "pid": None, "state": None}
    alive = process_alive(row.pid, row.create_time) and row.state != "exited"
    return {
        "alive": alive,
        "pid": row.pid,
        "state": row.state if (alive or row.state == "exited") else f"dead ({row.state})",
        "started_at": row.started_at,
        "heartbeat_at": row.heartbeat_at,
        "ended_at": row.ended_at,
        "stop_requested": {0: None, 1: "graceful", 2: "now"}.get(row.stop_requested or 0, str(row.stop_requested)),
        "stop_reason": row.stop_reason,
        "flapping": row.flapping,
        "exit_code": row.exit_code,
        "cpu_s": row.cpu_s,
        "lend": None if row.lend is None else bool(row.lend),
        "drain": None if row.drain is None else bool(row.drain),
        "plan_file": row.plan_file,
        "log_file": row.log_file,
    }


SHOWN_FINISHED = 10
"""How many of the latest finished runs `status` lists without `--all`."""


def runs_to_show(doc: StatusDoc, all_runs: bool = False) -> tuple[list[RunStatus], str | None]:
    """The runs `status` lists and a line saying what it left out: every run with `all_runs`;
    otherwise the active ones, the failed ones, those waiting out a retry, and the latest finished."""
    runs = doc["runs"]
    if all_runs or len(runs) <= 3 * SHOWN_FINISHED:
        return runs, None
    keep = [r for r in runs if r["state"] not in ("queued", "succeeded") or r["retry_at"]]
    done = sorted((r for r in runs if r["state"] == "succeeded"), key=lambda r: (r["end_at"] or 0, r["id"]))[-SHOWN_FINISHED:]
    shown = keep + done
    left = len(runs) - len(shown)
    return shown, f"{left} more runs (queued, or finished earlier) not listed: `--all` lists every run" if left else None


def status_doc(sd: Path) -> StatusDoc:
    """`status --json`'s `runs` part: the launcher, counts per state, and every run."""
    rows, launcher, meta = read_state(sd, lambda st: (st.runs(), st.launcher(), {k: st.meta(k) for k in ("sweep", "plan_file", "plan_sha256")}))
    now = time.time()
    counts = {s: 0 for s in STATES}
    runs: list[RunStatus] = []
    for r in rows.values():
        counts[r.state] = counts.get(r.state, 0) + 1
        if r.start_at is None:
            elapsed = None
        elif r.state in ACTIVE_STATES:
            elapsed = now - r.start_at
        else:
            elapsed = (r.end_at or now) - r.start_at
        runs.append(
            {
                "id": r.id,
                "group": r.grp,
                "state": r.state,
                "attempt": r.attempt,
                "instance": key_of(r.instance if r.attempt else r.queue),
                "queue": key_of(r.queue),
                "mig_uuid": r.mig_uuid,
                "elapsed_s": None if elapsed is None else round(elapsed, 3),
                "peak_mib": r.peak_mib,
                "memory_mib": r.memory_mib,
                "instance_mib": r.instance_mib,
                "exit_code": r.exit_code,
                "signal": r.signal,
                "retry_at": r.not_before if r.state == "queued" else None,
                "start_at": r.start_at,
                "end_at": r.end_at,
                "last_error": r.last_error,
            }
        )
    return {
        "state_dir": str(sd),
        "sweep": meta["sweep"],
        "plan_file": meta["plan_file"],
        "plan_sha256": meta["plan_sha256"],
        "launcher": launcher_doc(launcher),
        "counts": counts,
        "total": len(rows),
        "runs": runs,
    }


def host_doc(host: HostState) -> HostDoc:
    """The host as JSON: GPUs, instances, MIG devices and their processes."""
    return {
        "driver": host.driver,
        "simulated": host.simulated,
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "mig_current": g.mig_current,
                "mig_pending": g.mig_pending,
                "instances": [{"gi": gi.id, "placement": str(gi.placement), "memory_mib": gi.memory_mib} for gi in g.instances],
                "devices": [
                    {
                        "uuid": d.uuid,
                        "gi": d.gi_id,
                        "ci": d.ci_id,
                        "memory_total_mib": d.memory_total_mib,
                        "memory_used_mib": d.memory_used_mib,
                        "processes": [{"pid": p.pid, "used_memory_mib": p.used_memory_mib} for p in d.processes],
                    }
                    for d in g.devices
                ],
            }
            for g in host.gpus
        ],
    }


def request_stop(sd: Path, *, now: bool = False) -> int:
    """Ask the launcher of `sd` to stop: graceful (SIGTERM the runs, wait the grace, SIGKILL) or,
    with `now`, SIGKILL the runs at once. Returns the launcher's PID. The PID comes from the state
    dir's launch.db: a state dir another user could change is refused (she would pick what root kills)."""
    require_trusted(sd, "state directory")
    row = read_state(sd, lambda st: st.launcher())
    if row is None or row.state == "exited" or not process_alive(row.pid, row.create_time):
        raise MigbenchError(f"no launcher is running for {sd}", hint=f"`migbench status` shows the runs; {start_command(Path(sd))} resumes them")
    try:
        conn = sqlite3.connect(str(db_path(sd)), timeout=10.0, isolation_level=None)
        try:
            conn.execute("UPDATE launcher SET stop_requested = MAX(COALESCE(stop_requested, 0), ?) WHERE id = 1", (2 if now else 1,))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise MigbenchError(f"cannot ask the launcher to stop through {db_path(sd)}: {exc}", hint=f"signal it: `kill {row.pid}`") from None
    try:
        os.kill(int(row.pid or 0), signal.SIGTERM)
    except ProcessLookupError:
        raise MigbenchError(f"the launcher (PID {row.pid}) exited meanwhile") from None
    return int(row.pid or 0)


def wait_stopped(sd: Path, pid: int, timeout_s: float) -> bool:
    """Wait until the launcher `pid` of `sd` has exited. True when it did within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = read_state(sd, lambda st: st.launcher())
        if row is None or row.pid != pid or row.state == "exited" or not process_alive(row.pid, row.create_time):
            return True
        time.sleep(0.1)
    return False


def log_file(sd: Path, run_id: str, *, attempt: int | None = None, stderr: bool = False) -> tuple[Path, int, str]:
    """The stdout (or stderr) log of a run's attempt (default: the latest). Returns (path, attempt,
    the run's state)."""
    check_run_id(run_id)
    rows = read_state(sd, lambda st: st.runs())
    row = rows.get(run_id)
    if row is None:
        close = sorted(r for r in rows if r.startswith(run_id.split("-")[0]))[:5]
        raise MigbenchError(
            f"no run {run_id!r} in {sd}",
            hint=("runs like it: " + ", ".join(close)) if close else "`migbench status` lists the runs",
        )
    n = attempt if attempt is not None else row.attempt
    if n < 1 or (attempt is not None and attempt > row.attempt):
        raise MigbenchError(
            f"run {run_id} has no attempt {n}" if row.attempt else f"run {run_id} has not started yet ({row.state})",
            hint=f"it has {row.attempt} attempt(s)" if row.attempt else "wait for it to start; `migbench status` shows the queue",
        )
    return attempt_dir(sd, run_id, n) / ("stderr.log" if stderr else "stdout.log"), n, row.state


def run_state(sd: Path, run_id: str) -> tuple[str, int]:
    row = read_state(sd, lambda st: st.runs().get(run_id))
    return (row.state, row.attempt) if row else ("missing", 0)
