"""A launcher's entry in the host's launch register (`migbench.apply.bookings`), and the check of
each start's device.

- Before the launcher touches its state directory it books the host (`HostBooking.open`): the plan
  must not run already on this host (whatever the state directory); that refuses the launch, naming
  the other one. An instance its unfinished runs need that another live launch is bound to is left
  out: the runs queued there wait (`behind`) until that launch lets it go, and never start beside it.
- While it runs, its entry names the instances its running and queued runs are on (`sync`), so an
  apply of any plan leaves those alone.
- Before each round of starts (under the host lock, held shared) each start's MIG device must still
  exist (read through the backend) and be bound to this launch (`admit`). A start that fails this is
  not made: the run stays queued, no attempt is used, and its note says why. A device that is gone
  holds its instance back until the bindings change; one bound to another launch is tried again.

Where the register cannot be used at all (another user's directory, no permission to create it),
the launcher says so once and goes on without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path

import psutil

from migbench.apply.bookings import Booking, LaunchConflict, Register, held_by_others, refuse_same_plan
from migbench.apply.reconcile import HostLock
from migbench.backend.select import device_processes, host_lock_path, launches_dir, present_devices
from migbench.errors import MigbenchError
from migbench.launch.gate import HostGate
from migbench.launch.prepare import Prepared
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES, RunRow, read_state


class HostBooking:
    """One launcher's entry in the host's launch register, from its start (`open`) to its end."""

    def __init__(self, prep: Prepared, say: Callable[[str], None]):
        self.prep = prep
        self.say = say
        self.reg = Register(launches_dir())
        self.me: Booking | None = None
        self._ctimes: dict[int, float] = {}  # a run's PID -> its process start time
        self._warned = False
        self.behind: dict[str, str] = {}  # instances another live launch is bound to -> who: runs queued there wait

    def open(self, stack: ExitStack) -> None:
        """Book the host for this launch (raises `LaunchConflict`); the entry goes when `stack` closes.
        Done under the host lock, held shared, after checking the MIG devices once more: an apply
        checks the register and changes GPUs under the same lock, held exclusively, so either it
        sees this launch or this launch sees what it changed."""
        plan = self.prep.plan
        keys = _unfinished_keys(self.prep)
        want = {self.prep.uuid_of[k]: k for k in keys if k in self.prep.uuid_of}
        lock = HostLock(host_lock_path(), shared=True)
        try:
            held = lock.acquire()
        except MigbenchError:
            held = None  # a lock this user cannot take: as the gate, go on without it
        if held is False:
            raise lock.busy_error()
        try:
            try:
                live = present_devices(list(want))
            except (MigbenchError, OSError):
                live = set(want)  # the GPUs cannot be read now: each start checks its device again
            gone = sorted(f"{k}: MIG device {u} no longer exists on the host" for u, k in want.items() if u not in live)
            if gone:
                raise MigbenchError(
                    "the host no longer matches the applied plan:\n  " + "\n  ".join(gone),
                    hint=f"apply it again: migbench apply {plan.path or 'PLAN'} --state-dir {self.prep.state_dir}",
                )
            try:
                self.me, refused = self.reg.book(str(Path(plan.path or "").resolve()), plan.name, self.prep.sha256, str(self.prep.state_dir.resolve()), want)
            except LaunchConflict:
                raise
            except MigbenchError as exc:  # the register itself cannot be used
                self.say(f"{exc.message}: this launch is not kept apart from the host's other launches")
                self._refuse_busy(want)
                return
            self.behind = {key: b.who() for key, b in refused.items()}
            try:
                self._refuse_busy({u: k for u, k in want.items() if k not in self.behind})
            except MigbenchError:
                self.close()
                raise
            self._say_behind(refused)
        finally:
            lock.release()
        stack.callback(self.close)

    def _refuse_busy(self, want: dict[str, str]) -> None:
        """Refuse when a device this launch needs runs a process that is not a run of this state
        directory (the register does not list every launch: one made with another register, or
        whose entry was deleted, and programs outside migbench)."""
        busy = _foreign_processes(self.prep, want)
        if busy:
            raise MigbenchError(
                "instances this launch needs are in use by processes that are not runs of this launch:\n  " + "\n  ".join(busy),
                hint="another launch of this plan (from another state directory, or one the launch register did not list) or "
                "another program uses them: stop it or wait for it to end; `nvidia-smi` shows the processes",
            )

    def _say_behind(self, refused: dict[str, Booking]) -> None:
        """Which of the plan's queues wait for another launch (instances the plan has but queues
        nothing on are left out: only lending could use them)."""
        queued = {r.instance_key for r in self.prep.plan.runs if r.instance_key and r.done is None}
        by: dict[str, list[str]] = {}
        for key, b in sorted(refused.items()):
            if key not in queued:
                continue
            by.setdefault(b.who(), []).append(key)
        for who, keys in sorted(by.items()):
            self.say(f"{len(keys)} instance(s) this launch queues runs on are bound to {who}: {', '.join(keys)}; those runs start when it lets them go")

    def check(self) -> None:
        """What `open` would refuse, without booking (`launch --detach` says it before it detaches);
        says which instances runs will wait for."""
        plan = self.prep.plan
        keys = _unfinished_keys(self.prep)
        try:
            sd = str(self.prep.state_dir.resolve())  # a dead launcher of this state directory: this launch takes its runs over (`open`)
            others = [b for b in self.reg.entries() if b.state_dir != sd or b.launcher_alive()]
        except MigbenchError:
            return
        refuse_same_plan(others, str(Path(plan.path or "").resolve()), self.prep.sha256)
        self._say_behind(held_by_others(others, {self.prep.uuid_of[k]: k for k in keys if k in self.prep.uuid_of}))

    def close(self) -> None:
        if self.me is not None:
            self.reg.release(self.me)
            self.me = None

    def sync(self, rows: Iterable[RunRow], uuid_of: dict[str, str], extra: Iterable[str] = ()) -> dict[str, Booking]:
        """Bind the entry to the instances of the running and queued runs (and `extra`), and record
        the processes of the running ones (so the entry stays live while they do, should the launcher
        be killed). Returns the instances (key -> the other launch) left out because another live
        launch is bound to them."""
        if self.me is None:
            return {}
        keys = set(extra)
        procs: list[tuple[int, float | None]] = []
        for r in rows:
            if r.state in ACTIVE_STATES and r.instance:
                keys.add(r.instance.key)
                if r.shim_pid:
                    procs.append((int(r.shim_pid), r.shim_create_time))
                if r.child_pid:
                    procs.append((int(r.child_pid), self._ctime(int(r.child_pid))))
            elif r.state == "queued" and r.queue:
                keys.add(r.queue.key)
        want = {uuid_of[k]: k for k in keys if k in uuid_of}
        if want == self.me.instances and sorted(procs) == self.me.processes:
            return {}
        try:
            refused = self.reg.update(self.me, want, procs)
        except MigbenchError as exc:  # a full disk, say: the entry keeps what it had until a later write succeeds
            if not self._warned:
                self.say(f"cannot update this launch's entry in the host's launch register: {exc.message}")
                self._warned = True
            return {}
        self._warned = False
        return refused

    def _ctime(self, pid: int) -> float | None:
        if pid not in self._ctimes:
            try:
                self._ctimes[pid] = float(psutil.Process(pid).create_time())
            except psutil.Error:
                return None
        return self._ctimes[pid]

    def admit(self, starts: list[tuple[str, str]], rows: dict[str, RunRow], gate: HostGate, dirty: set[str]) -> list[tuple[str, str]]:
        """The starts (run id, instance) whose MIG device still exists and is bound to this launch.
        The others' runs stay queued (no attempt used, the reason in their note); their instances are
        held back (`gate.hold`) until the bindings change."""
        if not starts:
            return starts
        held, others = self._held({k for _, k in starts}, rows.values(), gate.uuid_of)
        for rid, key in starts:
            if key in held:
                gate.hold(key, held[key])
                rows[rid].last_error = f"held back: {held[key]}"
                dirty.add(rid)
                self.say(f"{rid}: not started: {held[key]}")
            elif key in others:
                why = f"waits for its instance {key}: bound to {others[key]}"
                if rows[rid].last_error != why:
                    rows[rid].last_error = why
                    dirty.add(rid)
                    if self.behind.get(key) != others[key]:
                        self.say(f"{rid}: {why}; it starts when that launch lets the instance go")
        for key in {k for _, k in starts} - set(held):
            if key in others:
                self.behind[key] = others[key]
            elif self.behind.pop(key, None) is not None:
                self.say(f"instance {key} was let go by the launch that held it: runs queued there may start")
        return [s for s in starts if s[1] not in held and s[1] not in others]

    def _held(self, keys: set[str], rows: Iterable[RunRow], uuid_of: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The instances of `keys` no run may start on now: those whose MIG device is gone from the
        host (each with the reason), and those another live launch is bound to (each with who)."""
        held: dict[str, str] = {}
        try:
            live = present_devices(sorted({uuid_of[k] for k in keys if k in uuid_of}))
        except (MigbenchError, OSError) as exc:
            self.say(f"cannot read the GPUs to check the MIG devices before starting runs: {getattr(exc, 'message', exc)}")
        else:
            for k in sorted(keys):
                if uuid_of.get(k) not in live:
                    held[k] = f"its MIG device {uuid_of.get(k)} ({k}) is gone from the host (re-cut by another apply?)"
        others = {k: other.who() for k, other in self.sync(rows, uuid_of, keys - set(held)).items()}
        return held, others


def _unfinished_keys(prep: Prepared) -> set[str]:
    """The instances of the runs an earlier launch in this state directory has not finished (every
    planned instance when there is no such launch, or its state cannot be read)."""
    every = {i.key for i in prep.plan.instances}
    if not prep.state_dir.db.exists():
        return every
    try:
        rows = read_state(prep.state_dir, lambda st: st.runs())
    except MigbenchError:
        return every
    keys = {r.instance_key for r in prep.plan.runs if r.instance_key and r.id not in rows}
    for row in rows.values():
        if row.state in ACTIVE_STATES and row.instance:
            keys.add(row.instance.key)
        elif row.state not in FINAL_STATES and row.queue is not None:
            keys.add(row.queue.key)
    return keys & every


def _foreign_processes(prep: Prepared, want: dict[str, str]) -> list[str]:
    """The live processes on the devices of `want` (uuid -> key) that are not runs of this state
    directory: a run of ours, and every process it starts, carries `MIGBENCH_RUN_DIR` below it in
    its environment. A process this machine cannot see (gone, or in another PID namespace) is not
    counted; one whose environment cannot be read is. Empty when the devices cannot be read."""
    try:
        procs = device_processes(sorted(want))
    except (MigbenchError, OSError):
        return []
    root = str(prep.state_dir.resolve()) + os.sep
    out = []
    for uuid, pids in sorted(procs.items()):
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                run_dir = proc.environ().get("MIGBENCH_RUN_DIR", "")
                if run_dir and (os.path.realpath(run_dir) + os.sep).startswith(root):
                    continue
                name = " ".join(proc.cmdline())[:120] or "?"
            except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except (OSError, psutil.Error):
                name = "?"
            out.append(f"{want[uuid]} ({uuid}): PID {pid} ({name})")
    return out
