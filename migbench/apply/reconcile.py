"""Reconcile the GPUs to a plan: lock -> read -> safety checks -> checkpoint -> steps -> verify.

Per GPU the plan names, instances the plan keeps (same profile and start) stay, instances that
must go are destroyed only when no process uses them, the rest are created at their exact
placements, and the result is read back and compared. Any failing step restores the checkpoint, so
no GPU is left half-configured. A second apply finds nothing to do and says so.

MIG mode: enabled where needed. On Ampere the change may stay pending until a GPU reset; migbench
attempts the reset on the GPUs the plan names (never others) and, if the driver refuses, stops with
the reason and the commands to run, after restoring the checkpoint.

SIGINT/SIGTERM/SIGHUP during the steps restore the checkpoint too (`recovery.SignalGuard`); after a
`kill -9` the next apply finds the interrupted one and asks to `--finish` or `--rollback` it. A
rollback re-binds the instances it re-created (they get new MIG uuids). The host lock
(`HostLock`) keeps apply and the launchers' starts apart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from migbench.apply.bookings import Register, booked_problems
from migbench.apply.diff import (
    DESTRUCTIVE,
    GpuDiff,
    Step,
    StepKind,
    changed_devices,
    check_host_matches_models,
    diff_gpu,
    in_use_problems,
    steps_for,
    target_gpus,
    verify,
)
from migbench.apply.recovery import (
    ApplyInterrupted,
    Interrupted,
    SignalGuard,
    find_interrupted,
    pending_error,
    restore,
    snapshot,
)
from migbench.backend.base import Backend, CommandRecord, HostState
from migbench.backend.select import launches_dir
from migbench.errors import HardwareError, MigbenchError, UnsafeError, UsageError, os_reason
from migbench.fsutil import require_trusted
from migbench.pidlock import PidLock
from migbench.plan import Plan
from migbench.state import BINDINGS_NAME, Bindings, StateDir, configure_modes, make_bindings, mark_checkpoint, rebind, save_bindings, write_checkpoint
from migbench.types import Placement


@dataclass
class ApplyReport:
    diffs: list[GpuDiff]
    commands: list[CommandRecord]
    changed: bool
    bindings_path: str | None = None
    bindings: Bindings | None = None
    dry_run: bool = False
    messages: list[str] = field(default_factory=list)


class _Executor:
    def __init__(self, backend: Backend, plan: Plan):
        self.b = backend
        self.w = backend.writer
        self.plan = plan

    def host(self) -> HostState:
        return self.b.reader.read()

    def run_step(self, s: Step, created: dict[tuple[int, Placement], int]) -> None:
        w = self.w
        if s.kind is StepKind.MIG_ON:
            out = w.set_mig_mode(s.gpu, True)
            if w.dry_run and s.reset_if_pending:
                from migbench.backend import smi

                w.log.append(CommandRecord(smi.gpu_reset_argv(s.gpu), note="only if the mode change stays pending (Ampere)"))
            if out.pending:
                self._reset_for_mode(s.gpu, out.reason)
        elif s.kind is StepKind.RESET:
            self._reset_for_mode(s.gpu, "a MIG mode change is pending")
        elif s.kind is StepKind.DESTROY_CI:
            w.destroy_compute_instance(s.gpu, _req(s.gi_id), _req(s.ci_id))
        elif s.kind is StepKind.DESTROY_GI:
            w.destroy_gpu_instance(s.gpu, _req(s.gi_id))
        elif s.kind is StepKind.CREATE_GI:
            pl = _req(s.placement)
            gid = w.create_gpu_instance(s.gpu, _req(s.profile_id), pl.start, _req(s.size))
            if gid is not None:
                created[(s.gpu, pl)] = gid
        elif s.kind is StepKind.CREATE_CI:
            pl = _req(s.placement)
            gid = s.gi_id if s.gi_id is not None else created.get((s.gpu, pl))
            if gid is None and not w.dry_run:
                gi = self.host().gpu(s.gpu).instance_at(pl)
                gid = gi.id if gi else None
            if gid is None and not w.dry_run:
                raise HardwareError(f"GPU {s.gpu}: GPU instance {s.placement} vanished before its compute instance was created")
            # In a dry run the driver has not assigned the new GPU instance's id yet.
            w.create_compute_instance(s.gpu, gid if gid is not None else f"<id of {s.placement}>")

    def _reset_for_mode(self, gpu: int, reason: str) -> None:
        try:
            self.w.reset_gpu(gpu)
        except HardwareError as exc:
            raise HardwareError(
                f"GPU {gpu}: the MIG mode change is pending ({reason}) and the GPU reset failed: {exc.message}",
                hint=(
                    f"stop every client of GPU {gpu} (CUDA jobs, nvidia-persistenced, DCGM, nvidia_drm), then run "
                    f"`sudo nvidia-smi -i {gpu} -mig 1 && sudo nvidia-smi -i {gpu} --gpu-reset` (or reboot) and "
                    "run `migbench apply` again"
                ),
            ) from exc
        st = self.host().gpu(gpu)
        if not st.mig_current:
            raise HardwareError(
                f"GPU {gpu}: MIG mode is still pending after the reset",
                hint="reboot the machine, then run `migbench apply` again",
            )


LAUNCHER_WAIT_S = 30.0
"""How long apply waits for launchers that hold the host lock for their starts."""


class HostLock(PidLock):
    """The host's lock, one per host (a root-only directory on a real host, the simulated host's
    directory under the simulator). `apply` holds it exclusively while it changes GPUs (its note
    names its checkpoint, so a killed apply is found again); a launcher holds it shared while it
    starts runs. Each waits for, or refuses, the other; two applies never interleave."""

    error_type = MigbenchError
    dir_mode = 0o755  # launchers of other users take it shared
    keep_note = False  # set by an apply that could not record its end: its note (naming its checkpoint) stays for the next one

    def release(self) -> None:
        if self.keep_note and self.fd is not None and not self.shared:
            fd, self.fd = self.fd, None
            os.close(fd)  # unlocks, and leaves the note
            return
        super().release()

    def busy_error(self) -> MigbenchError:
        holders = self.holders()
        launchers = sorted({pid for pid, ex in holders if not ex})  # a process may hold it through two descriptions
        if not self.shared and launchers and not any(ex for _, ex in holders):
            return MigbenchError(
                f"a migbench launcher (PID {', '.join(map(str, launchers))}) is starting runs on this host (lock {self.path})",
                hint="apply again in a moment: a launcher holds the lock only while it starts runs",
            )
        doc = self.content() or {}
        pid = doc.get("pid") or self.holder()
        what = f" of {doc['plan_file']}" if doc.get("plan_file") else ""
        if self.shared:
            return MigbenchError(f"migbench apply{what} (PID {pid}) is changing this host's GPUs (lock {self.path})", hint="launch when it is done")
        return MigbenchError(
            f"another migbench apply{what} (PID {pid}) is changing this host's GPUs (lock {self.path})",
            hint="wait for it to finish; two applies must not interleave",
        )

    def take(self, wait_for_launchers_s: float | None = None) -> HostLock:
        """Take the lock exclusively: wait while only launchers hold it (they hold it for their starts
        only), refuse at once when another apply does."""
        deadline = time.monotonic() + (LAUNCHER_WAIT_S if wait_for_launchers_s is None else wait_for_launchers_s)
        while not self.acquire():
            if self.is_held() or time.monotonic() >= deadline:
                raise self.busy_error()
            time.sleep(0.05)
        return self


def apply_plan(
    plan: Plan,
    backend: Backend,
    *,
    gpus: Sequence[int] | None = None,
    dry_run: bool | None = None,
    confirm: Callable[[str], bool] | None = None,
    state_dir: StateDir,
    resume: str | None = None,
) -> ApplyReport:
    """Reconcile the host to `plan`. `confirm(text) -> bool` is asked before destructive steps.
    A dry run is whatever the backend's writer is (`open_backend(dry_run=True)`).

    When an earlier apply was interrupted (killed), raise `InterruptedApplyPending` unless `resume`
    says what to do: "finish" (apply this plan, which must be the interrupted one, keeping the
    original checkpoint to roll back to) or "rollback" (restore the GPUs as they were before it).
    `state_dir`: the command's `StateDir` (a dry run writes nothing there)."""
    if dry_run is None:
        dry_run = backend.writer.dry_run
    if dry_run != backend.writer.dry_run:
        raise ValueError("apply_plan(dry_run=...) must match the backend writer's dry_run")
    if resume not in (None, "finish", "rollback"):
        raise ValueError(f"apply_plan(resume={resume!r})")
    targets = target_gpus(plan, gpus)
    ex = _Executor(backend, plan)
    if dry_run:
        return _dry_run(plan, ex, targets)
    configure_modes(plan)  # before the trust check: a team's `state_mode: 0660` lets the group write the directory
    backend.writer.check_privileges()
    sd = state_dir
    # before its checkpoint is read: another user's would say what --rollback restores the GPUs to
    require_trusted(sd.path, "state directory")
    cp_path = sd.checkpoint
    lock = HostLock(backend.lock_path, note={"checkpoint": str(cp_path.absolute()), "plan_file": str(Path(plan.path).resolve()) if plan.path else None})
    lock.take()
    try:
        with SignalGuard() as guard:
            return _apply_locked(plan, ex, targets, confirm, sd, cp_path, lock, guard, resume)
    finally:
        lock.release()


def _plan_steps(plan: Plan, host: HostState, targets: list[int]) -> tuple[list[GpuDiff], list[Step]]:
    """The differences and the steps, after the checks that come first (the host is the plan's,
    nothing the steps would destroy is in use)."""
    check_host_matches_models(plan, host, targets)
    diffs = [diff_gpu(plan, host.gpu(g)) for g in targets]
    busy = in_use_problems(host, diffs)
    if busy:
        raise UnsafeError(
            "refusing to change instances that are in use (nothing was changed):\n  " + "\n  ".join(busy),
            hint="wait for those processes to finish (or stop them), then apply again",
        )
    booked = booked_problems(Register(launches_dir()), changed_devices(host, diffs))
    if booked:
        raise UnsafeError(
            "refusing to change instances that a running launch is bound to (its runs run or are queued there; nothing was changed):\n  " + "\n  ".join(booked),
            hint="wait for that launch to finish (`migbench status PLAN --state-dir DIR` shows it) or stop it (`migbench stop "
            "PLAN --state-dir DIR`), then apply again; or apply only GPUs no launch uses (`--gpus`)",
        )
    return diffs, [s for d in diffs for s in steps_for(d, host.gpu(d.gpu))]


def _dry_run(plan: Plan, ex: _Executor, targets: list[int]) -> ApplyReport:
    diffs, steps = _plan_steps(plan, ex.host(), targets)
    created: dict[tuple[int, Placement], int] = {}
    for s in steps:
        ex.run_step(s, created)
    return ApplyReport(diffs, ex.w.log, bool(steps), dry_run=True)


def _apply_locked(
    plan: Plan,
    ex: _Executor,
    targets: list[int],
    confirm: Callable[[str], bool] | None,
    sd: StateDir,
    cp_path: Path,
    lock: HostLock,
    guard: SignalGuard,
    resume: str | None,
) -> ApplyReport:
    left = (lock.previous or {}).get("checkpoint")
    found = find_interrupted([left, cp_path])
    host = ex.host()
    if found is not None and resume is None:
        raise pending_error(found, host, plan)
    if found is None and resume is not None:
        raise UsageError(f"--{resume}: no interrupted apply to {resume} on this host", hint="a plain `migbench apply PLAN` applies the plan")
    if found is not None and resume == "rollback":
        return _rollback_interrupted(ex, found, guard)
    if found is not None and not found.same_plan(plan):
        raise UsageError(
            f"--finish: the interrupted apply was of {found.plan_file or found.doc.get('plan')}, not of {plan.path}",
            hint=f"finish it with `migbench apply {found.plan_file or 'THAT-PLAN'} --finish`, or roll it back with `--rollback`",
        )
    diffs, steps = _plan_steps(plan, host, targets)
    report = ApplyReport(diffs, ex.w.log, bool(steps))
    if found is not None:  # finishing: roll back, if it comes to that, to the state before the first try
        cp_path = found.path
        checkpoint = found.doc["gpus"]
        report.messages.append(f"finishing the interrupted apply of {plan.path} (checkpoint {cp_path})")
    if not steps:
        report.messages.append("every GPU already matches the plan; nothing changed")
        _record(plan, host, targets, sd, cp_path, lock, report, unfinished=found is not None)
        return report
    destructive = [s for s in steps if s.kind in DESTRUCTIVE]
    if destructive and confirm is not None and found is None:
        host, diffs, steps = _confirmed(plan, ex, targets, steps, confirm, lock, guard, cp_path)
        report = ApplyReport(diffs, ex.w.log, bool(steps))
    guard.check()  # a signal before any change: nothing to undo
    if found is None:
        checkpoint = snapshot(host, targets)
        write_checkpoint(plan, checkpoint, sd)
    created: dict[tuple[int, Placement], int] = {}
    try:
        for s in steps:
            ex.run_step(s, created)
            guard.check()
        after = ex.host()
        bad = verify(plan, after, targets)
        if bad:
            raise HardwareError("read-back after apply differs from the plan:\n  " + "\n  ".join(bad))
    except MigbenchError as exc:
        _roll_back(ex, checkpoint, cp_path, exc, guard)
        raise
    _record(plan, after, targets, sd, cp_path, lock, report, unfinished=True)
    return report


def _confirmed(
    plan: Plan,
    ex: _Executor,
    targets: list[int],
    steps: list[Step],
    confirm: Callable[[str], bool],
    lock: HostLock,
    guard: SignalGuard,
    cp_path: Path,
) -> tuple[HostState, list[GpuDiff], list[Step]]:
    """Ask before destructive steps, without holding the host lock while a person reads them (the
    launchers keep starting runs meanwhile); then, under the lock again, the host read again and
    its steps worked out again: only the steps that were confirmed are made. Anything that changed
    meanwhile (a run now on an instance to destroy, another apply, other steps) ends the apply with
    nothing changed. Returns the host, its differences and the steps."""
    text = "\n".join(s.describe() for s in steps)
    lock.release()
    with guard.interruptible():
        answer = confirm(text)
    if not answer:
        raise MigbenchError("apply cancelled; nothing was changed")
    lock.take()
    found = find_interrupted([(lock.previous or {}).get("checkpoint"), cp_path])
    host = ex.host()
    if found is not None:  # another apply ran, and was killed, while this one waited
        raise pending_error(found, host, plan)
    diffs, again = _plan_steps(plan, host, targets)
    if "\n".join(s.describe() for s in again) != text:
        raise MigbenchError(
            "the GPUs changed while apply waited for your answer; nothing was changed",
            hint=f"run `migbench apply {plan.path or 'PLAN'}` again to see what it would do now",
        )
    return host, diffs, again


def _record(
    plan: Plan,
    host: HostState,
    targets: list[int],
    sd: StateDir,
    cp_path: Path,
    lock: HostLock,
    report: ApplyReport,
    *,
    unfinished: bool,
) -> None:
    """Write the bindings, then mark the checkpoint `applied`. When that fails (a full disk) after the
    GPUs were changed (`unfinished`), the checkpoint stays `applying` and the host lock keeps this
    apply's note, so `check` and the next `apply` find it; the error says what the GPUs are and how
    to finish."""
    writing = cp_path.parent / BINDINGS_NAME
    try:
        report.bindings_path, report.bindings = _bound(save_bindings(plan, make_bindings(plan, host, targets), sd))
        writing = cp_path
        if unfinished:
            mark_checkpoint(cp_path, "applied")
    except (OSError, MigbenchError) as exc:
        why = exc.message if isinstance(exc, MigbenchError) else f"cannot write {writing}: {os_reason(exc)}"
        if not unfinished:
            own = exc.hint if isinstance(exc, MigbenchError) else None  # an untrusted directory says its own fix
            raise MigbenchError(f"{why}; no GPU was changed", hint=own or "free space in that directory, then apply again") from None
        lock.keep_note = True
        gpus = ", ".join(map(str, targets))
        opt = sd.option
        bound = "the bindings are written, but" if report.bindings is not None else "the new MIG uuids are NOT recorded (launch cannot use them yet) and"
        raise MigbenchError(
            f"GPU(s) {gpus} are configured as {plan.path or 'the plan'} wants (read back), but the apply could not record it: {why}.\n"
            f"{bound} the checkpoint {cp_path} stays 'applying': `migbench check` reports this apply as unfinished",
            hint=f"free space there, then `migbench apply {plan.path or 'PLAN'} --finish{opt}` records it without changing a GPU again "
            f"(or `--rollback{opt}` restores the GPUs as they were before this apply)",
        ) from None


def _roll_back(ex: _Executor, checkpoint: dict, cp_path: Path, exc: MigbenchError, guard: SignalGuard) -> list[str]:
    """Restore `checkpoint` after `exc`, re-bind what the restore re-created, record the outcome in
    the checkpoint and in `exc`'s message. Returns the re-binding notes."""
    problems = restore(ex.b, checkpoint)
    gpus = [int(g) for g in checkpoint]
    notes = rebind(cp_path.parent / BINDINGS_NAME, ex.host(), gpus)
    late = [signal.Signals(s).name for s in guard.received if not isinstance(exc, ApplyInterrupted)]
    if problems:
        mark_checkpoint(cp_path, "rollback-failed")
        exc.message += "\nRestoring the checkpoint also failed:\n  " + "\n  ".join(problems)
        exc.hint = (exc.hint + "\n" if exc.hint else "") + (
            f"the checkpoint is in {cp_path}; once the cause is fixed, `migbench apply PLAN --rollback` retries the restore"
        )
    else:
        mark_checkpoint(cp_path, "rolled-back")
        exc.message += "\nEvery GPU was restored to its state before the apply."
    if notes:
        exc.message += "\nBindings updated: " + "; ".join(notes)
    if late:
        exc.message += f"\n({', '.join(late)} received during the rollback: it was finished first)"
    return notes


def _rollback_interrupted(ex: _Executor, found: Interrupted, guard: SignalGuard) -> ApplyReport:
    """`apply --rollback`: restore the GPUs as the interrupted apply's checkpoint recorded them."""
    problems = restore(ex.b, found.doc["gpus"])
    notes = rebind(found.path.parent / BINDINGS_NAME, ex.host(), found.gpus)
    if problems:
        mark_checkpoint(found.path, "rollback-failed")
        raise HardwareError(
            "the rollback of the interrupted apply did not complete:\n  " + "\n  ".join(problems),
            hint=f"fix the cause, then `migbench apply PLAN --rollback` again (checkpoint: {found.path})",
        )
    mark_checkpoint(found.path, "rolled-back")
    report = ApplyReport([], ex.w.log, bool(ex.w.log))
    gpus = ", ".join(map(str, found.gpus))
    report.messages.append(f"rolled back the interrupted apply: GPU(s) {gpus} are as they were before it")
    report.messages.extend(f"bindings: {n}" for n in notes)
    if guard.received:
        report.messages.append(f"{signal.Signals(guard.received[0]).name} received during the rollback: it was finished first")
    return report


def interrupted_apply(backend_lock_path: str | os.PathLike[str], sd: StateDir) -> Interrupted | None:
    """For `check`: an apply that died half-way (its checkpoint named by the host lock it left, or
    the plan's, in `sd`), while no apply runs. None when there is none, or when an apply runs now."""
    lock = HostLock(backend_lock_path)
    if lock.is_held():
        return None
    left = (lock.content() or {}).get("checkpoint")
    return find_interrupted([left, sd.checkpoint])


def _bound(saved: tuple[Path, Bindings]) -> tuple[str, Bindings]:
    return str(saved[0]), saved[1]


T = TypeVar("T")


def _req(value: T | None) -> T:
    """A step's field that its kind always sets (a programming error if it is missing)."""
    if value is None:
        raise RuntimeError("an apply step is missing a field its kind needs")
    return value
