"""Process supervision: the launcher's live attempts (`Active`), their shims, orphans and strays.

`Children` owns every attempt that has a live process (ours, adopted from an earlier launcher, or an
orphan whose shim died while its run goes on). It starts shims, signals runs, waits for them and
says how each attempt ended (`Ending`); what an ending means for the run (a retry, an OOM move, a
failure) is decided elsewhere (`launch.outcomes`). It never reads the plan: what it needs of a run
(its timeout) comes with the attempt.

Where an attempt's outcome comes from, first found first: `exit.json` (the shim's); the document
the shim wrote to the launcher's pipe (it holds when the attempt directory was deleted); the
waiter's `wait.json` (`launch.waiter`: the run's parent records its exit status whatever happened
to the shim and the launcher), turned into `exit.json` by the launcher. A run whose process (or its
waiter) still lives, identified by PID and start time, is never started again: the launcher keeps
it as an orphan and waits for it. Only when no record exists and nothing of the run lives is the
outcome `unknown`.

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
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.fsutil import disk_full, write_json_atomic
from migbench.launch.procs import create_time_of, find_shim, kill_group, process_alive, read_json, reap_strays, spawn_shim, wait_child, wait_group_gone
from migbench.launch.shim import NOT_STARTED_RC, RESERVE_NAME, ExitDoc, exit_record
from migbench.launch.spec import Outcome, attempt_started, outcome_of, record_stop
from migbench.launch.waiter import alive, read_record, wait_status


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
    timeout_s: float | None = None  # the run's time limit (an orphan is stopped by the launcher after it)
    start_at: float | None = None  # when the launcher started the attempt (Unix s)


@dataclass(frozen=True)
class Ending:
    """What the process layer found about an attempt. `kind`:

    - `exit`: it ended; `res` is its outcome (None: no record: a failed attempt, or for an adopted
      shim a run that never started), `rc` the shim's exit code (None when not our child);
    - `lost`: its run never started (re-queue it; `halt` set when the disk is full);
    - `unknown`: its run started, left no record and nothing of it lives;
    - from `adopt` only: `adopted` (its shim lives) and `orphan` (its run lives on without its shim),
      both now in `Children.active`."""

    a: Active
    kind: str
    res: Outcome | None = None
    rc: int | None = None
    why: str = ""
    halt: str | None = None


class Children:
    """The live attempts (`active`, run id -> `Active`). `on_child` is called when an attempt's run
    process (`child.json`) is first known, so its row can record it."""

    def __init__(self, say: Callable[[str], None], grace_s: float, on_child: Callable[[Active], None] = lambda a: None):
        self.say = say
        self.grace_s = grace_s
        self.on_child = on_child
        self.active: dict[str, Active] = {}
        self.subreaper = False  # whether this process reaps its shims' orphans (`procs.set_child_subreaper`)

    def placed(self) -> list[tuple[str, str]]:
        """(run id, instance) of every live attempt."""
        return [(a.run_id, a.instance) for a in self.active.values()]

    # -- starting --------------------------------------------------------------------------------
    def spawn(self, run_id: str, attempt: int, instance: str, adir: Path, *, timeout_s: float | None, start_at: float | None) -> Active:
        """Start the shim of an attempt whose directory is prepared; it is active from now on.
        Raises OSError (nothing is left open then)."""
        result_r, result_w = os.pipe()
        os.set_blocking(result_r, False)
        try:
            p = spawn_shim(adir, result_fd=result_w)
        except OSError:
            os.close(result_r)
            raise
        finally:
            os.close(result_w)
        a = Active(run_id, attempt, instance, adir, p.pid, create_time_of(p.pid), popen=p, result_r=result_r, timeout_s=timeout_s, start_at=start_at)
        self.active[run_id] = a
        self.mark_shared(instance)
        return a

    def mark_shared(self, instance: str) -> None:
        together = [a for a in self.active.values() if a.instance == instance]
        if len(together) > 1:
            for a in together:
                a.shared = True

    # -- signals ---------------------------------------------------------------------------------
    def signal_all(self, sig: int) -> None:
        for a in self.active.values():
            self.signal(a, sig)

    def signal(self, a: Active, sig: int) -> None:
        if not a.stop_signaled:
            record_stop(a.adir, sig)
        a.stop_signaled = True
        if a.orphan:
            kill_group(a.child_pgid, sig)
            return
        if a.popen is not None:
            running = a.popen.poll() is None
        else:
            running = process_alive(a.shim_pid, a.shim_ctime)
        if not running:
            return
        if a.child_pgid is None:
            self.read_child(a)
        if a.child_pgid is not None and kill_group(a.child_pgid, sig):
            return
        try:  # the shim has not forked yet: it forwards SIGTERM; SIGKILL stops it before the run starts
            os.kill(a.shim_pid, sig)
        except ProcessLookupError:
            pass

    def read_child(self, a: Active) -> None:
        doc = read_json(a.adir / "child.json")
        if doc and doc.get("pid"):
            a.child_pid = int(doc["pid"])
            a.child_pgid = int(doc.get("pgid") or doc["pid"])
            ticks, wpid, wticks = doc.get("start_ticks"), doc.get("waiter_pid"), doc.get("waiter_ticks")
            a.child_ticks = ticks if isinstance(ticks, int) else None
            a.waiter_pid = wpid if isinstance(wpid, int) else None
            a.waiter_ticks = wticks if isinstance(wticks, int) else None
            self.on_child(a)

    # -- memory ----------------------------------------------------------------------------------
    def usage(self, sample: Mapping[str, Sequence[tuple[int, int]]], device_of: Callable[[str], str | None]) -> dict[str, int]:
        """Each live attempt's used memory (MiB) in an NVML sample (MIG uuid -> (PID, MiB) of its
        processes), for the attempts with a process in it. `device_of` names a run's MIG uuid. The
        run's processes are its child and anything in its session or process group."""
        used: dict[str, int] = {}
        for a in self.active.values():
            procs = sample.get(device_of(a.run_id) or "")
            if procs is None:
                continue
            if a.child_pid is None:
                self.read_child(a)
            mine = [mib for pid, mib in procs if self.belongs(pid, a)]
            if mine:
                used[a.run_id] = sum(mine)
        return used

    @staticmethod
    def belongs(pid: int, a: Active) -> bool:
        if pid == a.child_pid:
            return True
        try:
            return os.getsid(pid) == a.shim_pid or (a.child_pgid is not None and os.getpgid(pid) == a.child_pgid)
        except OSError:
            return False

    # -- reaping ---------------------------------------------------------------------------------
    def reap(self) -> Iterator[Ending]:
        """Each attempt that has ended since the last call (taken out of `active` as it is yielded);
        then the strays this subreaper inherited are reaped. Consume it whole."""
        for _rid, a in list(self.active.items()):
            end: Ending | None
            if a.orphan:
                end = self._reap_orphan(a)
            else:
                rc: int | None = None
                if a.popen is not None:
                    rc = a.popen.poll()
                    if rc is None:
                        continue
                    self.drain_result(a)
                elif process_alive(a.shim_pid, a.shim_ctime):
                    continue
                res = self.result(a)
                end = Ending(a, "exit", res, rc) if res is not None else self._shim_died(a, rc)
            if end is not None:
                self.active.pop(a.run_id, None)
                yield end
        if self.subreaper:
            keep = {a.popen.pid for a in self.active.values() if a.popen is not None}
            # a run re-parented to us (its waiter died) keeps its status until `_shim_died` / `_reap_orphan` takes it
            keep |= {a.child_pid for a in self.active.values() if a.child_pid}
            reap_strays(keep)

    def drain_result(self, a: Active) -> None:
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

    def result(self, a: Active) -> Outcome | None:
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
        self._write_exit(a, doc)
        return outcome_of(doc)

    def _write_exit(self, a: Active, doc: ExitDoc) -> None:
        try:
            write_json_atomic(a.adir / "exit.json", doc, reserve=a.adir / RESERVE_NAME)
        except OSError as exc:
            self.say(f"{a.run_id}: cannot write {a.adir / 'exit.json'}: {exc} (the outcome is kept in launch.db)")

    def run_alive(self, a: Active) -> bool:
        """Whether the attempt's run, or its waiter, still lives (PID and start time)."""
        return alive(a.child_pid, a.child_ticks) or alive(a.waiter_pid, a.waiter_ticks)

    def keep_orphan(self, a: Active, note: str) -> None:
        """The shim is gone while the run lives: wait for the run (never start it again)."""
        a.orphan, a.popen = True, None
        child = read_json(a.adir / "child.json") or {}
        if a.timeout_s is not None:
            a.kill_at = float(child.get("started_at") or a.start_at or time.time()) + float(a.timeout_s)
        self.say(note)

    def _shim_died(self, a: Active, rc: int | None) -> Ending | None:
        """A shim (ours, or adopted: `rc` None) ended without a result. While its run or the run's
        waiter lives, the launcher keeps the run as an orphan and waits for it (None); a run that
        never passed the shim's gate is `lost` (a killed shim is not the run's failure); a run that
        started, left no record and is gone is `unknown`; else an `exit` without a result (a failed
        attempt, or an adopted shim's unstarted run)."""
        self.read_child(a)
        if a.child_pid and self.subreaper:
            ours, status = wait_child(a.child_pid)
            if ours and status is not None:  # the run ended under us (its waiter had died)
                return self._orphan_ended(a, status)
        if self.run_alive(a):
            self.keep_orphan(a, f"{a.run_id}: attempt {a.attempt}'s shim died (code {rc}); its run goes on under the launcher")
            return None
        res = self.result(a)  # the waiter recorded it meanwhile
        if res is not None:
            return Ending(a, "exit", res, rc)
        kill_group(a.child_pgid, signal.SIGKILL)  # what is left of the run: nothing of it goes on unwatched
        failed = Ending(a, "exit", None, rc)
        if a.stop_signaled:
            return failed
        if attempt_started(a.adir):
            return Ending(a, "unknown", why=f"its shim ended (code {rc}) and its run is gone without a record of how it ended")
        if a.child_pid and not (a.adir / "cmd.json").exists():  # its run was forked, then the directory deleted
            return Ending(a, "unknown", why=f"its attempt directory {a.adir} was deleted, and its shim ended (code {rc}) without a result")
        if rc is None:
            return failed
        if rc < 0:
            return Ending(a, "lost", why=f"the shim was killed ({signame(-rc)}) before the run started")
        if not (a.adir / "cmd.json").exists():
            return Ending(a, "lost", why=f"its attempt directory {a.adir} vanished before the run started")
        if rc == NOT_STARTED_RC:
            return Ending(a, "lost", why="its waiter died before the run started (the run never ran)")
        if disk_full(a.adir.parent):
            return Ending(
                a,
                "lost",
                why="the shim could not start the run: no space left on the device",
                halt=f"no space left on the device under {a.adir.parent.parent}: stopped starting runs (running runs finish and keep their outcomes)",
            )
        return failed  # the shim's own failure: counted like a failed attempt (see shim.log)

    def _reap_orphan(self, a: Active) -> Ending | None:
        if a.child_pid and self.subreaper:
            ours, status = wait_child(a.child_pid)
            if ours and status is not None:
                return self._orphan_ended(a, status)
        res = self.result(a)
        if res is None and self.run_alive(a):
            now = time.time()
            if a.kill_at is not None and now >= a.kill_at:
                sig = signal.SIGKILL if a.timed_out else signal.SIGTERM
                a.timed_out = True
                a.kill_at = now + max(self.grace_s, 0.01)
                kill_group(a.child_pgid, sig)
            return None
        res = res or self.result(a)  # the waiter records before it ends: look again once all is gone
        if res is not None:
            return Ending(a, "exit", res)
        kill_group(a.child_pgid, signal.SIGKILL)
        if not attempt_started(a.adir):
            return Ending(a, "lost", why="the shim died before the run started")
        return Ending(a, "unknown", why="its run ended while its waiter was gone (no record of how)")

    def _orphan_ended(self, a: Active, status: int) -> Ending:
        """Write the orphan's `exit.json` as its shim would have, then take the result (`lost` when
        its process never passed the gate: the shim died first)."""
        kill_group(a.child_pgid, signal.SIGKILL)
        if not attempt_started(a.adir):
            return Ending(a, "lost", why="the shim died before the run started")
        cmd = read_json(a.adir / "cmd.json") or {}
        child = read_json(a.adir / "child.json") or {}
        doc = exit_record(a.adir, cmd, a.child_pid or 0, status, float(child.get("started_at") or 0.0), timed_out=a.timed_out, recorded_by="launcher")
        self._write_exit(a, doc)
        return Ending(a, "exit", outcome_of(doc))

    # -- adoption --------------------------------------------------------------------------------
    def adopt(
        self,
        run_id: str,
        attempt: int,
        instance: str,
        adir: Path,
        shim: tuple[int | None, float | None],
        *,
        starting: bool,
        stopping: bool,
        timeout_s: float | None = None,
        start_at: float | None = None,
    ) -> Ending:
        """An attempt an earlier launcher left `starting` (`starting`) or `running`, its shim's
        recorded (PID, create time) in `shim`: its shim alive -> `adopted`; a record of its end ->
        `exit`; its run (or waiter) alive without its shim -> `orphan`; its run never started ->
        `lost` (what is left of it killed); else `unknown`. `stopping`: that launcher died during its
        staged shutdown, so a result taken now counts as interrupted."""
        pid, ctime = shim
        if not (pid and process_alive(pid, ctime)) and starting and not pid:
            found = find_shim(adir)
            if found:
                pid, ctime = found
        a = Active(run_id, attempt, instance, adir, int(pid or 0), ctime, timeout_s=timeout_s, start_at=start_at)
        self.read_child(a)
        if pid and process_alive(pid, ctime):
            self.active[run_id] = a
            return Ending(a, "adopted")
        a.stop_signaled = stopping
        res = self.result(a)
        if res is not None:  # exit.json, or the waiter's record of a run that ended while nothing of migbench lived
            return Ending(a, "exit", res)
        if self.run_alive(a):  # the shim is gone, the run (or its waiter) works on: wait for it
            self.active[run_id] = a
            self.keep_orphan(a, f"{run_id}: attempt {attempt}'s shim is gone; its run (PID {a.child_pid}) goes on: waiting for it")
            return Ending(a, "orphan")
        child = read_json(adir / "child.json") or {}
        if child.get("pgid") and kill_group(int(child["pgid"]), signal.SIGKILL):
            wait_group_gone(int(child["pgid"]))
            self.say(f"{run_id}: killed the orphaned process group {child['pgid']} of attempt {attempt}")
        # The attempt directory is made first and cmd.json written last, before the shim is started:
        # a directory without cmd.json and without a start mark is a launcher killed while preparing.
        vanished = not adir.is_dir() or (not (adir / "cmd.json").exists() and attempt_started(adir))
        if not attempt_started(adir) and not vanished:  # the launcher (or the shim) died before this attempt's run started
            return Ending(a, "lost", why="never started: its launcher or shim died before the run started")
        if vanished:
            return Ending(a, "unknown", why=f"its attempt directory {adir} was deleted while nothing of migbench watched it")
        return Ending(a, "unknown", why="its run started, and its shim, its waiter and the run are gone without a record of how it ended")

    def share_all(self, instances: Iterable[str]) -> None:
        for key in dict.fromkeys(instances):
            self.mark_shared(key)


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
