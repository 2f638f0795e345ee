"""Reconcile the GPUs to a plan: lock -> read -> safety checks -> checkpoint -> steps -> verify.

Per GPU the plan names, instances the plan keeps (same profile and start) stay, instances that
must go are destroyed only when no process uses them, the rest are created at their exact
placements, and the result is read back and compared. Any failing step restores the checkpoint, so
no GPU is left half-configured. A second apply finds nothing to do and says so.

MIG mode: enabled where needed. On Ampere the change may stay pending until a GPU reset; migbench
attempts the reset on the GPUs the plan names (never others) and, if the driver refuses, stops with
the reason and the commands to run, after restoring the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from migbench.apply.diff import (
    DESTRUCTIVE,
    GpuDiff,
    Step,
    StepKind,
    check_host_matches_models,
    diff_gpu,
    in_use_problems,
    steps_for,
    target_gpus,
    verify,
)
from migbench.backend.base import Backend, CommandRecord, HostState
from migbench.errors import HardwareError, MigbenchError, UnsafeError
from migbench.fsutil import PidLock
from migbench.plan import Plan
from migbench.state import make_bindings, save_bindings, state_dir_for, write_checkpoint
from migbench.types import Placement


@dataclass
class ApplyReport:
    diffs: list[GpuDiff]
    commands: list[CommandRecord]
    changed: bool
    bindings_path: str | None = None
    bindings: dict | None = None
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


def _snapshot(host: HostState, gpus: Sequence[int]) -> dict:
    out = {}
    for g in gpus:
        st = host.gpu(g)
        out[str(g)] = {
            "mig_current": st.mig_current,
            "mig_pending": st.mig_pending,
            "instances": [
                {
                    "placement": str(gi.placement),
                    "profile_id": gi.profile_id,
                    "size": gi.size,
                    "compute_instances": [{"profile_id": ci.profile_id, "start": ci.start, "size": ci.size} for ci in gi.compute_instances],
                }
                for gi in st.instances
            ],
        }
    return out


def _restore(ex: _Executor, checkpoint: dict) -> list[str]:
    """Bring every checkpointed GPU back to its recorded mode and instances. Returns problems."""
    problems = []
    w = ex.w
    for g_str, snap in sorted(checkpoint.items(), key=lambda kv: int(kv[0])):
        g = int(g_str)
        try:
            st = ex.host().gpu(g)
            want = {Placement.parse(i["placement"]): i for i in snap["instances"]}
            for gi in st.instances:
                keep = gi.placement in want and [
                    (c.profile_id, c.start, c.size) for c in gi.compute_instances
                ] == [(c["profile_id"], c["start"], c["size"]) for c in want[gi.placement]["compute_instances"]]
                if keep:
                    continue
                for ci in gi.compute_instances:
                    w.destroy_compute_instance(g, gi.id, ci.id)
                w.destroy_gpu_instance(g, gi.id)
            st = ex.host().gpu(g)
            have = {gi.placement for gi in st.instances}
            ordered = sorted(want.items(), key=lambda kv: (-kv[1]["size"], kv[0].start))
            for pl, spec in ordered:
                if pl in have:
                    continue
                gid = w.create_gpu_instance(g, spec["profile_id"], pl.start, spec["size"])
                for c in spec["compute_instances"]:
                    w.create_compute_instance(g, _req(gid), profile_id=c["profile_id"])
            st = ex.host().gpu(g)
            if bool(st.mig_current) != bool(snap["mig_current"]) or bool(st.mig_pending) != bool(snap["mig_pending"]):
                w.set_mig_mode(g, bool(snap["mig_pending"]))
        except MigbenchError as exc:
            problems.append(f"GPU {g}: {exc.message}")
    after = _snapshot(ex.host(), [int(k) for k in checkpoint])
    for g_str, snap in checkpoint.items():
        if _shape(after[g_str]) != _shape(snap):
            problems.append(f"GPU {g_str}: state after restore differs from the checkpoint")
    return problems


def _shape(snap: dict) -> tuple:
    return (
        snap["mig_current"],
        snap["mig_pending"],
        tuple(sorted((i["placement"], tuple((c["profile_id"], c["start"], c["size"]) for c in i["compute_instances"])) for i in snap["instances"])),
    )


class HostLock(PidLock):
    """An exclusive, non-blocking flock so two applies (or an apply and a launch's reconfigure)
    cannot interleave on one host."""

    def busy_error(self) -> MigbenchError:
        return MigbenchError(
            f"another migbench apply is changing this host (lock {self.path} held by PID {self.holder()})",
            hint="wait for it to finish; two applies must not interleave",
        )


def apply_plan(
    plan: Plan,
    backend: Backend,
    *,
    gpus: Sequence[int] | None = None,
    dry_run: bool | None = None,
    confirm: Callable[[str], bool] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> ApplyReport:
    """Reconcile the host to `plan`. `confirm(text) -> bool` is asked before destructive steps.
    A dry run is whatever the backend's writer is (`open_backend(dry_run=True)`)."""
    if dry_run is None:
        dry_run = backend.writer.dry_run
    if dry_run != backend.writer.dry_run:
        raise ValueError("apply_plan(dry_run=...) must match the backend writer's dry_run")
    targets = target_gpus(plan, gpus)
    ex = _Executor(backend, plan)
    if not dry_run:
        backend.writer.check_privileges()
    lock = HostLock(backend.lock_path) if not dry_run else None
    if lock:
        lock.__enter__()
    try:
        host = ex.host()
        check_host_matches_models(plan, host, targets)
        diffs = [diff_gpu(plan, host.gpu(g)) for g in targets]
        busy = in_use_problems(host, diffs)
        if busy:
            raise UnsafeError(
                "refusing to change instances that are in use (nothing was changed):\n  " + "\n  ".join(busy),
                hint="wait for those processes to finish (or stop them), then apply again",
            )
        steps = [s for d in diffs for s in steps_for(d, host.gpu(d.gpu))]
        report = ApplyReport(diffs, backend.writer.log, bool(steps), dry_run=dry_run)
        created: dict[tuple[int, Placement], int] = {}
        if dry_run:
            for s in steps:
                ex.run_step(s, created)
            return report
        if not steps:
            report.messages.append("every GPU already matches the plan; nothing changed")
            bindings = make_bindings(plan, host, targets)
            report.bindings_path, report.bindings = _bound(save_bindings(plan, bindings, state_dir))
            return report
        destructive = [s for s in steps if s.kind in DESTRUCTIVE]
        if destructive and confirm is not None:
            text = "\n".join(s.describe() for s in steps)
            if not confirm(text):
                raise MigbenchError("apply cancelled; nothing was changed")
        checkpoint = _snapshot(host, targets)
        sd = state_dir_for(plan, state_dir)
        write_checkpoint(plan, checkpoint, state_dir)
        try:
            for s in steps:
                ex.run_step(s, created)
            after = ex.host()
            bad = verify(plan, after, targets)
            if bad:
                raise HardwareError("read-back after apply differs from the plan:\n  " + "\n  ".join(bad))
        except MigbenchError as exc:
            problems = _restore(ex, checkpoint)
            if problems:
                exc.message += "\nRestoring the checkpoint also failed:\n  " + "\n  ".join(problems)
                exc.hint = (exc.hint + "\n" if exc.hint else "") + f"the checkpoint is in {sd / 'checkpoint.json'}"
            else:
                exc.message += "\nEvery GPU was restored to its state before the apply."
            raise
        bindings = make_bindings(plan, after, targets)
        report.bindings_path, report.bindings = _bound(save_bindings(plan, bindings, state_dir))
        return report
    finally:
        if lock:
            lock.__exit__(None, None, None)


def _bound(saved: tuple[Any, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return str(saved[0]), saved[1]


T = TypeVar("T")


def _req(value: T | None) -> T:
    """A step's field that its kind always sets (a programming error if it is missing)."""
    if value is None:
        raise RuntimeError("an apply step is missing a field its kind needs")
    return value
