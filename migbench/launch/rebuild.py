"""The run directories as the launcher's second record: when `launch.db` is missing, empty, damaged or
behind them, the runs' states are rebuilt from their attempt directories, so a finished run is never
started again and a recorded attempt is never overwritten.

Each `<run id>/attempt-<n>/` says: `cmd.json` (where it ran), `child.json` (its run started),
`exit.json` (how it ended), `stop.json` (the launcher signalled it to stop: an interrupted run,
resumed, not a failed one). A damaged database is moved aside (`launch.db.damaged-<time>`), never
deleted.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE
from migbench.launch.procs import read_json
from migbench.launch.spec import Outcome, attempt_started, attempt_stopped, outcome_of, run_dir
from migbench.launch.store import NotRegularDatabase, RunRow, Store, db_path, instance_ref, is_corrupt, is_full, not_regular_error
from migbench.types import InstanceRef

_ATTEMPT_RE = re.compile(r"attempt-([1-9][0-9]{0,8})")


@dataclass(frozen=True)
class DiskAttempt:
    n: int
    started: bool  # its run started (child.json or exit.json)
    outcome: Outcome | None
    instance: InstanceRef | None  # None: not recorded (or not an instance key)
    mig_uuid: str | None
    started_at: float | None
    stopped: bool = False  # a stop signalled it (the launcher's record, or signals the shim forwarded), not a failure of the run


def scan_attempts(state_dir: str | os.PathLike[str], run_id: str) -> list[DiskAttempt]:
    """The attempts recorded in a run's directory, by number."""
    rdir = run_dir(state_dir, run_id)
    try:
        names = os.listdir(rdir)
    except OSError:
        return []
    out = []
    for name in names:
        m = _ATTEMPT_RE.fullmatch(name)
        if not m:
            continue
        adir = rdir / name
        cmd = read_json(adir / "cmd.json") or {}
        child = read_json(adir / "child.json") or {}
        started_at = child.get("started_at")
        ended = read_json(adir / "exit.json") or {}
        out.append(
            DiskAttempt(
                int(m.group(1)),
                attempt_started(adir),
                outcome_of(read_json(adir / "exit.json")),
                _instance(cmd.get("instance")),
                str(cmd["mig_uuid"]) if cmd.get("mig_uuid") else None,
                float(started_at) if isinstance(started_at, (int, float)) else None,
                bool(ended.get("forwarded_signals")) or attempt_stopped(adir),
            )
        )
    return sorted(out, key=lambda d: d.n)


def _instance(value: object) -> InstanceRef | None:
    """The instance key a `cmd.json` records, parsed (None when absent or not a key)."""
    try:
        return instance_ref(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def rebuild_row(row: RunRow, disk: list[DiskAttempt], retries: int) -> RunRow:
    """`row` brought up to what the run's directory records (its last attempt decides the state;
    an attempt without an outcome is left `starting`, for recovery to adopt or re-queue)."""
    last = disk[-1]
    row.attempt = last.n
    row.failures = sum(1 for d in disk if d.outcome is not None and d.outcome.returncode != 0 and not d.stopped)
    row.instance = last.instance or row.instance
    row.mig_uuid = last.mig_uuid or row.mig_uuid
    row.start_at = last.started_at or row.start_at
    row.shim_pid = row.shim_create_time = row.child_pid = row.child_pgid = None
    row.not_before = None
    res = last.outcome
    if not last.started or res is None:
        row.state, row.end_at = "starting", None
        row.last_error = f"attempt {last.n}: rebuilt from its directory (no outcome recorded)"
        return row
    row.end_at, row.exit_code, row.signal = res.ended_at, res.returncode, res.signal
    if res.returncode == 0:
        row.state, row.last_error = "succeeded", None
    elif last.stopped:
        row.state, row.last_error = "interrupted", f"attempt {last.n}: stopped (rebuilt from its directory)"
    elif row.failures > retries:
        row.state = "oom" if res.oom else "failed"
        row.last_error = f"attempt {last.n}: exit code {res.returncode} (rebuilt from its directory)"
    else:
        row.state = "queued"
        row.last_error = f"attempt {last.n}: exit code {res.returncode} (rebuilt from its directory); retried"
    return row


def open_store(sd: str | os.PathLike[str]) -> tuple[Store, str | None]:
    """Open (or create) `launch.db` for the launcher. A damaged file is moved aside and a fresh one
    created (the caller rebuilds the runs from their directories); returns the note saying so."""
    db = db_path(sd)
    try:
        return Store.create(db), None
    except NotRegularDatabase as exc:
        raise not_regular_error(exc) from None
    except sqlite3.Error as exc:
        if is_full(exc):
            raise _no_space(db) from None
        if not is_corrupt(exc):
            raise MigbenchError(f"cannot open {db}: {exc}", hint="check the file and its directory") from None
        why = str(exc)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise _no_space(db) from None
        raise MigbenchError(f"cannot create {db}: {os_reason(exc)}", hint="check the permissions of the state directory") from None
    aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(db) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        return Store.create(db), f"{db} was damaged ({why}): moved it to {aside.name}; the runs' states are rebuilt from their directories"
    except (OSError, sqlite3.Error) as exc:
        raise MigbenchError(
            f"{db} is damaged ({why}) and could not be replaced: {exc}",
            hint=f"move it aside by hand (`mv {db} {aside}`) and launch again: the runs' states are rebuilt from their directories",
        ) from None


def _no_space(db: Path) -> MigbenchError:
    return MigbenchError(
        f"no space left to write {db}",
        hint="free space on that file system (or pass --state-dir on another one), then launch again; nothing was started",
    )
