"""The supervisor: start every run of an applied plan pinned to its MIG device, and see each finish once.

## Run states

    queued --start--> starting --shim spawned--> running --exit.json--> succeeded
       ^                                            |                   failed       (retries used up)
       |                                            |                   oom          (no larger instance)
       +------ retry (backoff) / OOM move ----------+                   interrupted  (stopped by us)
       +------ next `launch` re-queues interrupted runs (MIGBENCH_RESUME=1)
    abandoned: unplaced by the plan, gone from a --force'd plan, or unable ever to start.
    unknown: started, then gone with no record of how it ended; run again only on request.

`starting` is committed before the shim is spawned and `running` (with the shim's PID and create
time) right after, so a launcher killed at any point leaves enough to recover from. Starts happen
under the host lock, held shared (`gate.HostGate`): none while `apply` changes GPUs; the bindings
are re-read there, so runs follow instances an apply or a rollback re-bound.

## A shim that dies

Each run's parent is its waiter (`launch.waiter`, `mb-wait`), which records the run's exit status
in `wait.json` and outlives the shim and the launcher. The launcher is its shims' child subreaper:
when a shim is killed while its run works, the waiter (or, if it died too, the run) is re-parented
to the launcher, which keeps the run on its instance, waits for it and writes its `exit.json` from
the waiter's record (the run is never started a second time). A shim that dies before its run
started (no `started`) is retried; the run then gets MIGBENCH_RESUME=1 only if an earlier attempt of
it really started. Our shims also send `exit.json`'s document through a pipe, so an outcome survives
the deletion of the attempt directory.

## Adoption (a launcher starting on existing state)

For each `starting`/`running` run: the shim alive with the recorded create time -> keep monitoring
it; a `starting` run without a recorded PID -> look for its shim among the processes (its command
line names the attempt directory); the shim gone and `exit.json` or `wait.json` present -> take the
result (a run that ended while nothing of migbench lived); the shim gone while the run or its waiter
lives (PID and start time from `child.json`) -> wait for it as an orphan; the shim gone, the run
never started -> re-queue it; the run started, no record, nothing alive -> `unknown`: kept, shown,
never run again unless `launch --resume-unknown` (then with MIGBENCH_RESUME=1). `interrupted` runs
are re-queued. Finished runs are never started again. Results taken after a launcher that died
during its staged shutdown count as interrupted, not failed.

The run directories are a second record: when `launch.db` is missing, empty, damaged (moved aside)
or behind them, each run's state is rebuilt from its attempt directories (`rebuild`), and an
attempt directory whose run started is never reused.

## When the state cannot be written

A full disk stops new starts (with the reason) while running runs finish; their outcomes are kept
(the shim writes `exit.json` into space reserved before the start; the launcher keeps what sqlite
could not write in memory and retries). A state directory deleted or damaged under a running
launcher is noticed, said, and re-created from the launcher's memory; no new run starts. Both end
with exit code 1 and the reason.

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

0 every run succeeded; 1 some run failed, ran out of memory, was abandoned or has an unknown
outcome, or the state could not be written (full disk, deleted state directory) or an instance lost
its binding; 3 the flapping guard stopped launching; 130 stopped by a signal or `migbench stop`
(runs left `interrupted`/`queued`).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from migbench.backend.select import host_lock_path, sim_dir, use_simulated_host
from migbench.duration import Demand
from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE
from migbench.launch.gate import HostGate
from migbench.launch.hostbook import HostBooking
from migbench.launch.keeper import Keeper
from migbench.launch.memory import MemorySampler
from migbench.launch.options import (
    EXIT_FAILED,
    EXIT_FLAPPING,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LaunchOptions,
    LaunchResult,
)
from migbench.launch.outcomes import Active, Outcomes
from migbench.launch.prepare import Prepared, preflight, retries_of, start_order
from migbench.launch.procs import (
    create_time_of,
    kill_group,
    process_alive,
    read_json,
    reap_strays,
    set_child_subreaper,
    spawn_shim,
)
from migbench.launch.queue import Queues, Waiting
from migbench.launch.rebuild import rebuild_row, scan_attempts
from migbench.launch.spec import RunSpec, attempt_dir, attempt_started, build_spec, prepare_attempt
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES, AttemptEnd, LauncherRow, RunRow, Store
from migbench.launch.wakeup import Wakeup
from migbench.plan import Plan, PlanRun
from migbench.state import configure_modes


class Supervisor(Outcomes):
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
        self.halted: str | None = None  # why no run starts any more (full disk, lost state, unbound instances)
        self.draining = False
        self.stopping = False
        self.killed = False
        self.stop_reason: str | None = None
        self.stop_deadline: float | None = None
        self.signals: list[int] = []
        self.signal_count = 0
        self.touched: list[str] | None = None  # instances to reconsider; None: all (first pass)
        self.keeper = Keeper(self.sd)
        self.gate = HostGate(host_lock_path(), self.sd / "bindings.json", prep.uuid_of, self.say)
        self.booking = HostBooking(prep, self.say)  # this launch in the host's register (one per plan, no shared instance)
        self.wakeup = Wakeup()
        self.subreaper = False
        self.sampler = MemorySampler(self.mem_poll_s)
        self._mem_warned = False
        self.prev_stopping = False
        self.t0 = time.time()  # the sweep's start (first launch), for the plan's estimated starts
        self.lend_at: float | None = None
        self.resume_ids: set[str] = set()  # runs of unknown outcome resumed on request (--resume-unknown)
        self.plan_file = str(self.plan.path or "PLAN")

    @property
    def store(self) -> Store:
        assert self.keeper.store is not None
        return self.keeper.store

    # -- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        try:
            self.out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal (or a full disk under launcher.log) must not stop the supervisor

    # -- entry -----------------------------------------------------------------------------------
    def run(self) -> LaunchResult:
        configure_modes(self.plan)
        with ExitStack() as stack:
            self.booking.open(stack)  # before the state directory is touched: a refused launch leaves nothing
            note = self.keeper.open(stack)
            if note:
                self.say(note)
            self.subreaper = set_child_subreaper(True)
            stack.callback(set_child_subreaper, False)
            self._init_state()
            self.wakeup.install(self.signals.append)
            stack.callback(self.sampler.stop)
            stack.callback(self.wakeup.restore)
            self.say(f"launching {self.plan.name}: {len(self.rows)} runs; state and logs in {self.sd}")
            self._recover()
            self._loop()
            return self._finish_launcher()

    # -- state -----------------------------------------------------------------------------------
    def _init_state(self) -> None:
        st = self.store
        old_sha = st.meta("plan_sha256")
        if old_sha and old_sha != self.prep.sha256 and not self.opts.force:
            raise MigbenchError(
                f"the state in {self.sd} was made from a different plan file (sha256 {old_sha[:12]}..., this one is {self.prep.sha256[:12]}...)",
                hint="pass --force to continue with this plan (runs whose ids are unchanged keep their state), or use another --state-dir",
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
        history: list[tuple[RunRow, Any]] = []
        for n, r in enumerate(order):
            row = self._placed_row(r, n, rows.get(r.id), pos.get(r.id, n), now)
            disk = scan_attempts(self.sd, r.id)
            if disk and disk[-1].n > row.attempt:  # the database is behind the run's directory
                rebuild_row(row, disk, retries_of(self.plan, r))
                history.extend((row, d) for d in disk)
            changed.append(row)
            rows[r.id] = row
        changed += self._abandon_the_rest(rows, len(order), placed)
        self.rows = rows
        if history:
            kinds = Counter(row.state for row in {id(r): r for r, _ in history}.values())
            self.say(
                f"rebuilt {sum(kinds.values())} run(s) from their directories (launch.db had no record of them): "
                + ", ".join(f"{k} {s}" for s, k in sorted(kinds.items()))
            )
        first = st.meta("sweep_started_at")
        self.t0 = float(first) if first is not None else now

        def write(st: Store) -> None:
            st.save_runs(changed)
            for row, d in history:
                st.record_attempt(row.id, d.n, d.instance, d.mig_uuid, d.started_at, d.outcome)
            st.set_meta("plan_sha256", self.prep.sha256)
            st.set_meta("plan_file", str(Path(self.plan.path or "").resolve()))
            st.set_meta("sweep", self.plan.name)
            if first is None:
                st.set_meta("sweep_started_at", repr(now))
            st.replace_launcher(self._launcher_row(now))

        trouble = self.keeper.write(write)
        if trouble is not None:
            raise MigbenchError(
                f"cannot record the launch: {trouble.message}", hint="free space in the state directory, then launch again; nothing was started"
            )

    def _placed_row(self, r: PlanRun, n: int, row: RunRow | None, rank: int, now: float) -> RunRow:
        """The row of placed run `r` (`n`-th to start, `rank` in its queue): new and queued, else
        the stored one brought to this plan (its queue kept when it was escalated; an abandoned
        run queued again)."""
        key = r.instance_key or ""
        if row is None:
            return RunRow(
                id=r.id,
                ord=n,
                grp=r.group,
                state="queued",
                home=key,
                queue=key,
                rank=rank,
                memory_mib=r.memory_mib,
                need_mib=r.memory_mib,
                queued_at=now,
            )
        escalated = row.queue != row.home and row.queue in self.inst
        row.ord, row.grp, row.memory_mib, row.home = n, r.group, r.memory_mib, key
        if not escalated:
            row.queue, row.rank, row.need_mib = key, rank, r.memory_mib
        if row.state == "abandoned":
            row.state, row.last_error = "queued", None
        return row

    def _abandon_the_rest(self, rows: dict[str, RunRow], n_placed: int, placed: set[str]) -> list[RunRow]:
        """The plan's unplaced runs, and waiting runs the plan no longer has, marked abandoned (into
        `rows`); the rows changed."""
        changed = []
        for n, u in enumerate(self.plan.unplaced):
            row = rows.get(u.id) or RunRow(id=u.id, ord=n_placed + n, memory_mib=u.memory_mib, need_mib=u.memory_mib)
            if row.state not in (*FINAL_STATES, *ACTIVE_STATES, "unknown"):
                row.state, row.last_error = "abandoned", f"not placed by the plan: {u.reason}"
            changed.append(row)
            rows[u.id] = row
        plan_ids = placed | {u.id for u in self.plan.unplaced}
        for rid, row in rows.items():
            if rid not in plan_ids and row.state in ("queued", "interrupted"):
                row.state, row.last_error = "abandoned", "no longer in the plan"
                changed.append(row)
        return changed

    def _launcher_row(self, now: float) -> LauncherRow:
        return LauncherRow(
            pid=os.getpid(),
            create_time=create_time_of(os.getpid()),
            started_at=now,
            heartbeat_at=now,
            state="running",
            stop_requested=0,
            lend=int(self.opts.lend),
            drain=int(self.opts.drain),
            plan_file=str(Path(self.plan.path or "").resolve()),
            log_file=os.environ.get("MIGBENCH_LAUNCHER_LOG"),
        )

    def _flush(self) -> None:
        if not (self.dirty or self.ended or self.launcher_updates):
            return
        rows = [self.rows[r] for r in sorted(self.dirty)]
        ended, updates = list(self.ended), dict(self.launcher_updates)

        def write(st: Store) -> None:
            st.save_runs(rows)
            for end in ended:
                st.end_attempt(end)
            if updates:
                st.set_launcher(**updates)

        trouble = self.keeper.write(write)
        if trouble is not None and trouble.full:
            self._halt(f"{trouble.message}: stopped starting runs (running runs finish; what could not be written is kept and retried)")
            return
        if trouble is not None:
            self._state_lost(trouble.message)
        self.dirty.clear()
        self.ended.clear()
        self.launcher_updates.clear()

    def _halt(self, reason: str) -> None:
        """Start nothing more (running runs go on), say why once; the launch ends with exit code 1."""
        if self.halted is None:
            self.halted = reason
            self.say(reason)
            self.launcher_updates.update(stop_reason=reason)

    def _state_lost(self, why: str) -> None:
        """The database was deleted or damaged under us: say so, start nothing more, and write the
        state again from memory, so `status` still shows it."""
        self._halt(f"{why}: starting no new runs; running runs finish")
        now = time.time()

        def fill(st: Store) -> None:
            st.set_meta("plan_sha256", self.prep.sha256)
            st.set_meta("plan_file", str(Path(self.plan.path or "").resolve()))
            st.set_meta("sweep", self.plan.name)
            st.set_meta("sweep_started_at", repr(self.t0))
            st.save_runs(self.rows.values())
            for row in self.rows.values():
                if row.attempt:
                    st.begin_attempt(row)
            for end in self.ended:
                st.end_attempt(end)
            st.replace_launcher(replace(self._launcher_row(now), stop_reason=self.halted))

        problem = self.keeper.recreate(fill)
        if problem is None:
            self.say(f"re-created {self.keeper.db} from the launcher's memory")
        else:
            self.say(f"could not re-create the state ({problem}); each run's outcome stays in its exit.json")

    # -- signals ---------------------------------------------------------------------------------
    def _handle_stop_requests(self) -> None:
        """`migbench stop` (a flag in the database, then SIGTERM) and signals. The flag is read
        first, so the SIGTERM that `stop` sends with it counts as the same request."""
        req = self.keeper.stop_requested()
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
        if a.orphan:
            kill_group(a.child_pgid, sig)
            return
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
            ticks, wpid, wticks = doc.get("start_ticks"), doc.get("waiter_pid"), doc.get("waiter_ticks")
            a.child_ticks = ticks if isinstance(ticks, int) else None
            a.waiter_pid = wpid if isinstance(wpid, int) else None
            a.waiter_ticks = wticks if isinstance(wticks, int) else None
            row = self.rows[a.run_id]
            if row.child_pid != a.child_pid:
                row.child_pid, row.child_pgid = a.child_pid, a.child_pgid
                self.dirty.add(a.run_id)

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
    def _blocked(self) -> bool:
        """No run starts now: stopping, draining, flapping, or halted."""
        return bool(self.stopping or self.draining or self.flapping or self.halted)

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
            for key in self.booking.behind:  # instances another launch holds: has it let them go?
                self._touch(key)
            if self.stopping and not self.killed and self.stop_deadline is not None and mono >= self.stop_deadline and self.active:
                self._kill_now(f"stop grace of {self.grace_s:g} s over")
            wait_until = self._schedule()
            if mono >= next_beat:
                self.launcher_updates["heartbeat_at"] = time.time()
                next_beat = mono + 5.0
            if self.dirty:
                self.booking.sync(self.rows.values(), self.gate.uuid_of)
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
            self.wakeup.sleep(timeout)

    def _nothing_left(self, wait_until: float | None) -> bool:
        if self._blocked():
            return True
        queued = [r for r in self.rows.values() if r.state == "queued" and r.id in self.plan_runs]
        if not queued:
            return True
        if wait_until is not None or self.gate.waiting is not None:
            return False  # a retry waits out its backoff, or the starts wait for an apply
        if any(r.queue in self.booking.behind for r in queued):
            return False  # runs wait for instances another live launch holds
        unbound = [r for r in queued if r.queue in self.gate.unbound]
        if unbound:
            keys = sorted({r.queue or "" for r in unbound})
            self._halt(
                f"{len(unbound)} run(s) wait for instance(s) {', '.join(keys)} ({self.gate.why_unbound(keys)}): "
                f"run `migbench apply {self.plan.path}`, then `migbench launch` again"
            )
            return True
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
            if a.orphan:
                self._reap_orphan(a)
                continue
            if a.popen is not None:
                rc = a.popen.poll()
                if rc is None:
                    continue
                self._drain_result(a)
            elif process_alive(a.shim_pid, a.shim_ctime):
                continue
            res = self._result(a)
            if res is None and self._shim_died(a, rc):
                continue
            self._on_exit(a, res, rc)
        if self.subreaper:
            keep = {a.popen.pid for a in self.active.values() if a.popen is not None}
            # a run re-parented to us (its waiter died) keeps its status until `_shim_died` / `_reap_orphan` takes it
            keep |= {a.child_pid for a in self.active.values() if a.child_pid}
            reap_strays(keep)

    def _waiting(self, now: float) -> list[Waiting]:
        out = []
        for row in self.rows.values():
            if row.state != "queued":
                continue
            pr = self.plan_runs.get(row.id)
            if pr is None or row.queue not in self.inst or row.queue in self.gate.unbound:
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
        if self._blocked():
            return wait_until
        if self.touched is not None and not self.touched and self.gate.waiting is None:
            return wait_until
        if not any(r.state == "queued" for r in self.rows.values()):
            return wait_until
        if not self.gate.enter():
            return wait_until  # an apply changes GPUs: try again at the next wake-up
        try:
            touched, self.touched = self.touched, []
            starts = self.queues.pick(self._waiting(now), self._running_jobs(), touched, elapsed_s=now - self.t0)
            due = self.queues.deferred_until_s
            self.lend_at = None if due is None else self.t0 + due + 0.001  # a held-back head becomes late
            starts = self.booking.admit([(rid, key) for rid, key in starts if key not in self.gate.unbound], self.rows, self.gate, self.dirty)
            if starts:
                self._start(starts)
        finally:
            self.gate.leave()
        return wait_until

    # -- starting --------------------------------------------------------------------------------
    def _start(self, starts: list[tuple[str, str]]) -> None:
        now = time.time()
        specs: list[RunSpec] = []
        before = {rid: replace(self.rows[rid]) for rid, _ in starts}
        for rid, key in starts:
            row = self.rows[rid]
            attempt = row.attempt + 1
            resume = rid in self.resume_ids or any(attempt_started(attempt_dir(self.sd, rid, k)) for k in range(1, attempt))
            spec = build_spec(self.plan, self.plan_runs[rid], instance=key, mig_uuid=self.prep.uuid_of[key], attempt=attempt, state_dir=self.sd, resume=resume)
            try:
                prepare_attempt(spec)
            except OSError as exc:
                self._cannot_prepare(spec, exc)
                break
            specs.append(spec)
        for spec in specs:
            row = self.rows[spec.run_id]
            row.attempt = spec.attempt
            row.state = "starting"
            row.instance = spec.instance
            row.mig_uuid = spec.mig_uuid
            row.instance_mib = self.inst[spec.instance].memory_mib
            row.start_at, row.end_at, row.not_before = now, None, None
            row.exit_code = row.signal = row.peak_mib = None
            row.shim_pid = row.shim_create_time = row.child_pid = row.child_pgid = None

        def commit(st: Store) -> None:
            st.save_runs(self.rows[s.run_id] for s in specs)
            for s in specs:
                st.begin_attempt(self.rows[s.run_id])

        trouble = self.keeper.write(commit) if specs else None  # the intent is on disk before any process exists
        if trouble is not None:
            for s in specs:
                self.rows[s.run_id] = before[s.run_id]
            self._halt(f"cannot record the starts ({trouble.message}): stopped starting runs; running runs finish")
            return
        _crash_point("before-spawn")
        for spec in specs:
            self._spawn(spec)
        self._flush()

    def _cannot_prepare(self, spec: RunSpec, exc: OSError) -> None:
        where = exc.filename or spec.attempt_dir
        if exc.errno in NO_SPACE:
            self._halt(f"no space left on the device for {where}: stopped starting runs (running runs finish and keep their outcomes)")
        elif isinstance(exc, FileExistsError):
            self._halt(f"{exc}: stopped starting runs (launch again: the launcher then rebuilds its state from the run directories)")
        else:
            self._halt(f"cannot prepare {spec.run_id}'s attempt {spec.attempt} ({where}: {os_reason(exc)}): stopped starting runs")

    def _spawn(self, spec: RunSpec) -> None:
        row = self.rows[spec.run_id]
        adir = Path(spec.attempt_dir)
        result_r, result_w = os.pipe()
        os.set_blocking(result_r, False)
        try:
            p = spawn_shim(adir, result_fd=result_w)
        except OSError as exc:
            os.close(result_r)
            row.end_at = time.time()
            if exc.errno in NO_SPACE:
                self.ended.append(AttemptEnd.of(row, "lost", f"not started: {exc}"))
                self._requeue(row, f"attempt {row.attempt} not started: {os_reason(exc)}")
                self._halt(f"no space left on the device for {adir / 'shim.log'}: stopped starting runs")
                return
            self._failed_attempt(row, f"cannot start the shim: {exc}", "failed", early=True)
            return
        finally:
            os.close(result_w)
        row.shim_pid, row.shim_create_time, row.state = p.pid, create_time_of(p.pid), "running"
        a = Active(spec.run_id, spec.attempt, spec.instance, adir, p.pid, row.shim_create_time, popen=p, result_r=result_r)
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
        self.say(f"start {spec.run_id} attempt {spec.attempt} on GPU {where.gpu} {where.profile}@{where.start} {spec.mig_uuid}{note}")

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

    # -- the end ---------------------------------------------------------------------------------
    def _finish_launcher(self) -> LaunchResult:
        counts = Counter(r.state for r in self.rows.values())
        if self.stopping or self.draining:
            code = EXIT_INTERRUPTED
        elif self.flapping:
            code = EXIT_FLAPPING
        elif self.halted or counts.get("failed") or counts.get("oom") or counts.get("abandoned") or counts.get("unknown"):
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._flush()
        trouble = self.keeper.write(lambda st: st.set_launcher(state="exited", ended_at=time.time(), exit_code=code, cpu_s=ru.ru_utime + ru.ru_stime))
        if trouble is not None or self.dirty or self.ended:
            why = trouble.message if trouble is not None else "the last changes could not be written"
            self.say(f"{why}; the next `migbench launch` takes the runs' outcomes from their exit.json files")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if self.halted:
            self.say(f"stopped early: {self.halted}")
        if counts.get("unknown"):
            self.say(
                f"{counts['unknown']} run(s) ended with no record of how (outcome unknown): not run again; "
                f"`migbench launch {self.plan_file} --resume-unknown` runs them again with MIGBENCH_RESUME=1"
            )
        self.say(f"launcher done (exit {code}): {summary}")
        return LaunchResult(code, dict(counts), self.sd, self.stop_reason or self.flapping or self.halted)


def _crash_point(name: str) -> None:
    """For tests of recovery: MIGBENCH_LAUNCH_CRASH_AT=<name> makes the launcher die here at once,
    as `kill -9` would (no cleanup). Points: `before-spawn` (a start is committed, no shim exists
    yet), `after-spawn` (a shim runs, its PID is not recorded yet)."""
    if os.environ.get("MIGBENCH_LAUNCH_CRASH_AT") == name:
        os._exit(99)


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
