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

## The parts

`Supervisor` puts them together and runs the loop; each holds its own state:

- `journal.Journal`: the runs' rows in memory and their writes to `launch.db` (a full disk, a state
  directory deleted under the launcher);
- `admission.Admission`: the plan's runs and instances as queues (`queue.Queues`), what starts now;
- `children.Children`: the live attempts' processes: shims, adoption, orphans, reaping (never the plan);
- `outcomes.Outcomes`: what an attempt's end means for its run (retry, OOM move, failure, flapping);
- `devices.Devices`: the host lock, the bindings and the host's launch register (each start's device);
- `stops.Stops`: stop requests (`migbench stop`, signals) and the staged shutdown.

The run directories are a second record: when `launch.db` is missing, empty, damaged (moved aside)
or behind them, each run's state is rebuilt from its attempt directories (`rebuild`), and an
attempt directory whose run started is never reused.

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
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from migbench.backend.select import sim_dir, use_simulated_host
from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE
from migbench.launch.admission import Admission
from migbench.launch.bench import is_bench
from migbench.launch.children import Active, Children
from migbench.launch.devices import Devices
from migbench.launch.journal import Journal
from migbench.launch.keeper import Keeper
from migbench.launch.memory import MemorySampler
from migbench.launch.options import (
    EXIT_FAILED,
    EXIT_FLAPPING,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LaunchOptions,
    LaunchResult,
    crash_point,
)
from migbench.launch.outcomes import Outcomes
from migbench.launch.prepare import Prepared, preflight, retries_of, start_order
from migbench.launch.procs import create_time_of, set_child_subreaper
from migbench.launch.rebuild import rebuild_row, scan_attempts
from migbench.launch.spec import RunSpec, attempt_dir, attempt_started, build_spec, prepare_attempt
from migbench.launch.stops import Stops
from migbench.launch.store import LauncherRow, RunRow, Store, key_of
from migbench.launch.wakeup import Wakeup
from migbench.plan import Plan
from migbench.state import configure_modes


class Supervisor:
    """One launcher process over one plan's state dir. `run()` returns when nothing is left to do.
    It puts the parts together (see the module's notes) and runs the loop."""

    def __init__(self, prep: Prepared, opts: LaunchOptions, out: TextIO | None = None):
        self.prep = prep
        self.plan = prep.plan
        self.sd = prep.state_dir
        self.opts = opts
        self.out = out or sys.stdout
        self.poll_s = opts.poll()
        self.mem_poll_s = max(opts.mem_poll(), self.poll_s)
        self.grace_s = self.plan.launch.stop_grace_s
        self.plan_file = str(self.plan.path or "PLAN")
        self.keeper = Keeper(self.sd)
        self.journal = Journal(self.keeper, self.say, restate=self._restate)
        self.devices = Devices(prep, self.say)
        self.admission = Admission(self.journal, lend=opts.lend, unbound=self.devices.unbound)
        self.bench: Any = None  # the host's bench (`benchmode.BenchDriver`): the living scheduler places each run
        if is_bench(self.plan):
            from migbench.launch.benchmode import BenchDriver  # the planner (OR-Tools) is loaded only for a bench

            self.bench = BenchDriver(self)
            self.admission = self.bench.admission
        self.children = Children(self.say, self.grace_s, on_child=self._child_seen)
        self.outcomes = Outcomes(
            self.journal,
            self.admission,
            self.children,
            self.say,
            backoff_s=self.plan.launch.backoff_s,
            flap_window_s=self.plan.launch.flapping_window_s,
            flap_max=self.plan.launch.flapping_max,
            plan_file=self.plan_file,
            stop_reason=lambda: self.stops.reason,
        )
        self.stops = Stops(self.journal, self.children, self.say, grace_s=self.grace_s, drain=opts.drain, requested=self.keeper.stop_requested)
        self.wakeup = Wakeup()
        self.sampler = MemorySampler(self.mem_poll_s)
        self._mem_warned = False
        self.prev_stopping = False
        self.resume_ids: set[str] = set()  # runs of unknown outcome resumed on request (--resume-unknown)

    @property
    def store(self) -> Store:
        return self.journal.store

    @property
    def rows(self) -> dict[str, RunRow]:
        return self.journal.rows

    @property
    def active(self) -> dict[str, Active]:
        return self.children.active

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
            self.devices.open(stack)  # before the state directory is touched: a refused launch leaves nothing
            note = self.keeper.open(stack)
            if note:
                self.say(note)
            self.children.subreaper = set_child_subreaper(True)
            stack.callback(set_child_subreaper, False)
            self._init_state()
            self.wakeup.install(self.stops.signals.append)
            stack.callback(self.sampler.stop)
            stack.callback(self.wakeup.restore)
            self.say(f"launching {self.plan.name}: {len(self.rows)} runs; state and logs in {self.sd}")
            self.resume_ids = self.outcomes.recover(prev_stopping=self.prev_stopping, resume_unknown=self.opts.resume_unknown)
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
        self.journal.rows = st.runs()
        changed = self.admission.admit(self.plan, now)
        history: list[tuple[RunRow, Any]] = []
        for r in self.plan.runs if self.bench else start_order(self.plan):
            row = self.rows[r.id]
            disk = scan_attempts(self.sd, r.id)
            if disk and disk[-1].n > row.attempt:  # the database is behind the run's directory
                rebuild_row(row, disk, retries_of(self.plan, r))
                history.extend((row, d) for d in disk)
        if history:
            kinds = Counter(row.state for row in {id(r): r for r, _ in history}.values())
            self.say(
                f"rebuilt {sum(kinds.values())} run(s) from their directories (launch.db had no record of them): "
                + ", ".join(f"{k} {s}" for s, k in sorted(kinds.items()))
            )
        first = st.meta("sweep_started_at")
        self.admission.t0 = float(first) if first is not None else now

        def write(st: Store) -> None:
            st.save_runs(changed)
            for row, d in history:
                st.record_attempt(row.id, d.n, d.instance, d.mig_uuid, d.started_at, d.outcome)
            self._write_meta(st, first is None, now)
            if self.bench:
                self.bench.record_layouts(st, now)
            st.replace_launcher(self._launcher_row(now))

        trouble = self.keeper.write(write)
        if trouble is not None:
            raise MigbenchError(
                f"cannot record the launch: {trouble.message}", hint="free space in the state directory, then launch again; nothing was started"
            )

    def _write_meta(self, st: Store, started: bool, now: float) -> None:
        st.set_meta("plan_sha256", self.prep.sha256)
        st.set_meta("plan_file", str(Path(self.plan.path or "").resolve()))
        st.set_meta("sweep", self.plan.name)
        if started:
            st.set_meta("sweep_started_at", repr(now))

    def _restate(self, st: Store, halted: str | None) -> None:
        """What a re-created launch.db holds besides the runs (`Journal.state_lost`)."""
        now = time.time()
        self._write_meta(st, True, self.admission.t0)
        st.replace_launcher(replace(self._launcher_row(now), stop_reason=halted))

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

    def _child_seen(self, a: Active) -> None:
        """The run process of an attempt is known (`child.json`): its row records it."""
        row = self.rows[a.run_id]
        if row.child_pid != a.child_pid:
            row.child_pid, row.child_pgid = a.child_pid, a.child_pgid
            self.journal.mark(a.run_id)

    # -- the loop --------------------------------------------------------------------------------
    def _blocked(self) -> bool:
        """No run starts now: stopping, draining, flapping, or halted."""
        return bool(self.stops.any or self.outcomes.flapping or self.journal.halted)

    def _loop(self) -> None:
        next_beat = time.monotonic() + 5.0
        self.sampler.start()
        while True:
            self.stops.handle()
            # another launch may have let an instance go (one stat of the register; entries read only then)
            others = bool(self.devices.behind or self.bench) and self.devices.others_may_have_changed(time.monotonic())
            if self.bench:
                self.bench.adopt()
                self.bench.tick(others)
            self._apply_memory_sample()  # before reaping: the sample was taken while those runs lived
            for end in self.children.reap():
                self.outcomes.settle(end)
            mono = time.monotonic()
            self.admission.lending_due(time.time())  # a held-back head is late: reconsider every instance
            if others:
                for key in self.devices.behind:  # instances another launch holds: has it let them go?
                    self.admission.touch(key)
            self.stops.grace_over(mono)
            wait_until = self._schedule()
            if mono >= next_beat:
                self.journal.update(heartbeat_at=time.time())
                next_beat = mono + 5.0
            if self.journal.dirty:
                self.devices.sync(self.admission.booked(self.rows.values()))
            self.journal.flush()
            if not self.active and self._nothing_left(wait_until):
                break
            timeout = self.stops.timeout(self.poll_s)
            if wait_until is not None:
                timeout = min(timeout, max(0.0, wait_until - time.time()))
            if self.admission.lend_at is not None:
                timeout = min(timeout, max(0.0, self.admission.lend_at - time.time()))
            self.sampler.wanted = bool(self.active)
            self.wakeup.sleep(timeout)

    def _nothing_left(self, wait_until: float | None) -> bool:
        if self._blocked():
            return True
        if self.bench and self.bench.waiting():
            return False  # a sweep was submitted since this pass, or a re-cut is to be tried again
        queued = self.admission.queued()
        if not queued:
            return True
        if wait_until is not None or self.devices.waiting is not None:
            return False  # a retry waits out its backoff, or the starts wait for an apply
        if any(key_of(r.queue) in self.devices.behind for r in queued):
            return False  # runs wait for instances another live launch holds
        unbound = [r for r in queued if key_of(r.queue) in self.devices.unbound]
        if unbound:
            keys = sorted({r.queue.key for r in unbound if r.queue is not None})
            self.journal.halt(
                f"{len(unbound)} run(s) wait for instance(s) {', '.join(keys)} ({self.devices.why_unbound(keys)}): "
                f"run `migbench apply {self.plan.path}`, then `migbench launch` again"
            )
            return True
        for r in queued:  # nothing runs, nothing waits, and still nothing started: they never will
            r.state = "abandoned"
            r.last_error = f"cannot start: needs {r.need_mib} MiB on {r.queue}, which never has room"
            self.journal.mark(r.id)
            self.say(f"{r.id}: abandoned ({r.last_error})")
        self.journal.flush()
        return True

    def _schedule(self) -> float | None:
        """Start what the queue policy allows. Returns the earliest backoff end (Unix s), if any."""
        now = time.time()
        wait_until = self.admission.end_backoffs(now)
        if self._blocked():
            return wait_until
        if self.admission.idle() and self.devices.waiting is None:
            return wait_until
        if not any(r.state == "queued" for r in self.rows.values()):
            return wait_until
        starts = self.bench.decision(now) if self.bench else None
        if not self.devices.enter():
            return wait_until  # an apply changes GPUs: try again at the next wake-up
        try:
            if starts is None:
                starts = self.admission.pick(now, self.children.placed())
            starts = self.devices.admit(starts, self.rows, self.journal.dirty)
            if starts:
                self._start(starts)
        finally:
            self.devices.leave()
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
            spec = build_spec(
                self.plan, self.admission.plan_runs[rid], instance=key, mig_uuid=self.devices.uuid_of[key], attempt=attempt, state_dir=self.sd, resume=resume
            )
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
            row.instance = self.admission.inst[spec.instance].ref
            row.mig_uuid = spec.mig_uuid
            row.instance_mib = self.admission.inst[spec.instance].memory_mib
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
            self.journal.halt(f"cannot record the starts ({trouble.message}): stopped starting runs; running runs finish")
            return
        crash_point("before-spawn")
        for spec in specs:
            self._spawn(spec)
        self.journal.flush()

    def _cannot_prepare(self, spec: RunSpec, exc: OSError) -> None:
        where = exc.filename or spec.attempt_dir
        if exc.errno in NO_SPACE:
            self.journal.halt(f"no space left on the device for {where}: stopped starting runs (running runs finish and keep their outcomes)")
        elif isinstance(exc, FileExistsError):
            self.journal.halt(f"{exc}: stopped starting runs (launch again: the launcher then rebuilds its state from the run directories)")
        else:
            self.journal.halt(f"cannot prepare {spec.run_id}'s attempt {spec.attempt} ({where}: {os_reason(exc)}): stopped starting runs")

    def _spawn(self, spec: RunSpec) -> None:
        row = self.rows[spec.run_id]
        adir = Path(spec.attempt_dir)
        try:
            a = self.children.spawn(spec.run_id, spec.attempt, spec.instance, adir, timeout_s=self.admission.timeout_s(spec.run_id), start_at=row.start_at)
        except OSError as exc:
            row.end_at = time.time()
            if exc.errno in NO_SPACE:
                self.journal.end(row, "lost", f"not started: {exc}")
                self.outcomes.requeue(row, f"attempt {row.attempt} not started: {os_reason(exc)}")
                self.journal.halt(f"no space left on the device for {adir / 'shim.log'}: stopped starting runs")
                return
            self.outcomes.failed_attempt(row, f"cannot start the shim: {exc}", "failed", early=True)
            return
        row.shim_pid, row.shim_create_time, row.state = a.shim_pid, a.shim_ctime, "running"
        self.journal.mark(spec.run_id)
        crash_point("after-spawn")
        where = self.admission.inst[spec.instance]
        note = ""
        if spec.instance != key_of(row.queue):
            note = f" (lent: queued on {row.queue})"
        elif row.queue != row.home:
            note = f" (moved from {row.home} after an OOM)"
        self.say(f"start {spec.run_id} attempt {spec.attempt} on GPU {where.gpu} {where.profile}@{where.start} {spec.mig_uuid}{note}")

    # -- memory ----------------------------------------------------------------------------------
    def _apply_memory_sample(self) -> None:
        """Each active run's used memory on its MIG device (the sampler's newest NVML read), kept as
        the attempt's peak (`Children.usage`)."""
        if self.sampler.error and not self._mem_warned:
            self.say(f"cannot read GPU memory through NVML ({self.sampler.error}); peak memory is not recorded")
            self._mem_warned = True
        sample = self.sampler.take()
        if not sample:
            return
        for rid, used in self.children.usage(sample, lambda rid: self.rows[rid].mig_uuid).items():
            row = self.rows[rid]
            if used > (row.peak_mib if row.peak_mib is not None else -1):
                row.peak_mib = used
                self.journal.mark(rid)

    # -- the end ---------------------------------------------------------------------------------
    def _finish_launcher(self) -> LaunchResult:
        counts = Counter(r.state for r in self.rows.values())
        halted, flapping = self.journal.halted, self.outcomes.flapping
        if self.stops.any:
            code = EXIT_INTERRUPTED
        elif flapping:
            code = EXIT_FLAPPING
        elif halted or counts.get("failed") or counts.get("oom") or counts.get("abandoned") or counts.get("unknown"):
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.journal.flush()
        trouble = self.keeper.write(lambda st: st.set_launcher(state="exited", ended_at=time.time(), exit_code=code, cpu_s=ru.ru_utime + ru.ru_stime))
        if trouble is not None or self.journal.dirty or self.journal.ended:
            why = trouble.message if trouble is not None else "the last changes could not be written"
            self.say(f"{why}; the next `migbench launch` takes the runs' outcomes from their exit.json files")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if halted:
            self.say(f"stopped early: {halted}")
        if counts.get("unknown"):
            self.say(
                f"{counts['unknown']} run(s) ended with no record of how (outcome unknown): not run again; "
                f"`migbench launch {self.plan_file} --resume-unknown` runs them again with MIGBENCH_RESUME=1"
            )
        self.say(f"launcher done (exit {code}): {summary}")
        return LaunchResult(code, dict(counts), self.sd.path, self.stops.reason or flapping or halted)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def launch(plan: Plan, opts: LaunchOptions, out: TextIO | None = None) -> LaunchResult:
    """Supervise every run of `plan` until each has finished (or a stop). Raises MigbenchError when
    the plan is not applied, another launcher runs it, or the state belongs to another plan."""
    use_simulated_host(sim_dir())  # absolute: shims and runs start in other directories
    prep = preflight(plan, opts.state_dir)
    return Supervisor(prep, opts, out).run()


__all__ = ["Supervisor", "launch"]
