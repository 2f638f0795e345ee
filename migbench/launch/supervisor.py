"""The supervisor: start every run of an applied plan pinned to its MIG device, and see each finish once.

## Run states

    queued --start--> starting --shim spawned--> running --exit.json--> succeeded
       ^                                            |                   failed       (retries used up)
       |                                            |                   oom          (no larger instance)
       +------ retry (backoff) / OOM move ----------+                   interrupted  (stopped by us)
       +------ next `launch` re-queues interrupted runs (MIGBENCH_RESUME=1)
    abandoned: unplaced by the plan, gone from a --force'd plan, or unable ever to start.

`starting` is committed before the shim is spawned and `running` (with the shim's PID and create
time) right after, so a launcher killed at any point leaves enough to recover from.

## Adoption (a launcher starting on existing state)

For each `starting`/`running` run: the shim alive with the recorded create time -> keep monitoring
it; a `starting` run without a recorded PID -> look for its shim among the processes (its command
line names the attempt directory); the shim gone and `exit.json` present -> take the result; the
shim gone without `exit.json` -> the run died with the host process: kill what is left of its
process group and re-queue it (the next attempt gets MIGBENCH_RESUME=1). `interrupted` runs are
re-queued. Finished runs are never started again. Results taken after a launcher that died during
its staged shutdown count as interrupted, not failed.

## The queue

`queue.Queues` decides, with `engine.replay`'s rules (FIFO per instance in wave order, memory and
sharing caps through `engine.fits_alongside`, lending of a blocked head that is behind the plan's
schedule to an instance with nothing of its own queued). Decisions are taken when a run ends, a
backoff ends, or a held-back head falls behind schedule. A failed run is retried after
`backoff_s * 2**(failures-1)` in its place; an OOM moves it ahead of the queue of a larger
instance (`Queues.escalation_target`). The flapping guard stops new starts once `flapping_max`
distinct runs fail within `flapping_window_s` of their start.

## The loop

Sleep-based: `select` on a self-pipe that SIGCHLD/SIGINT/SIGTERM write to, with a timeout of
`poll_s` (env MIGBENCH_POLL_S, default 1 s), so a finishing shim wakes the launcher at once and an
idle launcher costs nothing. A background thread reads NVML every `mem_poll_s`
(MIGBENCH_MEM_POLL_S, default 2 s; less often when a read is slow) for each run's peak memory.
Changes are written in one transaction per wake-up.

## Exit codes of `launch`

0 every run succeeded; 1 some run failed, ran out of memory or was abandoned; 3 the flapping guard
stopped launching; 130 stopped by a signal or `migbench stop` (runs left `interrupted`/`queued`).
"""

from __future__ import annotations

import os
import resource
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from migbench.backend.select import sim_dir, use_simulated_host
from migbench.duration import Demand
from migbench.errors import MigbenchError
from migbench.launch.memory import MemorySampler
from migbench.launch.options import (
    EXIT_FAILED,
    EXIT_FLAPPING,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LOCK_NAME,
    NOT_STARTED,
    OOM_RANK_SHIFT,
    LaunchOptions,
    LaunchResult,
)
from migbench.launch.prepare import Prepared, preflight, retries_of, start_order
from migbench.launch.procs import LauncherLock, create_time_of, find_shim, kill_group, process_alive, read_json, spawn_shim
from migbench.launch.queue import Queues, Waiting
from migbench.launch.spec import Outcome, RunSpec, attempt_dir, build_spec, outcome_of, prepare_attempt
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES, AttemptEnd, LauncherRow, RunRow, Store, db_path
from migbench.plan import Plan


@dataclass
class Active:
    """A run whose shim is alive (ours or adopted)."""

    run_id: str
    attempt: int
    instance: str
    adir: Path
    shim_pid: int
    shim_ctime: float | None
    popen: subprocess.Popen | None = None  # None when adopted from an earlier launcher
    child_pid: int | None = None
    child_pgid: int | None = None
    shared: bool = False  # another run shared its instance at some point
    stop_signaled: bool = False


class Supervisor:
    """One launcher process over one plan's state dir. `run()` returns when nothing is left to do."""

    def __init__(self, prep: Prepared, opts: LaunchOptions, out: TextIO | None = None):
        self.prep = prep
        self.plan = prep.plan
        self.sd = prep.state_dir
        self.opts = opts
        self.out = out or sys.stdout
        self.poll_s = opts.poll()
        self.mem_poll_s = max(opts.mem_poll(), self.poll_s)
        self.grace_s = self.plan.launch.stop_grace_s
        self.backoff_s = self.plan.launch.backoff_s
        self.flap_window_s = self.plan.launch.flapping_window_s
        self.flap_max = self.plan.launch.flapping_max
        self.plan_runs = {r.id: r for r in self.plan.runs}
        self.inst = {i.key: i for i in self.plan.instances}
        self.queues = Queues(self.plan.instances, lend=opts.lend)
        self.rows: dict[str, RunRow] = {}
        self.active: dict[str, Active] = {}
        self.dirty: set[str] = set()
        self.ended: list[AttemptEnd] = []
        self.launcher_updates: dict[str, Any] = {}
        self.early_failures: list[tuple[float, str]] = []
        self.flapping: str | None = None
        self.draining = False
        self.stopping = False
        self.killed = False
        self.stop_reason: str | None = None
        self.stop_deadline: float | None = None
        self.signals: list[int] = []
        self.signal_count = 0
        self.touched: list[str] | None = None  # instances to reconsider; None: all (first pass)
        self.store: Store | None = None
        self._wake_r: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup: int | None = None
        self.sampler = MemorySampler(self.mem_poll_s)
        self._mem_warned = False
        self.prev_stopping = False
        self.t0 = time.time()  # the sweep's start (first launch), for the plan's estimated starts
        self.lend_at: float | None = None

    # -- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        try:
            self.out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the supervisor

    # -- entry -----------------------------------------------------------------------------------
    def run(self) -> LaunchResult:
        with ExitStack() as stack:
            try:
                self.sd.mkdir(parents=True, exist_ok=True)
                stack.enter_context(LauncherLock(self.sd / LOCK_NAME))
                self.store = Store.create(db_path(self.sd))
            except (OSError, sqlite3.Error) as exc:
                raise MigbenchError(
                    f"cannot use the state directory {self.sd}: {getattr(exc, 'strerror', None) or exc}",
                    hint="check its permissions and free space, or pass --state-dir",
                ) from None
            stack.callback(self.store.close, checkpoint=True)
            self._init_state()
            self._install_signals()
            stack.callback(self.sampler.stop)
            stack.callback(self._restore_signals)
            self.say(f"launching {self.plan.name}: {len(self.rows)} runs; state and logs in {self.sd}")
            self._recover()
            self._loop()
            return self._finish_launcher()

    # -- state -----------------------------------------------------------------------------------
    def _init_state(self) -> None:
        st = self.store
        assert st is not None
        old_sha = st.meta("plan_sha256")
        if old_sha and old_sha != self.prep.sha256 and not self.opts.force:
            raise MigbenchError(
                f"the state in {self.sd} was made from a different plan file (sha256 {old_sha[:12]}..., "
                f"this one is {self.prep.sha256[:12]}...)",
                hint="pass --force to continue with this plan (runs whose ids are unchanged keep their state), "
                "or use another --state-dir",
            )
        now = time.time()
        prev = st.launcher()
        # a launcher killed during its staged shutdown: the runs it had signalled are interrupted
        self.prev_stopping = prev is not None and prev.state == "stopping"
        rows = st.runs()
        order = start_order(self.plan)
        pos = {rid: n for i in self.plan.instances for n, rid in enumerate(i.runs)}  # queue rank, as replay
        placed = {r.id for r in order}
        changed: list[RunRow] = []
        for n, r in enumerate(order):
            key = r.instance_key or ""
            row = rows.get(r.id)
            if row is None:
                row = RunRow(
                    id=r.id, ord=n, grp=r.group, state="queued", home=key, queue=key, rank=pos.get(r.id, n),
                    memory_mib=r.memory_mib, need_mib=r.memory_mib, queued_at=now,
                )
            else:
                escalated = row.queue != row.home and row.queue in self.inst
                row.ord, row.grp, row.memory_mib, row.home = n, r.group, r.memory_mib, key
                if not escalated:
                    row.queue, row.rank, row.need_mib = key, pos.get(r.id, n), r.memory_mib
                if row.state == "abandoned":
                    row.state, row.last_error = "queued", None
            changed.append(row)
            rows[r.id] = row
        for n, u in enumerate(self.plan.unplaced):
            row = rows.get(u.id) or RunRow(id=u.id, ord=len(order) + n, memory_mib=u.memory_mib, need_mib=u.memory_mib)
            if row.state not in FINAL_STATES + ACTIVE_STATES:
                row.state, row.last_error = "abandoned", f"not placed by the plan: {u.reason}"
            changed.append(row)
            rows[u.id] = row
        plan_ids = placed | {u.id for u in self.plan.unplaced}
        for rid, row in rows.items():
            if rid not in plan_ids and row.state in ("queued", "interrupted"):
                row.state, row.last_error = "abandoned", "no longer in the plan"
                changed.append(row)
        self.rows = rows
        with st.transaction():
            st.save_runs(changed)
            st.set_meta("plan_sha256", self.prep.sha256)
            st.set_meta("plan_file", str(Path(self.plan.path or "").resolve()))
            st.set_meta("sweep", self.plan.name)
            first = st.meta("sweep_started_at")
            if first is None:
                st.set_meta("sweep_started_at", repr(now))
            self.t0 = float(first) if first is not None else now
            st.replace_launcher(
                LauncherRow(
                    pid=os.getpid(), create_time=create_time_of(os.getpid()), started_at=now, heartbeat_at=now,
                    state="running", stop_requested=0, lend=int(self.opts.lend), drain=int(self.opts.drain),
                    plan_file=str(Path(self.plan.path or "").resolve()),
                    log_file=os.environ.get("MIGBENCH_LAUNCHER_LOG"),
                )
            )

    def _flush(self) -> None:
        st = self.store
        assert st is not None
        if not (self.dirty or self.ended or self.launcher_updates):
            return
        with st.transaction():
            st.save_runs(self.rows[r] for r in sorted(self.dirty))
            for end in self.ended:
                st.end_attempt(end)
            if self.launcher_updates:
                st.set_launcher(**self.launcher_updates)
        self.dirty.clear()
        self.ended.clear()
        self.launcher_updates.clear()

    # -- signals ---------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r = r
        self._wake_w = w
        try:
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: no signals, plain polling
            self._old_wakeup = None
            return

        def on_stop(signum: int, _frame: Any) -> None:
            self.signals.append(signum)

        for s in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[s] = signal.signal(s, on_stop)
        self._old_handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)

    def _restore_signals(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        for fd in (self._wake_r, getattr(self, "_wake_w", None)):
            if fd is not None:
                os.close(fd)
        self._wake_r = None

    def _sleep(self, timeout: float) -> None:
        if self._wake_r is None:
            time.sleep(max(0.0, timeout))
            return
        try:
            ready, _, _ = select.select([self._wake_r], [], [], max(0.0, timeout))
        except InterruptedError:
            ready = []
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _handle_stop_requests(self) -> None:
        """`migbench stop` (a flag in the database, then SIGTERM) and signals. The flag is read
        first, so the SIGTERM that `stop` sends with it counts as the same request."""
        st = self.store
        assert st is not None
        row = st.conn.execute("SELECT stop_requested FROM launcher WHERE id = 1").fetchone()
        req = int(row[0]) if row and row[0] else 0
        if req >= 2 and not self.killed:
            self._kill_now("`migbench stop --now`: killing every run now")
        elif req == 1 and not self.stopping:
            self._begin_stop("`migbench stop`: stopping")
        while self.signals:
            signum = self.signals.pop(0)
            self.signal_count += 1
            name = signal.Signals(signum).name
            n = self.signal_count
            if req and n == 1:
                continue  # the SIGTERM of `migbench stop`
            if self.opts.drain and n == 1:
                self._begin_drain(f"{name}: draining (no new runs; running runs finish)")
            elif (self.opts.drain and n == 2) or (not self.opts.drain and n == 1):
                self._begin_stop(f"{name}: stopping")
            else:
                self._kill_now(f"second {name}: killing every run now")

    def _begin_drain(self, reason: str) -> None:
        if self.draining or self.stopping:
            return
        self.draining = True
        self.stop_reason = reason
        self.launcher_updates.update(state="draining", stop_reason=reason)
        self.say(f"{reason}; {len(self.active)} running (signal again to stop them)")

    def _begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.stop_deadline = time.monotonic() + self.grace_s
        self.launcher_updates.update(state="stopping", stop_reason=reason)
        self.say(f"{reason}: SIGTERM to {len(self.active)} run(s), SIGKILL after {self.grace_s:g} s (signal again to kill now)")
        for a in self.active.values():
            self._signal_run(a, signal.SIGTERM)

    def _kill_now(self, reason: str) -> None:
        self.stopping = True
        self.killed = True
        self.stop_reason = self.stop_reason or reason
        self.launcher_updates.update(state="stopping", stop_reason=self.stop_reason)
        if self.active:
            self.say(f"{reason}: SIGKILL to {len(self.active)} run(s)")
        for a in self.active.values():
            self._signal_run(a, signal.SIGKILL)

    def _signal_run(self, a: Active, sig: int) -> None:
        a.stop_signaled = True
        if a.popen is not None:
            alive = a.popen.poll() is None
        else:
            alive = process_alive(a.shim_pid, a.shim_ctime)
        if not alive:
            return
        if a.child_pgid is None:
            self._read_child(a)
        if a.child_pgid is not None and kill_group(a.child_pgid, sig):
            return
        try:  # the shim has not forked yet: it forwards SIGTERM; SIGKILL stops it before the run starts
            os.kill(a.shim_pid, sig)
        except ProcessLookupError:
            pass

    def _read_child(self, a: Active) -> None:
        doc = read_json(a.adir / "child.json")
        if doc and doc.get("pid"):
            a.child_pid = int(doc["pid"])
            a.child_pgid = int(doc.get("pgid") or doc["pid"])
            row = self.rows[a.run_id]
            if row.child_pid != a.child_pid:
                row.child_pid, row.child_pgid = a.child_pid, a.child_pgid
                self.dirty.add(a.run_id)

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        adopted = requeued = taken = 0
        for rid, row in self.rows.items():
            if row.state in ACTIVE_STATES:
                adir = attempt_dir(self.sd, rid, row.attempt)
                pid, ctime = row.shim_pid, row.shim_create_time
                if not (pid and process_alive(pid, ctime)) and row.state == "starting" and not pid:
                    found = find_shim(adir)
                    if found:
                        pid, ctime = found
                if pid and process_alive(pid, ctime):
                    a = Active(rid, row.attempt, row.instance or "", adir, int(pid), ctime)
                    self._read_child(a)
                    self.active[rid] = a
                    row.state, row.shim_pid, row.shim_create_time = "running", pid, ctime
                    self.dirty.add(rid)
                    adopted += 1
                    continue
                res = outcome_of(read_json(adir / "exit.json"))
                if res is not None:
                    a = Active(rid, row.attempt, row.instance or "", adir, int(pid or 0), ctime)
                    a.stop_signaled = self.prev_stopping
                    self._on_exit(a, res, None)
                    taken += 1
                    continue
                child = read_json(adir / "child.json") or {}
                if child.get("pgid") and kill_group(int(child["pgid"]), signal.SIGKILL):
                    self.say(f"{rid}: killed the orphaned process group {child['pgid']} of attempt {row.attempt}")
                row.end_at = time.time()
                self.ended.append(AttemptEnd.of(row, "lost", "the run's shim was gone without a result (the launcher's host process died)"))
                self._requeue(row, f"attempt {row.attempt} was lost with its shim")
                requeued += 1
            elif row.state == "interrupted":
                self._requeue(row, row.last_error)
                requeued += 1
        for a in self.active.values():  # adopted runs share instances with each other
            self._mark_shared(a.instance, a.run_id)
        if adopted or requeued or taken:
            self.say(f"resuming: adopted {adopted} running run(s), took {taken} result(s), re-queued {requeued} run(s)")
        self._flush()

    def _requeue(self, row: RunRow, note: str | None) -> None:
        if row.id not in self.plan_runs or row.queue not in self.inst:
            row.state, row.last_error = "abandoned", "no longer in the plan"
        else:
            row.state = "queued"
            row.last_error = note
            row.not_before = None
            row.queued_at = time.time()
        row.shim_pid = row.shim_create_time = row.child_pid = row.child_pgid = None
        self.dirty.add(row.id)
        self._touch(row.queue)

    def _touch(self, key: str | None) -> None:
        """Something changed on instance `key`: the next scheduling pass reconsiders it."""
        if key and self.touched is not None and key not in self.touched:
            self.touched.append(key)

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        next_beat = time.monotonic() + 5.0
        self.sampler.start()
        while True:
            self._handle_stop_requests()
            self._apply_memory_sample()  # before reaping: the sample was taken while those runs lived
            self._reap()
            mono = time.monotonic()
            if self.lend_at is not None and time.time() >= self.lend_at:
                self.lend_at, self.touched = None, None  # reconsider every instance
            if self.stopping and not self.killed and self.stop_deadline is not None and mono >= self.stop_deadline and self.active:
                self._kill_now(f"stop grace of {self.grace_s:g} s over")
            wait_until = self._schedule()
            if mono >= next_beat:
                self.launcher_updates["heartbeat_at"] = time.time()
                next_beat = mono + 5.0
            self._flush()
            if not self.active and self._nothing_left(wait_until):
                break
            timeout = self.poll_s
            if self.stopping and not self.killed and self.stop_deadline is not None:
                timeout = min(timeout, max(0.0, self.stop_deadline - time.monotonic()))
            if wait_until is not None:
                timeout = min(timeout, max(0.0, wait_until - time.time()))
            if self.lend_at is not None:
                timeout = min(timeout, max(0.0, self.lend_at - time.time()))
            self.sampler.wanted = bool(self.active)
            self._sleep(timeout)

    def _nothing_left(self, wait_until: float | None) -> bool:
        if self.stopping or self.draining or self.flapping:
            return True
        queued = [r for r in self.rows.values() if r.state == "queued" and r.id in self.plan_runs]
        if not queued:
            return True
        if wait_until is not None:
            return False  # a retry waits out its backoff
        for r in queued:  # nothing runs, nothing waits, and still nothing started: they never will
            r.state = "abandoned"
            r.last_error = f"cannot start: needs {r.need_mib} MiB on {r.queue}, which never has room"
            self.dirty.add(r.id)
            self.say(f"{r.id}: abandoned ({r.last_error})")
        self._flush()
        return True

    def _reap(self) -> None:
        for _rid, a in list(self.active.items()):
            rc: int | None = None
            if a.popen is not None:
                rc = a.popen.poll()
                if rc is None:
                    continue
            elif process_alive(a.shim_pid, a.shim_ctime):
                continue
            res = outcome_of(read_json(a.adir / "exit.json"))
            self._on_exit(a, res, rc)

    def _waiting(self, now: float) -> list[Waiting]:
        out = []
        for row in self.rows.values():
            if row.state != "queued":
                continue
            pr = self.plan_runs.get(row.id)
            if pr is None or row.queue not in self.inst:
                continue
            out.append(
                Waiting(
                    row.id,
                    replace(pr.demand(), memory_mib=row.need_mib),
                    row.queue,
                    row.rank,
                    ready=row.not_before is None or row.not_before <= now,
                    planned_start_s=float(pr.est_start_s or 0.0),
                )
            )
        return out

    def _running_jobs(self) -> dict[str, list]:
        running: dict[str, list] = {}
        for a in self.active.values():
            row = self.rows[a.run_id]
            pr = self.plan_runs.get(a.run_id)
            demand = replace(pr.demand(), memory_mib=row.need_mib) if pr else Demand(a.run_id, row.need_mib)
            running.setdefault(a.instance, []).append(demand)
        return running

    def _schedule(self) -> float | None:
        """Start what the queue policy allows. Returns the earliest backoff end (Unix s), if any."""
        now = time.time()
        backoffs = []
        for r in self.rows.values():
            if r.state == "queued" and r.not_before is not None:
                if r.not_before > now:
                    backoffs.append(r.not_before)
                else:
                    r.not_before = None  # its backoff is over: it is ready again, in its place
                    self.dirty.add(r.id)
                    self._touch(r.queue)
        wait_until = min(backoffs) if backoffs else None
        if self.stopping or self.draining or self.flapping:
            return wait_until
        if self.touched is not None and not self.touched:
            return wait_until
        touched, self.touched = self.touched, []
        starts = self.queues.pick(self._waiting(now), self._running_jobs(), touched, elapsed_s=now - self.t0)
        due = self.queues.deferred_until_s
        self.lend_at = None if due is None else self.t0 + due + 0.001  # a held-back head becomes late
        if starts:
            self._start(starts)
        return wait_until

    # -- starting --------------------------------------------------------------------------------
    def _start(self, starts: list[tuple[str, str]]) -> None:
        st = self.store
        assert st is not None
        now = time.time()
        specs: list[RunSpec] = []
        for rid, key in starts:
            row = self.rows[rid]
            row.attempt += 1
            row.state = "starting"
            row.instance = key
            row.mig_uuid = self.prep.uuid_of[key]
            row.instance_mib = self.inst[key].memory_mib
            row.start_at, row.end_at, row.not_before = now, None, None
            row.exit_code = row.signal = row.peak_mib = None
            row.shim_pid = row.shim_create_time = row.child_pid = row.child_pgid = None
            spec = build_spec(self.plan, self.plan_runs[rid], instance=key, mig_uuid=row.mig_uuid, attempt=row.attempt, state_dir=self.sd)
            prepare_attempt(spec)
            specs.append(spec)
        with st.transaction():  # the intent is on disk before any process exists
            st.save_runs(self.rows[rid] for rid, _ in starts)
            for rid, _ in starts:
                st.begin_attempt(self.rows[rid])
        _crash_point("before-spawn")
        for spec in specs:
            row = self.rows[spec.run_id]
            adir = Path(spec.attempt_dir)
            try:
                p = spawn_shim(adir)
            except OSError as exc:
                row.end_at = time.time()
                self._failed_attempt(row, f"cannot start the shim: {exc}", "failed", early=True)
                continue
            row.shim_pid, row.shim_create_time, row.state = p.pid, create_time_of(p.pid), "running"
            a = Active(spec.run_id, spec.attempt, spec.instance, adir, p.pid, row.shim_create_time, popen=p)
            self.active[spec.run_id] = a
            self._mark_shared(spec.instance, spec.run_id)
            self.dirty.add(spec.run_id)
            _crash_point("after-spawn")
            where = self.inst[spec.instance]
            note = ""
            if spec.instance != row.queue:
                note = f" (lent: queued on {row.queue})"
            elif row.queue != row.home:
                note = f" (moved from {row.home} after an OOM)"
            self.say(
                f"start {spec.run_id} attempt {spec.attempt} on GPU {where.gpu} {where.profile}@{where.start} "
                f"{spec.mig_uuid}{note}"
            )
        self._flush()

    def _mark_shared(self, instance: str, run_id: str) -> None:
        together = [a for a in self.active.values() if a.instance == instance]
        if len(together) > 1:
            for a in together:
                a.shared = True

    # -- memory ----------------------------------------------------------------------------------
    def _apply_memory_sample(self) -> None:
        """Each active run's used memory on its MIG device (the sampler's newest NVML read), kept as
        the attempt's peak. The run's processes are its child and anything in its session."""
        if self.sampler.error and not self._mem_warned:
            self.say(f"cannot read GPU memory through NVML ({self.sampler.error}); peak memory is not recorded")
            self._mem_warned = True
        sample = self.sampler.take()
        if not sample:
            return
        for a in self.active.values():
            row = self.rows[a.run_id]
            procs = sample.get(row.mig_uuid or "")
            if procs is None:
                continue
            if a.child_pid is None:
                self._read_child(a)
            used = 0
            seen = False
            for pid, mib in procs:
                if self._belongs(pid, a):
                    seen = True
                    used += mib
            if seen and used > (row.peak_mib if row.peak_mib is not None else -1):
                row.peak_mib = used
                self.dirty.add(a.run_id)

    @staticmethod
    def _belongs(pid: int, a: Active) -> bool:
        if pid == a.child_pid:
            return True
        try:
            return os.getsid(pid) == a.shim_pid or (a.child_pgid is not None and os.getpgid(pid) == a.child_pgid)
        except OSError:
            return False

    # -- outcomes --------------------------------------------------------------------------------
    def _on_exit(self, a: Active, res: Outcome | None, shim_rc: int | None) -> None:
        self.active.pop(a.run_id, None)
        self._touch(a.instance)
        row = self.rows[a.run_id]
        row.end_at = res.ended_at if res else time.time()
        if res is not None:
            row.exit_code, row.signal = res.returncode, res.signal
        row.shim_pid = row.shim_create_time = None
        self.dirty.add(a.run_id)
        took = f"{(row.end_at - (row.start_at or row.end_at)):.1f} s"
        early = row.start_at is not None and row.end_at - row.start_at <= self.flap_window_s
        if a.stop_signaled and (res is None or res.returncode != 0):
            row.state = "interrupted"
            row.last_error = f"interrupted by the launcher ({self.stop_reason or 'stop'})"
            self.ended.append(AttemptEnd.of(row, "interrupted", row.last_error))
            self.say(f"interrupted {a.run_id} attempt {a.attempt} after {took}")
            return
        if res is None:
            if a.popen is None:
                self.ended.append(AttemptEnd.of(row, "lost", "the shim disappeared without a result"))
                self._requeue(row, f"attempt {a.attempt}'s shim disappeared without a result")
                self.say(f"{a.run_id}: attempt {a.attempt}'s shim disappeared without a result; re-queued")
                return
            self._failed_attempt(row, f"the shim exited with code {shim_rc} without a result (see {a.adir / 'shim.log'})", "failed", early)
            return
        if res.returncode == 0:
            row.state = "succeeded"
            row.last_error = None
            self.ended.append(AttemptEnd.of(row, "succeeded", None))
            self.say(f"done {a.run_id} attempt {a.attempt} succeeded in {took}")
            return
        if res.oom:
            self._oom(a, row, res, early)
            return
        rc = res.returncode
        if res.exec_error or (rc is not None and rc in NOT_STARTED and res.signal is None and not res.timed_out):
            # the command could not start (not found, not executable, no workdir): a retry fails the same way
            why = res.exec_error or f"exit code {rc} ({NOT_STARTED.get(rc or 0, '')})"
            self._failed_attempt(row, why + "; not retried", "failed", early, retry=False)
            return
        if res.timed_out:
            limit = self.plan_runs[a.run_id].timeout_s if a.run_id in self.plan_runs else None
            why = f"timed out after {limit:g} s" if limit is not None else "timed out"
        elif res.signal is not None:
            why = f"killed by {_signame(res.signal)} (exit {res.returncode})"
        else:
            why = f"exit code {res.returncode}"
        self._failed_attempt(row, why, "failed", early)

    def _failed_attempt(self, row: RunRow, why: str, outcome: str, early: bool, retry: bool = True) -> None:
        pr = self.plan_runs.get(row.id)
        row.failures += 1
        allowed = retries_of(self.plan, pr) if pr is not None and retry else 0
        self.ended.append(AttemptEnd.of(row, outcome, why))
        self.dirty.add(row.id)
        if pr is not None and row.failures <= allowed:
            delay = self.backoff_s * (2 ** (row.failures - 1))
            row.state = "queued"
            row.not_before = time.time() + delay
            row.last_error = f"attempt {row.attempt}: {why}; retry {row.failures} of {allowed} in {delay:g} s"
            self.say(f"failed {row.id} attempt {row.attempt}: {why}; retrying in {delay:g} s")
        else:
            row.state = "failed"
            row.last_error = f"attempt {row.attempt}: {why}" + (f" (after {allowed} retries)" if allowed else "")
            self.say(f"failed {row.id} attempt {row.attempt}: {why}; no retries left")
        self._note_failure(row, early)

    def _oom(self, a: Active, row: RunRow, res: Outcome, early: bool) -> None:
        inst = self.inst.get(a.instance)
        inst_mib = inst.memory_mib if inst else (row.instance_mib or 0)
        peak = row.peak_mib
        need = max(row.need_mib, peak or 0)
        if not a.shared:
            need = max(need, inst_mib + 1)  # alone on the instance and still out of memory
        pr = self.plan_runs.get(row.id)
        target = None
        if pr is not None:
            w = Waiting(row.id, replace(pr.demand(), memory_mib=need), row.queue or "", row.rank)
            target = self.queues.escalation_target(w, a.instance, self._waiting(time.time()), self._running_jobs())
        seen = f"peak {peak} MiB" if peak is not None else "peak not observed"
        detail = f"out of memory on {a.instance} ({inst_mib} MiB instance, {seen})"
        if res.oom_line:
            detail += f": {res.oom_line}"
        self.ended.append(AttemptEnd.of(row, "oom", detail))
        if target is not None:
            row.state = "queued"
            row.queue = target
            row.need_mib = need
            row.rank = row.ord - OOM_RANK_SHIFT
            self._touch(target)
            row.not_before = None
            row.last_error = f"attempt {row.attempt}: {detail}; moved to {target} ({self.inst[target].memory_mib} MiB)"
            self.say(f"oom {row.id} attempt {row.attempt} on {a.instance} ({inst_mib} MiB); retrying on {target}")
        else:
            row.state = "oom"
            row.last_error = f"attempt {row.attempt}: {detail}; no larger instance in the plan allows this run"
            self.say(f"oom {row.id} attempt {row.attempt} on {a.instance} ({inst_mib} MiB, {seen}); no larger instance")
        self._note_failure(row, early)

    def _note_failure(self, row: RunRow, early: bool) -> None:
        """The flapping guard: `flapping_max` distinct runs failing within `flapping_window_s` of
        their start, inside one window, stop new launches (running runs continue)."""
        if not early or self.flap_max <= 0 or self.flapping:
            return
        now = time.time()
        self.early_failures.append((now, row.id))
        recent = sorted({rid for t, rid in self.early_failures if t >= now - self.flap_window_s})
        if len(recent) >= self.flap_max:
            self.flapping = (
                f"{len(recent)} runs failed within {self.flap_window_s:g} s of their start ({', '.join(recent[:5])}"
                f"{', ...' if len(recent) > 5 else ''}): stopped launching new runs"
            )
            self.launcher_updates.update(flapping=self.flapping, state="flapping")
            self.say(f"flapping guard: {self.flapping}; {len(self.active)} running run(s) continue")

    # -- the end ---------------------------------------------------------------------------------
    def _finish_launcher(self) -> LaunchResult:
        counts = Counter(r.state for r in self.rows.values())
        if self.stopping or self.draining:
            code = EXIT_INTERRUPTED
        elif self.flapping:
            code = EXIT_FLAPPING
        elif counts.get("failed") or counts.get("oom") or counts.get("abandoned"):
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        ru = resource.getrusage(resource.RUSAGE_SELF)
        st = self.store
        assert st is not None
        with st.transaction():
            st.set_launcher(state="exited", ended_at=time.time(), exit_code=code, cpu_s=ru.ru_utime + ru.ru_stime)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        self.say(f"launcher done (exit {code}): {summary}")
        return LaunchResult(code, dict(counts), self.sd, self.stop_reason or self.flapping)


def _crash_point(name: str) -> None:
    """For tests of recovery: MIGBENCH_LAUNCH_CRASH_AT=<name> makes the launcher die here at once,
    as `kill -9` would (no cleanup). Points: `before-spawn` (a start is committed, no shim exists
    yet), `after-spawn` (a shim runs, its PID is not recorded yet)."""
    if os.environ.get("MIGBENCH_LAUNCH_CRASH_AT") == name:
        os._exit(99)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def launch(plan: Plan, opts: LaunchOptions | None = None, out: TextIO | None = None) -> LaunchResult:
    """Supervise every run of `plan` until each has finished (or a stop). Raises MigbenchError when
    the plan is not applied, another launcher runs it, or the state belongs to another plan."""
    opts = opts or LaunchOptions()
    use_simulated_host(sim_dir())  # absolute: shims and runs start in other directories
    prep = preflight(plan, opts.state_dir)
    return Supervisor(prep, opts, out).run()


__all__ = ["Supervisor", "launch"]
