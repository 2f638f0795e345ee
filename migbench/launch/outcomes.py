"""Outcome recording: how an attempt's end moves its run on, written to the journal.

Success; a retry after a backoff (`backoff_s * 2**(failures-1)`); an OOM move to a larger
instance; failure when the retries are used up (a command that cannot start, or a usage error in
its first minute, is not retried); `interrupted` when the launcher stopped it; `unknown` when it
started and left no record (not run again unless the user asks: `launch --resume-unknown`); a
re-queue when its run never started. The flapping guard stops new starts once `flap_max` distinct
runs fail within `flap_window_s` of their start. `recover` takes over what an earlier launcher
left (see `children`'s notes on adoption).

`Outcomes` decides from the endings the process layer reports (`children.Ending`); its own state is
the flapping guard's. It changes rows through the `Journal` and asks `Admission` for queues.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from migbench.launch.admission import Admission
from migbench.launch.children import Active, Children, Ending, signame
from migbench.launch.journal import Journal
from migbench.launch.options import NOT_STARTED
from migbench.launch.spec import Outcome, attempt_dir
from migbench.launch.store import ACTIVE_STATES, RunRow, key_of

USAGE_EXIT, USAGE_WINDOW_S = 2, 60.0
"""A run that exits 2 (argparse's and Hydra's usage error) within a minute of its start is not retried."""


class Outcomes:
    """Outcomes of attempts, recorded into `journal`. `stop_reason()` says why the launcher stops
    (for the note of an interrupted run); `plan_file` is named in the hint of an unknown outcome."""

    def __init__(
        self,
        journal: Journal,
        admission: Admission,
        children: Children,
        say: Callable[[str], None],
        *,
        backoff_s: float,
        flap_window_s: float,
        flap_max: int,
        plan_file: str = "PLAN",
        stop_reason: Callable[[], str | None] = lambda: None,
    ):
        self.journal = journal
        self.admission = admission
        self.children = children
        self.say = say
        self.backoff_s = backoff_s
        self.flap_window_s = flap_window_s
        self.flap_max = flap_max
        self.plan_file = plan_file
        self.stop_reason = stop_reason
        self.flapping: str | None = None  # why the flapping guard stopped new starts
        self.early_failures: list[tuple[float, str]] = []  # (when, run id) of failures early in their run

    def settle(self, end: Ending) -> None:
        """Record an ending the process layer reported (`Children.reap`)."""
        if end.kind == "exit":
            self.on_exit(end.a, end.res, end.rc)
        elif end.kind == "unknown":
            self.unknown(end.a, end.why)
        elif end.kind == "lost":
            self.never_started(end.a, end.why)
            if end.halt:
                self.journal.halt(end.halt)
        else:
            raise ValueError(f"not an ending: {end.kind}")

    def on_exit(self, a: Active, res: Outcome | None, shim_rc: int | None) -> None:
        self.admission.touch(a.instance)
        row = self.journal.rows[a.run_id]
        row.end_at = res.ended_at if res else time.time()
        if res is not None:
            row.exit_code, row.signal = res.returncode, res.signal
        row.shim_pid = row.shim_create_time = None
        self.journal.mark(a.run_id)
        took = f"{(row.end_at - (row.start_at or row.end_at)):.1f} s"
        early = row.start_at is not None and row.end_at - row.start_at <= self.flap_window_s
        if a.stop_signaled and (res is None or res.returncode != 0):
            row.state = "interrupted"
            row.last_error = f"interrupted by the launcher ({self.stop_reason() or 'stop'})"
            self.journal.end(row, "interrupted", row.last_error)
            self.say(f"interrupted {a.run_id} attempt {a.attempt} after {took}")
            return
        if res is None:
            if a.popen is None:  # adopted, and its run never started (`Children._shim_died`)
                self.journal.end(row, "lost", "the shim disappeared before the run started")
                self.requeue(row, f"attempt {a.attempt}'s shim disappeared before the run started")
                self.say(f"{a.run_id}: attempt {a.attempt}'s shim disappeared before the run started; re-queued")
                return
            self.failed_attempt(row, f"the shim exited with code {shim_rc} without a result (see {a.adir / 'shim.log'})", "failed", early)
            return
        if res.returncode == 0:
            row.state = "succeeded"
            row.last_error = None
            self.journal.end(row, "succeeded", None)
            self.say(f"done {a.run_id} attempt {a.attempt} succeeded in {took}")
            return
        if res.oom:
            self._oom(a, row, res, early)
            return
        rc = res.returncode
        if res.exec_error or (rc is not None and rc in NOT_STARTED and res.signal is None and not res.timed_out):
            # the command could not start (not found, not executable, no workdir): a retry fails the same way
            why = res.exec_error or f"exit code {rc} ({NOT_STARTED.get(rc or 0, '')})"
            self.failed_attempt(row, why + "; not retried", "failed", early, retry=False)
            return
        if rc == USAGE_EXIT and res.signal is None and not res.timed_out and row.end_at - (row.start_at or row.end_at) <= USAGE_WINDOW_S:
            # a usage error (argparse, Hydra's override parser) in the run's first seconds: a retry fails the same way
            self.failed_attempt(row, f"exit code 2 after {took}, a usage error (check the command line); not retried", "failed", early, retry=False)
            return
        if res.timed_out:
            limit = self.admission.timeout_s(a.run_id)
            why = f"timed out after {limit:g} s" if limit is not None else "timed out"
        elif res.signal is not None:
            why = f"killed by {signame(res.signal)} (exit {res.returncode})"
        else:
            why = f"exit code {res.returncode}"
        self.failed_attempt(row, why, "failed", early)

    def failed_attempt(self, row: RunRow, why: str, outcome: str, early: bool, retry: bool = True) -> None:
        in_plan = row.id in self.admission.plan_runs
        row.failures += 1
        allowed = self.admission.retries(row.id) if retry else 0
        self.journal.end(row, outcome, why)
        if in_plan and row.failures <= allowed:
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
        inst = self.admission.inst.get(a.instance)
        inst_mib = inst.memory_mib if inst else (row.instance_mib or 0)
        peak = row.peak_mib
        need = max(row.need_mib, peak or 0)
        if not a.shared:
            need = max(need, inst_mib + 1)  # alone on the instance and still out of memory
        target = self.admission.escalate(row, need, a.instance, self.children.placed())
        seen = f"peak {peak} MiB" if peak is not None else "peak not observed"
        detail = f"out of memory on {a.instance} ({inst_mib} MiB instance, {seen})"
        if res.oom_line:
            detail += f": {res.oom_line}"
        self.journal.end(row, "oom", detail)
        if target is not None:
            self.admission.move(row, target, need)
            row.last_error = f"attempt {row.attempt}: {detail}; moved to {self.admission.where(target)}"
            self.say(f"oom {row.id} attempt {row.attempt} on {a.instance} ({inst_mib} MiB); retrying on {self.admission.where(target)}")
        else:
            row.state = "oom"
            row.last_error = f"attempt {row.attempt}: {detail}; no larger instance in the plan allows this run"
            self.say(f"oom {row.id} attempt {row.attempt} on {a.instance} ({inst_mib} MiB, {seen}); no larger instance")
        self._note_failure(row, early)

    def _note_failure(self, row: RunRow, early: bool) -> None:
        """The flapping guard: `flap_max` distinct runs failing within `flap_window_s` of their
        start, inside one window, stop new launches (running runs continue)."""
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
            self.journal.update(flapping=self.flapping, state="flapping")
            self.say(f"flapping guard: {self.flapping}; {len(self.children.active)} running run(s) continue")

    def requeue(self, row: RunRow, note: str | None) -> None:
        if not self.admission.in_plan(row):
            row.state, row.last_error = "abandoned", "no longer in the plan"
        else:
            row.state = "queued"
            row.last_error = note
            row.not_before = None
            row.queued_at = time.time()
        row.shim_pid = row.shim_create_time = row.child_pid = row.child_pgid = None
        self.journal.mark(row.id)
        self.admission.touch(key_of(row.queue))

    def unknown(self, a: Active, why: str) -> None:
        """The attempt started, left no record of its end, and nothing of it lives: its outcome is
        unknown. The run is not run again unless the user asks (`launch --resume-unknown`)."""
        self.admission.touch(a.instance)
        row = self.journal.rows[a.run_id]
        row.end_at = time.time()
        row.exit_code = row.signal = None
        row.state = "unknown"
        row.last_error = (
            f"attempt {a.attempt}: outcome unknown: {why}; not run again: `migbench launch {self.plan_file} --resume-unknown` "
            "runs it again with MIGBENCH_RESUME=1"
        )
        row.shim_pid = row.shim_create_time = None
        self.journal.end(row, "unknown", why)
        self.say(f"{a.run_id}: attempt {a.attempt}: outcome unknown ({why}); not run again (`launch --resume-unknown` resumes it)")

    def never_started(self, a: Active, why: str) -> None:
        self.admission.touch(a.instance)
        row = self.journal.rows[a.run_id]
        row.end_at = time.time()
        self.journal.end(row, "lost", why)
        self.requeue(row, f"attempt {a.attempt}: {why}")
        self.say(f"{a.run_id}: attempt {a.attempt}: {why}; re-queued")

    # -- recovery --------------------------------------------------------------------------------
    def recover(self, *, prev_stopping: bool, resume_unknown: bool) -> set[str]:
        """Take over the runs an earlier launcher left active (adopt, take results, wait for orphans,
        re-queue, or mark unknown), re-queue interrupted runs, and with `resume_unknown` the runs of
        unknown outcome. Returns the runs resumed that way (they start with MIGBENCH_RESUME=1)."""
        resumed: set[str] = set()
        n = dict.fromkeys(("adopted", "requeued", "taken", "orphans", "unknown"), 0)
        sd = self.journal.keeper.sd
        for rid, row in self.journal.rows.items():
            if row.state in ACTIVE_STATES:
                end = self.children.adopt(
                    rid,
                    row.attempt,
                    key_of(row.instance) or "",
                    attempt_dir(sd, rid, row.attempt),
                    (row.shim_pid, row.shim_create_time),
                    starting=row.state == "starting",
                    stopping=prev_stopping,
                    timeout_s=self.admission.timeout_s(rid),
                    start_at=row.start_at,
                )
                if end.kind in ("adopted", "orphan"):
                    row.state = "running"
                    if end.kind == "adopted":
                        row.shim_pid, row.shim_create_time = end.a.shim_pid, end.a.shim_ctime
                    self.journal.mark(rid)
                    n["adopted" if end.kind == "adopted" else "orphans"] += 1
                elif end.kind == "exit":
                    self.on_exit(end.a, end.res, None)
                    n["taken"] += 1
                elif end.kind == "lost":
                    row.end_at = time.time()
                    self.journal.end(row, "lost", end.why)
                    self.requeue(row, f"attempt {row.attempt} never started its run")
                    n["requeued"] += 1
                else:
                    self.unknown(end.a, end.why)
                    n["unknown"] += 1
            elif row.state == "interrupted":
                self.requeue(row, row.last_error)
                n["requeued"] += 1
            elif row.state == "unknown" and resume_unknown:
                resumed.add(rid)
                self.requeue(row, f"attempt {row.attempt}'s outcome was unknown: resumed on request (--resume-unknown)")
                self.say(f"{rid}: outcome of attempt {row.attempt} unknown: resuming it on request (MIGBENCH_RESUME=1)")
                n["requeued"] += 1
        self.children.share_all(a.instance for a in self.children.active.values())  # adopted runs share instances with each other
        if any(n.values()):
            self.say(
                f"resuming: adopted {n['adopted']} running run(s), waiting for {n['orphans']} run(s) whose shim is gone, "
                f"took {n['taken']} result(s), re-queued {n['requeued']} run(s), {n['unknown']} outcome(s) unknown"
            )
        self.journal.flush()
        return resumed
