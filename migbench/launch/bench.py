"""The host's bench (issue 21): one launcher per host that runs every submitted sweep's runs, starts
each where the living scheduler (`launch.living`) decides, and re-cuts idle slices as work arrives
and GPUs drain.

On disk, in the bench directory (`bench_dir`: `--bench-dir`, `$MIGBENCH_BENCH_DIR`, the simulated
host's `bench/`, else `~/.local/state/migbench/bench`):

- `bench.plan.yaml`: the bench plan. Its instances are the host's layout as the bench last applied
  it; its runs are every submitted run (id `<sweep>.<run id>`, each with its own environment,
  workdir, retries and timeout as its sweep gave them), placed by no plan: the bench places them
  when they start. Written by the bench launcher only (and by the first `submit`, before it starts).
- `inbox/`: each `migbench submit` writes its sweep's runs there (`<ns>-<sweep>.plan.yaml`, 0600
  when it carries `env:` values); the bench launcher adopts them in name order (`merge`) and removes
  them. A sweep submitted again keeps its finished and running runs; its new runs are added, and its
  runs no longer in the sweep are never started again: cancelled unless they run now (those are left
  to end, `launch.db`'s meta `withdrawn` names them) or have ended for good.
- `runs/bench/`: the launch state (launch.db, run directories, bindings), as any launch's.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from migbench.backend.select import sim_dir
from migbench.duration import DurationModel
from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import describe_user, read_regular, state_file_mode, trusted_uids, untrusted_reason, write_bytes_atomic, write_text_atomic
from migbench.pidlock import PidLock
from migbench.plan import MAX_PLAN_BYTES, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, parse_document
from migbench.sweep.model import LaunchSettings

BENCH_STATUS = "BENCH"
"""The solver status of a bench plan (and of a submission): no solve, runs placed when they start."""
BENCH_NAME = "bench"
BENCH_ENV = "MIGBENCH_BENCH_DIR"
STARTED = ("starting", "running", "succeeded", "failed", "oom", "timeout", "interrupted", "unknown", "lost")
ACTIVE = ("starting", "running")
RESUMABLE = ("interrupted",)
"""Started states a later launcher starts again (`launch.outcomes`' recovery re-queues them)."""


def bench_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where this host's bench lives (see the module's docstring)."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(BENCH_ENV)
    if env:
        return Path(env).expanduser().resolve()
    sim = sim_dir()
    if sim is not None:
        return sim / "bench"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "migbench" / "bench"


class BenchStartLock(PidLock):
    """Held (blocking) by whoever starts the bench launcher (`workflows.start_bench`): two submits
    never both bring the bench plan to the host and start a launcher."""

    error_type = MigbenchError

    def busy_error(self) -> MigbenchError:  # pragma: no cover - taken blocking
        return MigbenchError(f"the bench's start lock {self.path} is busy (PID {self.holder()})")


def start_lock(d: Path) -> BenchStartLock:
    return BenchStartLock(d / "start.lock")


def bench_plan_path(d: Path) -> Path:
    return d / "bench.plan.yaml"


def inbox_dir(d: Path) -> Path:
    return d / "inbox"


def is_bench(plan: Plan) -> bool:
    return plan.solver.status == BENCH_STATUS


def bench_id(sweep: str, run_id: str) -> str:
    return f"{sweep}.{run_id}"


def of_sweep(rid: str, sweep: str) -> bool:
    """Whether the bench run `rid` is one of `sweep`'s: `<sweep>.<run id>`, a run id having no dot
    (a sweep's name may: the runs of `a.b` are not those of `a`)."""
    return rid.startswith(f"{sweep}.") and "." not in rid[len(sweep) + 1 :]


def sweeps_of(plan: Plan) -> list[str]:
    """The sweeps a bench plan holds runs of (a run id has no dot; a sweep's name may)."""
    return sorted({r.id.rsplit(".", 1)[0] for r in plan.runs if "." in r.id})


def sweep_view(plan: Plan, sweep: str) -> Plan:
    """The bench plan with one sweep's runs only (`report --sweep`, `simulate --sweep`): the host's
    layouts stay whole, since the re-cuts are the host's."""
    if not is_bench(plan):
        what = f"{plan.path or 'the plan'} is a plan of sweep {plan.name}, not a bench plan"
        raise MigbenchError(f"{what}: --sweep picks one sweep of a bench", hint="leave --sweep out")
    runs = [r for r in plan.runs if of_sweep(r.id, sweep)]
    if not runs:
        raise MigbenchError(f"the bench has no run of a sweep {sweep!r}", hint=f"its sweeps: {', '.join(sweeps_of(plan)) or 'none yet'}")
    return replace(plan, runs=runs)


BENCH_WIDE = ("backoff_s", "stop_grace_s", "flapping_window_s", "flapping_max", "log_dir", "env_passthrough", "state_mode")
"""The launch settings the bench launcher applies to every run, whatever sweep it came in (a run's
retries, env, workdir and timeout are its own sweep's: `submission`)."""


def bench_wide_differences(bench: LaunchSettings, sweep: LaunchSettings) -> list[str]:
    """The bench-wide launch settings (`BENCH_WIDE`) in which a submitted sweep differs from the
    bench: the bench keeps its own, which `submit` says."""
    mine, theirs = sweep.to_dict(), bench.to_dict()
    return [f"{k} {mine.get(k, 'unset')} (the bench's: {theirs.get(k, 'unset')})" for k in BENCH_WIDE if mine.get(k) != theirs.get(k)]


def _solver() -> SolverInfo:
    return SolverInfo(BENCH_STATUS, "", 0.0, 0.0, 0.0)


def submission(
    name: str,
    sweep_file: str | None,
    sweep_sha256: str,
    fleet: Sequence[PlanGpu],
    runs: Sequence[PlanRun],
    launch: LaunchSettings,
    plan_dir: Path,
    duration_model: DurationModel,
) -> Plan:
    """A sweep's runs as the bench takes them: ids `<sweep>.<id>`, the sweep's `launch.env` folded
    into each run's env, workdirs absolute (from the sweep's directory), retries and timeouts
    explicit (the bench's own launch settings do not apply to them)."""
    out = []
    for r in runs:
        wd = Path(r.workdir).expanduser()
        out.append(
            replace(
                r,
                id=bench_id(name, r.id),
                at=None,
                finished=None,
                env={**launch.env, **r.env},
                workdir=str(wd if wd.is_absolute() else (plan_dir / wd).resolve()),
                retries=launch.retries if r.retries is None else r.retries,
            )
        )
    return Plan(
        name=name,
        sweep_file=sweep_file,
        sweep_sha256=sweep_sha256,
        fleet=list(fleet),
        instances=[],
        runs=out,
        unplaced=[],
        solver=_solver(),
        duration_model=duration_model,
        launch=replace(launch, env={}),
        models={},
    )


def empty_bench(fleet: Sequence[PlanGpu], instances: Sequence[PlanInstance], launch: LaunchSettings, duration_model: DurationModel) -> Plan:
    """A bench with no run yet on the host's instances as they are (`instances`)."""
    return Plan(
        name=BENCH_NAME,
        sweep_file=None,
        sweep_sha256="",
        fleet=list(fleet),
        instances=[replace(i, runs=()) for i in instances],
        runs=[],
        unplaced=[],
        solver=_solver(),
        duration_model=duration_model,
        launch=replace(launch, env={}, log_dir="runs"),
        models={},
    )


def write_submission(d: Path, sub: Plan) -> Path:
    """Put `sub` in the bench's inbox (atomically; a name that sorts after every earlier one)."""
    box = inbox_dir(d)
    box.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = box / f"{time.time_ns():020d}-{sub.name}.plan.yaml"
    sub.save(path)
    return path


def submissions(d: Path) -> list[Path]:
    """The inbox's submissions, oldest first (plain files only)."""
    box = inbox_dir(d)
    try:
        names = sorted(os.listdir(box))
    except OSError:
        return []
    return [box / n for n in names if n.endswith(".plan.yaml") and not n.startswith(".") and (box / n).is_file() and not (box / n).is_symlink()]


@dataclass
class Merged:
    """What adopting one submission changed."""

    sweep: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # no longer in the sweep, started before, not running: cancelled
    withdrawn: list[str] = field(default_factory=list)  # no longer in the sweep, running: kept until they end, never started again
    kept: int = 0
    waiting: int = 0  # unchanged runs the bench has not started yet

    def summary(self) -> str:
        parts = [f"{len(self.added)} new run(s)"]
        if self.replaced:
            parts.append(f"{len(self.replaced)} changed and not started, taken as changed")
        if self.cancelled:
            parts.append(f"{len(self.cancelled)} no longer in the sweep and not started, cancelled")
        if self.stopped:
            parts.append(f"{len(self.stopped)} no longer in the sweep and stopped before they ended, cancelled (not run again)")
        if self.withdrawn:
            parts.append(f"{len(self.withdrawn)} no longer in the sweep and running, left to end (not run again)")
        if self.kept:
            parts.append(f"{self.kept} started or finished before, kept")
        if self.waiting:
            parts.append(f"{self.waiting} unchanged, still waiting")
        return f"sweep {self.sweep} submitted: " + "; ".join(parts)


def merge(bench: Plan, sub: Plan, states: Mapping[str, str], tried: Collection[str] = ()) -> tuple[Plan, Merged]:
    """The bench plan with the submission `sub` adopted (see the module's docstring); `states` are
    the launch's run states by id (a run not there has not been seen by the launcher), `tried` the
    runs with an attempt behind them. A run no longer in the sweep is never started again: it is
    cancelled unless it runs now (`Merged.withdrawn`: kept until it ends) or has ended for good
    (kept as a record); one that was started and stopped (interrupted, or waiting for another
    attempt) is cancelled too (`Merged.stopped`)."""
    m = Merged(sub.name)
    new = {r.id: r for r in sub.runs}
    runs: list[PlanRun] = []
    for r in bench.runs:
        st = states.get(r.id)
        started = st in STARTED
        if not of_sweep(r.id, sub.name):
            runs.append(r)
        elif r.id in new:
            if started or new[r.id] == r:
                m.kept += started
                m.waiting += not started
                runs.append(r)
            else:
                m.replaced.append(r.id)
                runs.append(new[r.id])
        elif st in ACTIVE:
            m.withdrawn.append(r.id)
            runs.append(r)
        elif started and st not in RESUMABLE:
            m.kept += 1
            runs.append(r)
        elif started or r.id in tried:
            m.stopped.append(r.id)
        else:
            m.cancelled.append(r.id)
    known = {r.id for r in bench.runs}
    for r in sub.runs:
        if r.id not in known:
            m.added.append(r.id)
            runs.append(r)
    return replace(bench, runs=runs), m


def inbox_problem(d: Path) -> str | None:
    """Why the bench must not take submissions from its inbox (None when it may): another user could
    put one there (the StrictModes rule, `fsutil.untrusted_reason`), and the bench would run its
    commands as this user."""
    inbox = inbox_dir(d)
    if inbox.exists() and not inbox.is_dir():
        return f"refusing the inbox {inbox}: it is not a directory"
    why = untrusted_reason(inbox)
    return None if why is None else f"refusing the inbox {inbox}: {why}"


def require_own_dir(d: Path) -> None:
    """Refuse a bench directory every user (or its group, unless the state mode shares state with
    it) may write into, even with the sticky bit (/tmp itself, a shared scratch directory): another
    user could put the bench plan there before the bench makes it, and the bench would run its runs
    as this user."""
    try:
        st = os.stat(d)
    except OSError as exc:
        raise MigbenchError(f"cannot use {d} as the bench directory: {os_reason(exc)}", hint="give the bench a directory of its own (--bench-dir)") from None
    mode = stat.S_IMODE(st.st_mode)
    group = bool(mode & 0o020) and st.st_gid != 0 and not state_file_mode() & 0o020  # the group, unless the state mode shares it
    if mode & 0o002 or group:
        raise MigbenchError(
            f"refusing {d} as the bench directory: it is writable by {'its group' if group and not mode & 0o002 else 'every user'} (mode {mode:o}), "
            f"so another user could put a bench plan there that the bench would run as {describe_user(os.geteuid())}",
            hint="give the bench a directory of its own (--bench-dir or $MIGBENCH_BENCH_DIR), such as a new one under it, not a shared one",
        )


def sources_dir(d: Path) -> Path:
    return d / "sweeps"


def claim_sweep_name(d: Path, name: str, sweep_file: Path, *, take_over: bool = False, dry: bool = False) -> None:
    """The bench knows a sweep by its `name:` only, so two sweep files with the same name would be one
    sweep: the second would cancel the first's waiting runs and skip its runs with the same ids as
    done. Each name is claimed by the first file submitted under it (`sweeps/<name>.source` in the
    bench directory holds the file's absolute path, created exclusively: of two racing submits of
    two files, one claims it); another file with that name is refused, unless `take_over` (submit
    --replace), which makes it the sweep's file from now on. `dry`: only refuse, write nothing."""
    box = sources_dir(d)
    path, mine = box / f"{name}.source", str(sweep_file.resolve())
    record = os.fsencode(mine) + b"\n"  # the path's bytes as they are: spaces, line breaks, not UTF-8
    why = untrusted_reason(box)
    if why is not None:  # another user could claim (or take) the bench's sweep names there
        raise MigbenchError(
            f"refusing {box}, where the bench records which file each sweep name belongs to: {why}",
            hint=f"remove {box} (the next submit of each sweep records it again) or make it yours alone (`chown`, `chmod go-w`)",
        )
    try:
        odd = not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        odd = False
    if odd:
        raise MigbenchError(
            f"{path} is not a regular file: the bench records there which file the sweep name {name} belongs to",
            hint=f"remove it (`rm -r {path}`) and submit again: the sweep's file is recorded again",
        )
    if take_over:
        if not dry:
            _make_box(box)
            write_bytes_atomic(path, record)
        return
    theirs = _read_source(path)
    if theirs is not None and theirs != mine:
        raise MigbenchError(
            f"the bench already has a sweep named {name}, submitted from {theirs}; {sweep_file} has the same name, so its runs would "
            "replace that sweep's (its waiting runs cancelled, its finished runs of the same ids taken as done)",
            hint=f"give this sweep another `name:`, or, if {sweep_file} is that sweep's file now, submit it with --replace",
        )
    if dry or theirs == mine:
        return
    _make_box(box)
    try:  # the record appears with its text (linked from a temp file): never empty while another submit reads it
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.source.", suffix=".new", dir=box)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(record)
            os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except FileExistsError:  # another submit claimed it meanwhile (or the record is damaged): decide again
        if _read_source(path) is None:
            write_bytes_atomic(path, record)
            return
        return claim_sweep_name(d, name, sweep_file)
    except OSError as exc:
        raise MigbenchError(f"cannot record the sweep's file in {box}: {os_reason(exc)}", hint="check the bench directory (--bench-dir)") from None


def _make_box(box: Path) -> None:
    with contextlib.suppress(FileExistsError):
        box.mkdir(mode=0o700)


def _read_source(path: Path) -> str | None:
    """The file a sweep name was claimed by, read without following a link; None when unreadable
    (a damaged record is claimed again)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(8192)
    return os.fsdecode(data[:-1]) if len(data) > 1 and data.endswith(b"\n") else None  # the path as written, byte for byte


def read_submission(path: Path) -> Plan:
    """A submission, read through a descriptor that never follows a link: a regular file owned by
    root or this user, of a plan's size at most; then checked as a plan file is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise MigbenchError(f"{path}: cannot open the submission: {os_reason(exc)}", hint="submit the sweep again with `migbench submit SWEEP`") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MigbenchError(f"{path}: not a regular file", hint="submit the sweep with `migbench submit SWEEP`")
        if st.st_uid not in trusted_uids():
            raise MigbenchError(f"{path}: owned by {describe_user(st.st_uid)}, not by this user or root", hint="submit the sweep with `migbench submit SWEEP`")
        if st.st_size > MAX_PLAN_BYTES:
            raise MigbenchError(f"{path}: {st.st_size} bytes, more than a plan file may have", hint="submit the sweep with `migbench submit SWEEP`")
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read(MAX_PLAN_BYTES + 1).decode("utf-8", "replace")
    finally:
        os.close(fd)
    sub = Plan.from_dict(parse_document(text, str(path)), file=str(path))
    check_submission(sub, path)
    return sub


def check_submission(sub: Plan, path: Path) -> None:
    """A submission is a plan of the bench's kind, whose run ids carry its sweep's name."""
    if not is_bench(sub):
        raise MigbenchError(f"{path}: not a bench submission (solver status {sub.solver.status!r})", hint="submit a sweep with `migbench submit SWEEP`")
    bad = [r.id for r in sub.runs if not of_sweep(r.id, sub.name)]
    if bad:
        raise MigbenchError(
            f"{path}: run ids {', '.join(bad[:3])} do not carry the sweep's name {sub.name!r}", hint="submit the sweep with `migbench submit SWEEP`"
        )


REFUSED = "refused: "
"""How the summary of a submission the bench refused begins (`submit` then fails with it)."""
REFUSED_SUFFIX = ".refused"
"""A refused submission's name in `done/` (its own record: the rename needs no space on a full disk)."""
UNKNOWN = "unknown"
"""`adopted_summary` when the bench left no trace of what it did with a submission."""


def done_dir(d: Path) -> Path:
    return inbox_dir(d) / "done"


def mark_adopted(path: Path, summary: str) -> None:
    """Move an adopted submission out of the inbox, its summary beside it (what `submit` prints); a
    refused one (its summary begins `REFUSED`) goes to `done/` with `REFUSED_SUFFIX`, so that the
    refusal is known even without its summary. Never raises: on a full disk the summary is left out
    (`submit` then says only "submitted", or that it was refused), and a submission that cannot be
    moved is removed (the bench plan holds its runs already; `submit` then says the outcome is
    unknown)."""
    done = done_dir(path.parent.parent)
    refused = summary.startswith(REFUSED)
    try:
        done.mkdir(exist_ok=True, mode=0o700)
        write_text_atomic(done / (path.name + ".txt"), summary + "\n", "submission summary")
    except (OSError, MigbenchError):
        pass
    try:
        os.replace(path, done / (path.name + (REFUSED_SUFFIX if refused else "")))
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()


def adopted_summary(path: Path) -> str:
    """The summary of the adopted submission `path`: as the bench wrote it; else "submitted", or a
    refusal whose reason was not written, as its record in `done/` says; else `UNKNOWN`."""
    done = done_dir(path.parent.parent)
    try:
        return read_regular(done / (path.name + ".txt"), 65536).decode("utf-8", "replace").strip()
    except OSError:
        pass
    if (done / (path.name + REFUSED_SUFFIX)).is_file():
        return f"{REFUSED}the reason could not be written (is the disk full?); the bench's launcher.log says it"
    if (done / path.name).is_file():
        return "submitted"
    return UNKNOWN
