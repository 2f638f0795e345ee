"""How an attempt's end moves its run on: success, a retry after a backoff, an OOM move to a larger
instance, failure when the retries are used up, the flapping guard; and a shim that died without a
result; and the adoption of what an earlier launcher left (`_recover`). A part of the supervisor
(`Supervisor` inherits it), kept apart for its size.

Where an attempt's outcome comes from, first found first: `exit.json` (the shim's); the document
the shim wrote to the launcher's pipe (it holds when the attempt directory was deleted); the
waiter's `wait.json` (`launch.waiter`: the run's parent records its exit status whatever happened
to the shim and the launcher), turned into `exit.json` by the launcher. A run whose process (or its
waiter) still lives, identified by PID and start time, is never started again: the launcher keeps
it as an orphan and waits for it. Only when no record exists and nothing of the run lives is the
outcome `unknown`: the run is not run again unless the user asks (`launch --resume-unknown`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from migbench.fsutil import disk_full, write_json_atomic
from migbench.launch.options import NOT_STARTED, OOM_RANK_SHIFT
from migbench.launch.prepare import retries_of
from migbench.launch.procs import find_shim, kill_group, process_alive, read_json, wait_child, wait_group_gone
from migbench.launch.queue import Queues, Waiting
from migbench.launch.shim import RESERVE_NAME, exit_record
from migbench.launch.spec import Outcome, attempt_dir, attempt_started, outcome_of
from migbench.launch.store import ACTIVE_STATES, AttemptEnd, RunRow
from migbench.launch.waiter import alive, read_record, wait_status
from migbench.plan import PlanInstance, PlanRun

USAGE_EXIT, USAGE_WINDOW_S = 2, 60.0
"""A run that exits 2 (argparse's and Hydra's usage error) within a minute of its start is not retried."""


@dataclass
class Active:
    """A run whose shim is alive (ours or adopted), or whose shim died and left its run to us (`orphan`)."""

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
    orphan: bool = False  # the shim is gone; the launcher waits for the run itself
    kill_at: float | None = None  # an orphan's timeout: SIGTERM at this time, SIGKILL after the grace
    timed_out: bool = False
    child_ticks: int | None = None  # the run's start time (clock ticks since boot): its identity with its PID
    waiter_pid: int | None = None  # the run's parent, `mb-wait` (launch.waiter)
    waiter_ticks: int | None = None
    result_r: int | None = None  # the read end of the shim's result pipe (our shims only)
    piped: dict[str, Any] | None = None  # what the shim wrote there


class Outcomes:
    """The supervisor's outcome handling (attributes are the supervisor's)."""

    active: dict[str, Active]
    rows: dict[str, RunRow]
    dirty: set[str]
    ended: list[AttemptEnd]
    plan: Any
    plan_runs: dict[str, PlanRun]
    inst: dict[str, PlanInstance]
    queues: Queues
    backoff_s: float
    flap_window_s: float
    flap_max: int
    flapping: str | None
    early_failures: list[tuple[float, str]]
    launcher_updates: dict[str, Any]
    stop_reason: str | None
    subreaper: bool
    grace_s: float
    plan_file: str

    sd: Path
    opts: Any
    prev_stopping: bool
    resume_ids: set[str]

    def _read_child(self, a: Active) -> None:
        raise NotImplementedError

    def _mark_shared(self, instance: str, run_id: str) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _halt(self, reason: str) -> None:
        raise NotImplementedError

    def say(self, text: str) -> None:
        raise NotImplementedError

    def _touch(self, key: str | None) -> None:
        raise NotImplementedError

    def _requeue(self, row: RunRow, note: str | None) -> None:
        raise NotImplementedError

    def _waiting(self, now: float) -> list[Waiting]:
        raise NotImplementedError

    def _running_jobs(self) -> dict[str, list]:
        raise NotImplementedError

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
            if a.popen is None:  # adopted, and its run never started (`_shim_died`)
                self.ended.append(AttemptEnd.of(row, "lost", "the shim disappeared before the run started"))
                self._requeue(row, f"attempt {a.attempt}'s shim disappeared before the run started")
                self.say(f"{a.run_id}: attempt {a.attempt}'s shim disappeared before the run started; re-queued")
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
        if rc == USAGE_EXIT and res.signal is None and not res.timed_out and row.end_at - (row.start_at or row.end_at) <= USAGE_WINDOW_S:
            # a usage error (argparse, Hydra's override parser) in the run's first seconds: a retry fails the same way
            self._failed_attempt(row, f"exit code 2 after {took}, a usage error (check the command line); not retried", "failed", early, retry=False)
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

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        adopted = requeued = taken = orphans = unknown = 0
        for rid, row in self.rows.items():
            if row.state in ACTIVE_STATES:
                adir = attempt_dir(self.sd, rid, row.attempt)
                pid, ctime = row.shim_pid, row.shim_create_time
                if not (pid and process_alive(pid, ctime)) and row.state == "starting" and not pid:
                    found = find_shim(adir)
                    if found:
                        pid, ctime = found
                a = Active(rid, row.attempt, row.instance or "", adir, int(pid or 0), ctime)
                self._read_child(a)
                if pid and process_alive(pid, ctime):
                    self.active[rid] = a
                    row.state, row.shim_pid, row.shim_create_time = "running", pid, ctime
                    self.dirty.add(rid)
                    adopted += 1
                    continue
                a.stop_signaled = self.prev_stopping
                res = self._result(a)
                if res is not None:  # exit.json, or the waiter's record of a run that ended while nothing of migbench lived
                    self._on_exit(a, res, None)
                    taken += 1
                    continue
                if self._run_alive(a):  # the shim is gone, the run (or its waiter) works on: wait for it
                    self.active[rid] = a
                    row.state = "running"
                    self.dirty.add(rid)
                    self._keep_orphan(a, f"{rid}: attempt {row.attempt}'s shim is gone; its run (PID {a.child_pid}) goes on: waiting for it")
                    orphans += 1
                    continue
                row.end_at = time.time()
                child = read_json(adir / "child.json") or {}
                if child.get("pgid") and kill_group(int(child["pgid"]), signal.SIGKILL):
                    wait_group_gone(int(child["pgid"]))
                    self.say(f"{rid}: killed the orphaned process group {child['pgid']} of attempt {row.attempt}")
                # The attempt directory is made first and cmd.json written last, before the shim is started:
                # a directory without cmd.json and without a start mark is a launcher killed while preparing.
                vanished = not adir.is_dir() or (not (adir / "cmd.json").exists() and attempt_started(adir))
                if not attempt_started(adir) and not vanished:  # the launcher (or the shim) died before this attempt's run started
                    requeued += 1
                    self.ended.append(AttemptEnd.of(row, "lost", "never started: its launcher or shim died before the run started"))
                    self._requeue(row, f"attempt {row.attempt} never started its run")
                    continue
                unknown += 1
                self.active[rid] = a  # `_unknown` takes it out again
                if vanished:
                    self._unknown(a, f"its attempt directory {adir} was deleted while nothing of migbench watched it")
                else:
                    self._unknown(a, "its run started, and its shim, its waiter and the run are gone without a record of how it ended")
            elif row.state == "interrupted":
                self._requeue(row, row.last_error)
                requeued += 1
            elif row.state == "unknown" and self.opts.resume_unknown:
                self.resume_ids.add(rid)
                self._requeue(row, f"attempt {row.attempt}'s outcome was unknown: resumed on request (--resume-unknown)")
                self.say(f"{rid}: outcome of attempt {row.attempt} unknown: resuming it on request (MIGBENCH_RESUME=1)")
                requeued += 1
        for a in self.active.values():  # adopted runs share instances with each other
            self._mark_shared(a.instance, a.run_id)
        if adopted or requeued or taken or orphans or unknown:
            self.say(
                f"resuming: adopted {adopted} running run(s), waiting for {orphans} run(s) whose shim is gone, "
                f"took {taken} result(s), re-queued {requeued} run(s), {unknown} outcome(s) unknown"
            )
        self._flush()

    # -- a shim that died without a result -------------------------------------------------------
    def _drain_result(self, a: Active) -> None:
        """Our shim has ended: read what it wrote to its result pipe, then close the pipe."""
        if a.result_r is None:
            return
        data = b""
        try:
            while True:
                chunk = os.read(a.result_r, 65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass  # nothing more now (BlockingIOError): the shim is gone, so nothing more comes
        finally:
            os.close(a.result_r)
            a.result_r = None
        for line in reversed(data.splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                a.piped = doc
                return

    def _result(self, a: Active) -> Outcome | None:
        """The attempt's outcome from its records (see the module's notes), or None."""
        res = outcome_of(read_json(a.adir / "exit.json"))
        if res is not None:
            return res
        res = outcome_of(a.piped)
        if res is not None:
            return res
        rec = read_record(a.adir) if attempt_started(a.adir) else None  # a run stopped at the gate never ran
        if rec is None:
            if a.popen is not None and a.popen.returncode == 0:  # our shim exits 0 only when its run did
                return Outcome(0, 0, None, False, None, False, None, time.time())
            return None
        cmd = read_json(a.adir / "cmd.json") or {}
        child = read_json(a.adir / "child.json") or {}
        ended = rec.get("ended_at")
        doc = exit_record(
            a.adir,
            cmd,
            int(rec["pid"]),
            wait_status(rec),
            float(child.get("started_at") or 0.0),
            timed_out=a.timed_out,
            recorded_by="launcher",
            ended_at=float(ended) if isinstance(ended, (int, float)) else None,
        )
        try:
            write_json_atomic(a.adir / "exit.json", doc, reserve=a.adir / RESERVE_NAME)
        except OSError as exc:
            self.say(f"{a.run_id}: cannot write {a.adir / 'exit.json'}: {exc} (the outcome is kept in launch.db)")
        return outcome_of(doc)

    def _run_alive(self, a: Active) -> bool:
        """Whether the attempt's run, or its waiter, still lives (PID and start time)."""
        return alive(a.child_pid, a.child_ticks) or alive(a.waiter_pid, a.waiter_ticks)

    def _keep_orphan(self, a: Active, note: str) -> None:
        """The shim is gone while the run lives: wait for the run (never start it again)."""
        a.orphan, a.popen = True, None
        limit = self.plan_runs[a.run_id].timeout_s if a.run_id in self.plan_runs else None
        child = read_json(a.adir / "child.json") or {}
        if limit is not None:
            a.kill_at = float(child.get("started_at") or self.rows[a.run_id].start_at or time.time()) + float(limit)
        self.say(note)

    def _shim_died(self, a: Active, rc: int | None) -> bool:
        """A shim (ours, or adopted: `rc` None) ended without a result. While its run or the run's
        waiter lives, the launcher keeps the run as an orphan and waits for it; a run that never
        passed the shim's gate is re-queued (a killed shim is not the run's failure); a run that
        started, left no record and is gone has an unknown outcome. True when handled here, False
        to let `_on_exit` count a failed attempt (or re-queue an adopted shim's unstarted run)."""
        self._read_child(a)
        if a.child_pid and self.subreaper:
            ours, status = wait_child(a.child_pid)
            if ours and status is not None:  # the run ended under us (its waiter had died)
                self._orphan_ended(a, status)
                return True
        if self._run_alive(a):
            self._keep_orphan(a, f"{a.run_id}: attempt {a.attempt}'s shim died (code {rc}); its run goes on under the launcher")
            return True
        res = self._result(a)  # the waiter recorded it meanwhile
        if res is not None:
            self._on_exit(a, res, rc)
            return True
        kill_group(a.child_pgid, signal.SIGKILL)  # what is left of the run: nothing of it goes on unwatched
        if a.stop_signaled:
            return False
        if attempt_started(a.adir):
            self._unknown(a, f"its shim ended (code {rc}) and its run is gone without a record of how it ended")
            return True
        if a.child_pid and not (a.adir / "cmd.json").exists():  # its run was forked, then the directory deleted
            self._unknown(a, f"its attempt directory {a.adir} was deleted, and its shim ended (code {rc}) without a result")
            return True
        if rc is None:
            return False
        if rc < 0:
            self._never_started(a, f"the shim was killed ({_signame(-rc)}) before the run started")
        elif not (a.adir / "cmd.json").exists():
            self._never_started(a, f"its attempt directory {a.adir} vanished before the run started")
        elif disk_full(a.adir.parent):
            self._never_started(a, "the shim could not start the run: no space left on the device")
            self._halt(f"no space left on the device under {a.adir.parent.parent}: stopped starting runs (running runs finish and keep their outcomes)")
        else:
            return False  # the shim's own failure: counted like a failed attempt (see shim.log)
        return True

    def _unknown(self, a: Active, why: str) -> None:
        """The attempt started, left no record of its end, and nothing of it lives: its outcome is
        unknown. The run is not run again unless the user asks (`launch --resume-unknown`)."""
        self.active.pop(a.run_id, None)
        self._touch(a.instance)
        row = self.rows[a.run_id]
        row.end_at = time.time()
        row.exit_code = row.signal = None
        row.state = "unknown"
        row.last_error = (
            f"attempt {a.attempt}: outcome unknown: {why}; not run again: `migbench launch {self.plan_file} --resume-unknown` "
            "runs it again with MIGBENCH_RESUME=1"
        )
        row.shim_pid = row.shim_create_time = None
        self.ended.append(AttemptEnd.of(row, "unknown", why))
        self.dirty.add(a.run_id)
        self.say(f"{a.run_id}: attempt {a.attempt}: outcome unknown ({why}); not run again (`launch --resume-unknown` resumes it)")

    def _never_started(self, a: Active, why: str) -> None:
        self.active.pop(a.run_id, None)
        self._touch(a.instance)
        row = self.rows[a.run_id]
        row.end_at = time.time()
        self.ended.append(AttemptEnd.of(row, "lost", why))
        self._requeue(row, f"attempt {a.attempt}: {why}")
        self.say(f"{a.run_id}: attempt {a.attempt}: {why}; re-queued")

    def _reap_orphan(self, a: Active) -> None:
        if a.child_pid and self.subreaper:
            ours, status = wait_child(a.child_pid)
            if ours and status is not None:
                self._orphan_ended(a, status)
                return
        res = self._result(a)
        if res is None and self._run_alive(a):
            now = time.time()
            if a.kill_at is not None and now >= a.kill_at:
                sig = signal.SIGKILL if a.timed_out else signal.SIGTERM
                a.timed_out = True
                a.kill_at = now + max(self.grace_s, 0.01)
                kill_group(a.child_pgid, sig)
            return
        res = res or self._result(a)  # the waiter records before it ends: look again once all is gone
        if res is not None:
            self._on_exit(a, res, None)
            return
        kill_group(a.child_pgid, signal.SIGKILL)
        if not attempt_started(a.adir):
            self._never_started(a, "the shim died before the run started")
            return
        self._unknown(a, "its run ended while its waiter was gone (no record of how)")

    def _orphan_ended(self, a: Active, status: int) -> None:
        """Write the orphan's `exit.json` as its shim would have, then take the result (or re-queue
        the run when its process never passed the gate: the shim died first)."""
        kill_group(a.child_pgid, signal.SIGKILL)
        if not attempt_started(a.adir):
            self._never_started(a, "the shim died before the run started")
            return
        cmd = read_json(a.adir / "cmd.json") or {}
        child = read_json(a.adir / "child.json") or {}
        doc = exit_record(a.adir, cmd, a.child_pid or 0, status, float(child.get("started_at") or 0.0), timed_out=a.timed_out, recorded_by="launcher")
        try:
            write_json_atomic(a.adir / "exit.json", doc, reserve=a.adir / RESERVE_NAME)
        except OSError as exc:
            self.say(f"{a.run_id}: cannot write {a.adir / 'exit.json'}: {exc} (the outcome is kept in launch.db)")
        self._on_exit(a, outcome_of(doc), None)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
