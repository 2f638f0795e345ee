"""The read side of a launch's memory history: every attempt's peak, where it ran and how it ended.

The launcher samples each attempt's peak device memory (NVML, per process) into `launch.db`;
`read_history(state_dir)` gives it back, one `AttemptRecord` per attempt, for the plans that follow
(`migbench.footprints`) and for reports. It opens the database read-only and changes nothing.

An attempt's instance size comes from `bindings.json` (the MIG device's memory the host reported
at apply), else from the run's row (its latest attempt), else from the launcher's OOM message.
A run that ran out of memory carries `oom_floor_mib`: the memory the launcher moved it on with
(its observed peak, or one MiB more than the instance it died alone on), a lower bound on its need.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.errors import MigbenchError
from migbench.fsutil import read_regular
from migbench.launch.store import Store, key_of
from migbench.state import BINDINGS_NAME, DB_NAME

_INSTANCE_MIB_RE = re.compile(r"\((\d+) MiB instance")


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of one run. Times are Unix seconds, memory MiB. `outcome` is succeeded, failed,
    oom, interrupted, lost or running; `peak_mib` is None when no sample saw the run."""

    run_id: str
    group: str
    attempt: int
    outcome: str | None
    peak_mib: int | None
    instance: str | None
    instance_mib: int | None
    planned_mib: int
    start_at: float | None
    end_at: float | None
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.start_at is None or self.end_at is None:
            return None
        return max(0.0, self.end_at - self.start_at)


@dataclass(frozen=True)
class LaunchHistory:
    """A state directory's attempts, in start order, and each OOM'd run's lower bound."""

    state_dir: Path
    sweep: str | None
    attempts: tuple[AttemptRecord, ...]
    oom_floor_mib: dict[str, int]

    def by_run(self) -> dict[str, list[AttemptRecord]]:
        out: dict[str, list[AttemptRecord]] = {}
        for a in self.attempts:
            out.setdefault(a.run_id, []).append(a)
        return out

    def succeeded_peaks(self) -> Iterator[AttemptRecord]:
        """Attempts that ran to the end and were seen on the device: a whole run's peak."""
        return (a for a in self.attempts if a.outcome == "succeeded" and a.peak_mib)


def history_db(path: str | Path) -> Path:
    """`launch.db` of a state directory (or the database itself)."""
    p = Path(path)
    return p if p.suffix == ".db" else p / DB_NAME


def read_history(path: str | Path) -> LaunchHistory | None:
    """The attempts recorded in a state directory's `launch.db` (or that file); None when there is none.
    A database that cannot be read is an error naming it."""
    db = history_db(path)
    if not db.is_file():
        return None
    sd = db.parent
    try:
        st = Store.open_readonly(db)
    except sqlite3.Error as exc:
        raise _unreadable(db, exc) from None
    try:
        rows = {r.id: r for r in st.runs().values()}
        attempts = st.attempts()
        sweep = st.meta("sweep")
    except sqlite3.Error as exc:
        raise _unreadable(db, exc) from None
    finally:
        st.close()
    bound = _bound_memory(sd)
    out = []
    oom_runs: set[str] = set()
    floor: dict[str, int] = {}
    for a in attempts:
        row = rows.get(a["run_id"])
        key = a["instance"]
        inst_mib = bound.get(key or "")
        if inst_mib is None and row is not None and row.attempt == a["attempt"] and key_of(row.instance) == key:
            inst_mib = row.instance_mib
        if inst_mib is None and a["error"]:
            m = _INSTANCE_MIB_RE.search(str(a["error"]))
            inst_mib = int(m.group(1)) if m else None
        rec = AttemptRecord(
            run_id=str(a["run_id"]),
            group=row.grp if row is not None else "",
            attempt=int(a["attempt"]),
            outcome=a["outcome"],
            peak_mib=None if a["peak_mib"] is None else int(a["peak_mib"]),
            instance=key,
            instance_mib=None if inst_mib is None else int(inst_mib),
            planned_mib=row.memory_mib if row is not None else 0,
            start_at=a["start_at"],
            end_at=a["end_at"],
            error=a["error"],
        )
        out.append(rec)
        if rec.outcome == "oom":
            oom_runs.add(rec.run_id)
            floor[rec.run_id] = max(floor.get(rec.run_id, 0), rec.peak_mib or 0)
    for rid in oom_runs:
        row = rows.get(rid)
        if row is not None and row.need_mib > row.memory_mib:  # the launcher raised it after the OOM
            floor[rid] = max(floor[rid], row.need_mib)
    return LaunchHistory(sd, sweep, tuple(out), {k: v for k, v in floor.items() if v > 0})


def _bound_memory(state_dir: Path) -> dict[str, int]:
    """Each bound instance's memory (MiB) as the host reported it at apply, from bindings.json."""
    try:
        doc: Any = json.loads(read_regular(state_dir / BINDINGS_NAME))
    except (OSError, ValueError):
        return {}
    out = {}
    for key, b in (doc.get("instances") or {}).items() if isinstance(doc, dict) else ():
        if isinstance(b, dict) and isinstance(b.get("memory_mib"), int):
            out[str(key)] = int(b["memory_mib"])
    return out


def _unreadable(db: Path, exc: Exception) -> MigbenchError:
    return MigbenchError(
        f"cannot read the launch history {db}: {exc}",
        hint="is it a migbench launch.db? pass another --history, or --no-history to plan without it",
    )
