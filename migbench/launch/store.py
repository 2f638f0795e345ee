"""The launcher's state: one sqlite file, `<state dir>/launch.db` (WAL, every change in a transaction).

Tables:

- `meta`: schema version, the plan file's sha256 and path, the sweep name.
- `runs`: one row per run of the plan (its current state; see `RunRow`).
- `attempts`: one row per start of a run (history: where, when, how it ended, peak memory).
- `launcher`: one row, the launcher that owns (or last owned) the state: PID, create time, start
  time, heartbeat, stop requests, the flapping guard's reason, its exit code and CPU seconds.

Only the launcher writes `runs` and `attempts`; `migbench stop` writes `launcher.stop_requested`.
Readers (`status`, `logs`) open the file read-only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Union

from migbench.fsutil import NOT_REGULAR_HINT, NotRegularFile, create_private, open_regular
from migbench.state import DB_NAME as DB_NAME  # the state directory's file names live in migbench.state
from migbench.types import InstanceRef, Placement

SCHEMA_VERSION = 1

STATES = ("queued", "starting", "running", "succeeded", "failed", "oom", "interrupted", "abandoned", "unknown")
"""`unknown`: the run started and ended (or vanished) with no record of how: not run again unless the
user asks (`launch --resume-unknown`)."""
ACTIVE_STATES = ("starting", "running")
FINAL_STATES = ("succeeded", "failed", "oom", "abandoned")

_STATE_CHECK = ", ".join(f"'{s}'" for s in STATES)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    home TEXT,
    queue TEXT,
    rank INTEGER NOT NULL DEFAULT 0,
    instance TEXT,
    mig_uuid TEXT,
    memory_mib INTEGER NOT NULL DEFAULT 0,
    need_mib INTEGER NOT NULL DEFAULT 0,
    shim_pid INTEGER,
    shim_create_time REAL,
    child_pid INTEGER,
    child_pgid INTEGER,
    queued_at REAL,
    start_at REAL,
    end_at REAL,
    not_before REAL,
    exit_code INTEGER,
    signal INTEGER,
    peak_mib INTEGER,
    instance_mib INTEGER,
    last_error TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    instance TEXT,
    mig_uuid TEXT,
    start_at REAL,
    end_at REAL,
    outcome TEXT,
    exit_code INTEGER,
    signal INTEGER,
    peak_mib INTEGER,
    error TEXT,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE IF NOT EXISTS launcher (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    create_time REAL,
    started_at REAL,
    heartbeat_at REAL,
    ended_at REAL,
    state TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    stop_reason TEXT,
    flapping TEXT,
    exit_code INTEGER,
    cpu_s REAL,
    lend INTEGER,
    drain INTEGER,
    plan_file TEXT,
    log_file TEXT
);
"""


class Anywhere(Enum):
    """The queue of a bench run no instance holds yet: any instance the bench finds or cuts for it
    (a decision, `launch.living.decide`, places it). Stored as `*`."""

    ANYWHERE = "*"

    def __str__(self) -> str:
        return self.value

    @property
    def key(self) -> str:
        """Its text, as an instance's key is (`InstanceRef.key`)."""
        return self.value


ANYWHERE = Anywhere.ANYWHERE

Queue = Union[InstanceRef, Anywhere]
"""Where a queued run waits: one instance's queue, or (a bench run) `ANYWHERE`."""


def key_of(ref: Queue | None) -> str | None:
    """An instance's key (or `*`), as the launcher's queues and registers key instances."""
    return None if ref is None else ref.key


@dataclass
class RunRow:
    """One run's current state. Times are Unix seconds; memory in MiB.

    `home` is the plan's instance (None: a bench run, placed by decisions); `queue` the instance
    whose queue holds it (its home, or a larger instance after an OOM; `ANYWHERE` for a bench run
    not yet placed; None when none can take it); `instance` / `mig_uuid` where the current or last attempt runs;
    `need_mib` the memory it is scheduled with (the plan's, raised after an OOM); `rank` orders a
    queue (the plan's wave order; an OOM retry jumps ahead); `not_before` delays a retry (backoff);
    `failures` counts failed attempts (interruptions and OOM moves do not count)."""

    id: str
    ord: int
    grp: str = ""
    state: str = "queued"
    attempt: int = 0
    failures: int = 0
    home: InstanceRef | None = None
    queue: Queue | None = None
    rank: int = 0
    instance: InstanceRef | None = None
    mig_uuid: str | None = None
    memory_mib: int = 0
    need_mib: int = 0
    shim_pid: int | None = None
    shim_create_time: float | None = None
    child_pid: int | None = None
    child_pgid: int | None = None
    queued_at: float | None = None
    start_at: float | None = None
    end_at: float | None = None
    not_before: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_mib: int | None = None
    instance_mib: int | None = None
    last_error: str | None = None
    updated_at: float | None = None


RUN_COLUMNS = tuple(f.name for f in fields(RunRow))
_HOME, _QUEUE, _INSTANCE = (RUN_COLUMNS.index(c) for c in ("home", "queue", "instance"))


@lru_cache(maxsize=4096)
def instance_ref(text: str) -> InstanceRef:
    """A key's text `<gpu>:<profile>@<start>` parsed once per text (a plan has tens of instances and
    may have 30,000 rows; `InstanceRef` is frozen: the rows share it). Any profile name the catalogue
    allows is taken; the text must be the key's own form, so that a row saved again stores the same."""
    gpu, _, rest = text.partition(":")
    profile, _, start = rest.rpartition("@")
    plain = profile.isprintable() and not any(c.isspace() for c in profile)  # a control character reaches the terminal
    ref = InstanceRef(int(gpu), Placement(profile, int(start))) if gpu.isdigit() and profile and plain and start.isdigit() else None
    if ref is None or str(ref) != text:
        shown = repr(text) if len(text) <= 80 else f"{text[:80]!r}... ({len(text)} characters)"
        raise ValueError(f"{shown} is not an instance key (gpu:profile@start, e.g. 0:3g.40gb@4)")
    return ref


def _ref(text: str | None) -> InstanceRef | None:
    return None if text is None else instance_ref(text)


def _queue(text: str | None) -> Queue | None:
    return ANYWHERE if text == ANYWHERE.value else _ref(text)


def _row(values: tuple[Any, ...]) -> RunRow:
    """A `runs` row as read: its instance keys (text in the file) parsed, once, here. A key that
    does not parse is a damaged file (`is_corrupt`), as a missing column is."""
    row = RunRow(*values)
    try:
        row.home, row.queue, row.instance = _ref(values[_HOME]), _queue(values[_QUEUE]), _ref(values[_INSTANCE])
    except (TypeError, ValueError) as exc:
        raise sqlite3.DatabaseError(f"malformed runs row {row.id!r}: {exc}") from None
    return row


def _column(row: RunRow, name: str) -> Any:
    """A `runs` column's value as stored: instance keys and `ANYWHERE` as their text."""
    v = getattr(row, name)
    return str(v) if isinstance(v, (InstanceRef, Anywhere)) else v


class AttemptRow(TypedDict):
    """One attempt as the `attempts` table holds it (`Store.attempts`). Times are Unix seconds."""

    run_id: str
    attempt: int
    instance: str | None
    mig_uuid: str | None
    start_at: float | None
    end_at: float | None
    outcome: str | None
    exit_code: int | None
    signal: int | None
    peak_mib: int | None
    error: str | None


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended (`outcome`: succeeded | failed | oom | interrupted | lost), taken when
    it ended: the run's row moves on (a retry may start before the next write)."""

    run_id: str
    attempt: int
    end_at: float | None
    outcome: str
    exit_code: int | None
    signal: int | None
    peak_mib: int | None
    error: str | None

    @classmethod
    def of(cls, row: RunRow, outcome: str, error: str | None) -> AttemptEnd:
        return cls(row.id, row.attempt, row.end_at, outcome, row.exit_code, row.signal, row.peak_mib, error)


@dataclass
class LauncherRow:
    pid: int | None = None
    create_time: float | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    ended_at: float | None = None
    state: str | None = None  # running | draining | stopping | flapping | exited
    stop_requested: int = 0  # 0 no, 1 graceful (SIGTERM, grace, SIGKILL), 2 now (SIGKILL)
    stop_reason: str | None = None
    flapping: str | None = None
    exit_code: int | None = None
    cpu_s: float | None = None
    lend: int | None = None
    drain: int | None = None
    plan_file: str | None = None
    log_file: str | None = None


LAUNCHER_COLUMNS = tuple(f.name for f in fields(LauncherRow))


class Store:
    """A connection to `launch.db`. `transaction()` wraps writes (BEGIN IMMEDIATE ... COMMIT)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool):
        self.path = path
        self.conn = conn
        self.readonly = readonly

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> Store:
        """Open (creating if needed) for writing: WAL journal, NORMAL sync (durable across a crash of
        the launcher; a power cut may lose the last transactions, never corrupt the file)."""
        p = Path(path)
        if not p.exists():  # created with the state mode; sqlite gives its -wal/-shm files the same
            os.close(create_private(p, os.O_WRONLY))
        require_regular_db(p)
        conn = sqlite3.connect(str(p), timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            check_integrity(conn)
        except sqlite3.Error:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        st = cls(p, conn, False)
        with st.transaction():
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            _widen_states(conn)
            if st.meta("schema") is None:
                st.set_meta("schema", str(SCHEMA_VERSION))
                st.set_meta("created_at", repr(time.time()))
        return st

    @classmethod
    def open_readonly(cls, path: str | Path) -> Store:
        p = Path(path)
        require_regular_db(p)
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        return cls(p, conn, True)

    def close(self, *, checkpoint: bool = False) -> None:
        if checkpoint and not self.readonly:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- runs ------------------------------------------------------------------------------------
    def runs(self) -> dict[str, RunRow]:
        """Every run, in plan order."""
        cur = self.conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY ord, id")
        return {r[0]: _row(r) for r in cur.fetchall()}

    def save_runs(self, rows: Iterable[RunRow]) -> int:
        """Insert or replace rows (call inside `transaction()`). Returns how many."""
        now = time.time()
        n = 0
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join("?" for _ in RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c != "id")
        sql = f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}"
        for row in rows:
            row.updated_at = now
            self.conn.execute(sql, tuple(_column(row, c) for c in RUN_COLUMNS))
            n += 1
        return n

    # -- attempts --------------------------------------------------------------------------------
    def begin_attempt(self, row: RunRow) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO attempts (run_id, attempt, instance, mig_uuid, start_at, outcome) VALUES (?, ?, ?, ?, ?, ?)",
            (row.id, row.attempt, _column(row, "instance"), row.mig_uuid, row.start_at, "running"),
        )

    def record_attempt(self, run_id: str, attempt: int, instance: InstanceRef | None, mig_uuid: str | None, start_at: float | None, res: Any) -> None:
        """An attempt known only from its directory (a rebuild): `res` is its `spec.Outcome` or None."""
        outcome = "unknown" if res is None else ("succeeded" if res.returncode == 0 else "oom" if res.oom else "failed")
        self.conn.execute(
            "INSERT OR REPLACE INTO attempts (run_id, attempt, instance, mig_uuid, start_at, end_at, outcome, exit_code, signal, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                attempt,
                key_of(instance),
                mig_uuid,
                start_at,
                None if res is None else res.ended_at,
                outcome,
                None if res is None else res.returncode,
                None if res is None else res.signal,
                "rebuilt from the run directory",
            ),
        )

    def end_attempt(self, end: AttemptEnd) -> None:
        self.conn.execute(
            "UPDATE attempts SET end_at = ?, outcome = ?, exit_code = ?, signal = ?, peak_mib = ?, error = ? WHERE run_id = ? AND attempt = ?",
            (end.end_at, end.outcome, end.exit_code, end.signal, end.peak_mib, end.error, end.run_id, end.attempt),
        )

    def attempts(self, run_id: str | None = None) -> list[AttemptRow]:
        q = "SELECT run_id, attempt, instance, mig_uuid, start_at, end_at, outcome, exit_code, signal, peak_mib, error FROM attempts"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            q += " WHERE run_id = ?"
            args = (run_id,)
        q += " ORDER BY start_at, run_id, attempt"
        return [
            AttemptRow(
                run_id=r[0],
                attempt=r[1],
                instance=r[2],
                mig_uuid=r[3],
                start_at=r[4],
                end_at=r[5],
                outcome=r[6],
                exit_code=r[7],
                signal=r[8],
                peak_mib=r[9],
                error=r[10],
            )
            for r in self.conn.execute(q, args).fetchall()
        ]

    # -- launcher --------------------------------------------------------------------------------
    def launcher(self) -> LauncherRow | None:
        row = self.conn.execute(f"SELECT {', '.join(LAUNCHER_COLUMNS)} FROM launcher WHERE id = 1").fetchone()
        return None if row is None else LauncherRow(*row)

    def set_launcher(self, **values: Any) -> None:
        """Update the launcher row (creating it); call inside `transaction()`."""
        bad = [k for k in values if k not in LAUNCHER_COLUMNS]
        if bad:
            raise KeyError(bad)
        self.conn.execute("INSERT OR IGNORE INTO launcher (id) VALUES (1)")
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            self.conn.execute(f"UPDATE launcher SET {sets} WHERE id = 1", tuple(values.values()))

    def replace_launcher(self, row: LauncherRow) -> None:
        self.conn.execute("DELETE FROM launcher")
        self.conn.execute("INSERT INTO launcher (id) VALUES (1)")
        self.set_launcher(**asdict(row))


def _widen_states(conn: sqlite3.Connection) -> None:
    """A `runs` table made before a state was added (its CHECK names fewer states) is rebuilt with
    today's CHECK, rows kept (call inside a transaction)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
    if row is None or all(f"'{s}'" in str(row[0]) for s in STATES):
        return
    conn.execute("ALTER TABLE runs RENAME TO runs_before_widening")
    conn.execute(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS runs") :].split(";", 1)[0])
    cols = ", ".join(RUN_COLUMNS)
    conn.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM runs_before_widening")
    conn.execute("DROP TABLE runs_before_widening")


def db_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / DB_NAME


def _errname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


class NotRegularDatabase(sqlite3.OperationalError):
    """What `Store` raises where a named pipe, socket or device is where `launch.db` belongs: sqlite
    would wait in open() or read() for a writer forever."""


def require_regular_db(db: Path) -> None:
    """Raise `NotRegularDatabase` unless `db` is a regular file or missing (checked through a
    descriptor opened with O_NONBLOCK, `fsutil.open_regular`: a pipe is never waited on)."""
    try:
        os.close(open_regular(db))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise NotRegularDatabase(f"{db}: it is a directory, not a regular file") from None
    except NotRegularFile as exc:
        raise NotRegularDatabase(f"{db}: {exc.strerror}") from None
    except OSError:
        return  # unreadable: sqlite says why


def not_regular_error(exc: NotRegularDatabase) -> Exception:
    """`exc` said as an error, with the hint to remove what is there."""
    from migbench.errors import MigbenchError

    return MigbenchError(f"cannot open the launch state {exc}", hint=NOT_REGULAR_HINT)


def is_corrupt(exc: sqlite3.Error) -> bool:
    """The file is not a usable launch database (damaged, not sqlite, or without its tables)."""
    text = str(exc).lower()
    return _errname(exc).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
        m in text for m in ("malformed", "not a database", "no such table", "no such column")
    )


def is_full(exc: sqlite3.Error) -> bool:
    """The disk (or quota) is full."""
    return _errname(exc).startswith("SQLITE_FULL") or "disk is full" in str(exc).lower()


def check_integrity(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError unless `PRAGMA quick_check` finds the file sound."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if [r[0] for r in rows] != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed ({rows[0][0] if rows else 'no answer'})")
    check_keys(conn)


def check_keys(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError (a damaged file, `is_corrupt`) where a `runs` row's instance key
    does not parse: found when the file is opened, not half-way through a command that read it."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is None:
        return
    for col, parse in (("home", _ref), ("queue", _queue), ("instance", _ref)):
        for (text,) in conn.execute(f"SELECT DISTINCT {col} FROM runs").fetchall():
            try:
                parse(text)
            except (TypeError, ValueError) as exc:
                (rid,) = conn.execute(f"SELECT id FROM runs WHERE {col} IS ? LIMIT 1", (text,)).fetchone()
                raise sqlite3.DatabaseError(f"malformed runs row {rid!r}: {exc}") from None


T = TypeVar("T")


def start_command(sd: Path) -> str:
    """The command that starts (or resumes) the launcher of the state dir `sd`, for hints:
    `migbench launch PLAN`; for the host's bench (`<bench dir>/runs/bench/`, beside its
    bench.plan.yaml) `migbench submit SWEEP`, which starts the bench again (`launch` of the bench
    plan is refused: the plan changed with each re-cut)."""
    from migbench.launch.bench import BENCH_NAME, bench_plan_path

    if sd.name == BENCH_NAME and bench_plan_path(sd.parent.parent).is_file():
        return "`migbench submit SWEEP` (which starts the bench again)"
    return "`migbench launch PLAN`"


def _recover(db: Path) -> str:
    """How to recover a damaged or empty launch.db: the next start of its launcher moves it aside."""
    return f"the next {start_command(db.parent)} moves it aside and rebuilds the runs' states from their directories (finished runs are not run again)"


def _unreadable(db: Path, exc: sqlite3.Error) -> Exception:
    from migbench.errors import MigbenchError

    try:
        empty = db.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return MigbenchError(f"{db} is empty (a launcher died while creating it, or it was truncated)", hint=_recover(db))
    if is_corrupt(exc):
        return MigbenchError(f"{db} is damaged: {exc}", hint=_recover(db))
    return MigbenchError(f"cannot read {db}: {exc}", hint="try again; if it persists, " + _recover(db))


def open_checked(sd: str | os.PathLike[str]) -> Store:
    """`<sd>/launch.db` opened read-only after a quick integrity check; a missing, empty or damaged
    file is a MigbenchError that says so and how to recover (never a traceback)."""
    from migbench.errors import MigbenchError

    db = db_path(sd)
    if not db.exists():
        raise MigbenchError(f"no launch state in {sd} (no {db.name})", hint=f"start one with {start_command(Path(sd))}")
    try:
        st = Store.open_readonly(db)
    except NotRegularDatabase as exc:
        raise not_regular_error(exc) from None
    except sqlite3.Error as exc:
        raise MigbenchError(f"cannot open {db}: {exc}", hint="check the file's permissions") from None
    try:
        check_integrity(st.conn)
        st.conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        st.conn.execute("SELECT 1 FROM launcher LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        st.close()
        raise _unreadable(db, exc) from None
    return st


def read_state(sd: str | os.PathLike[str], fn: Callable[[Store], T]) -> T:
    """`fn(store)` on `<sd>/launch.db` opened read-only (`open_checked`), its errors said as such."""
    st = open_checked(sd)
    try:
        return fn(st)
    except sqlite3.Error as exc:
        raise _unreadable(db_path(sd), exc) from None
    finally:
        st.close()
