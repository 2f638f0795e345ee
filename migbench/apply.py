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

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from migbench.backend.base import Backend, CommandRecord, GpuState, HostState
from migbench.catalog import Placement
from migbench.errors import HardwareError, MigbenchError, UnsafeError
from migbench.fsutil import PidLock, write_json_atomic
from migbench.plan import Plan


@dataclass(frozen=True)
class Step:
    gpu: int
    kind: str  # mig_on | mig_off | reset | destroy_ci | destroy_gi | create_gi | create_ci
    placement: Placement | None = None
    gi_id: int | None = None
    ci_id: int | None = None
    profile_id: int | None = None
    size: int | None = None
    reset_if_pending: bool = False  # Ampere: a mode change may need a GPU reset to take effect

    def describe(self) -> str:
        where = f"GPU {self.gpu}"
        if self.kind == "mig_on":
            return f"{where}: enable MIG mode"
        if self.kind == "mig_off":
            return f"{where}: disable MIG mode"
        if self.kind == "reset":
            return f"{where}: reset the GPU to apply the pending MIG mode"
        if self.kind == "destroy_ci":
            return f"{where}: destroy compute instance {self.ci_id} of GPU instance {self.gi_id} ({self.placement})"
        if self.kind == "destroy_gi":
            return f"{where}: destroy GPU instance {self.gi_id} ({self.placement})"
        if self.kind == "create_gi":
            return f"{where}: create GPU instance {self.placement}"
        if self.kind == "create_ci":
            return f"{where}: create the default compute instance in {self.placement}"
        return f"{where}: {self.kind}"


@dataclass
class GpuDiff:
    gpu: int
    keep: list[Placement] = field(default_factory=list)
    destroy: list[Placement] = field(default_factory=list)
    create: list[Placement] = field(default_factory=list)
    needs_ci: list[Placement] = field(default_factory=list)  # kept instances without a full compute instance
    mode: str = "ok"  # ok | enable | pending-enable | cancel-disable

    @property
    def changes(self) -> bool:
        return bool(self.destroy or self.create or self.needs_ci or self.mode != "ok")


@dataclass
class ApplyReport:
    diffs: list[GpuDiff]
    commands: list[CommandRecord]
    changed: bool
    bindings_path: str | None = None
    bindings: dict | None = None
    dry_run: bool = False
    messages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------------------------


def target_gpus(plan: Plan, only: Sequence[int] | None) -> list[int]:
    gpus = plan.gpus()
    if only is None:
        return gpus
    bad = [g for g in only if g not in gpus]
    if bad:
        raise MigbenchError(
            f"--gpus names GPU(s) {', '.join(map(str, bad))} that the plan does not configure",
            hint=f"the plan configures GPUs {', '.join(map(str, gpus))}",
        )
    return sorted(set(only))


def check_host_matches_models(plan: Plan, host: HostState, gpus: Sequence[int]) -> None:
    """The GPUs must exist, be the plan's model, support MIG, and offer the planned profiles."""
    problems = []
    for g in gpus:
        want = next(x.model for x in plan.fleet if x.gpu == g)
        try:
            st = host.gpu(g)
        except KeyError:
            problems.append(f"GPU {g}: the host has no such GPU (it has {len(host.gpus)})")
            continue
        if st.mig_current is None:
            problems.append(f"GPU {g} ({st.name}) does not support MIG")
            continue
        if st.model is None or st.model.key != want:
            problems.append(f"GPU {g} is {st.name} ({st.model_key}), the plan was made for {want}")
            continue
        for inst in plan.instances_of(g):
            if not st.model.has_profile(inst.profile):
                problems.append(f"GPU {g}: the driver offers no profile {inst.profile}")
                continue
            live = st.model.profile(inst.profile).memory_mib or 0
            runs = [plan.run(r) for r in inst.runs]
            need = max((r.memory_mib for r in runs), default=0)
            if live < inst.memory_mib and need > live:
                problems.append(
                    f"GPU {g}: {inst.profile} has {live} MiB on driver {host.driver}, the plan assumed "
                    f"{inst.memory_mib} MiB and a run needs {need} MiB"
                )
    if problems:
        raise MigbenchError(
            "the host does not match the plan:\n  " + "\n  ".join(problems),
            hint="re-plan on this host (`migbench plan` reads the live profile table through NVML)",
        )


def diff_gpu(plan: Plan, st: GpuState) -> GpuDiff:
    want = set(plan.layout(st.index))
    d = GpuDiff(st.index)
    if not st.mig_current:
        d.mode = "pending-enable" if st.mig_pending else "enable"
        d.create = sorted(want, key=_order)
        return d
    if st.mig_pending is False:
        d.mode = "cancel-disable"
    have = {gi.placement: gi for gi in st.instances}
    for pl, gi in sorted(have.items(), key=lambda kv: _order(kv[0])):
        if pl in want:
            d.keep.append(pl)
            full = [ci for ci in gi.compute_instances if ci.size == st.model.profile(pl.profile).compute_slices] if st.model else []
            if not full or len(gi.compute_instances) != 1:
                d.needs_ci.append(pl)
        else:
            d.destroy.append(pl)
    d.create = sorted((p for p in want if p not in have), key=_order)
    return d


def _order(p: Placement) -> tuple[int, str]:
    return (p.start, p.profile)


def in_use_problems(host: HostState, diffs: Sequence[GpuDiff]) -> list[str]:
    out = []
    for d in diffs:
        st = host.gpu(d.gpu)
        for pl in d.destroy + d.needs_ci:
            gi = st.instance_at(pl)
            if gi is None:
                continue
            procs = st.processes_of(gi.id)
            if procs:
                pids = ", ".join(str(p.pid) for p in sorted(procs, key=lambda p: p.pid))
                verb = "destroy" if pl in d.destroy else "recreate the compute instance of"
                out.append(f"GPU {d.gpu}: would {verb} GPU instance {gi.id} ({pl}), in use by PID(s) {pids}")
        if d.mode != "ok" and st.processes and not st.mig_current:
            pids = ", ".join(str(p.pid) for p in st.processes)
            out.append(f"GPU {d.gpu}: MIG mode must change, but PID(s) {pids} run on the GPU")
    return out


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


class _Executor:
    def __init__(self, backend: Backend, plan: Plan):
        self.b = backend
        self.w = backend.writer
        self.plan = plan

    def host(self) -> HostState:
        return self.b.reader.read()

    def steps_for(self, d: GpuDiff, st: GpuState) -> list[Step]:
        steps: list[Step] = []
        if d.mode in ("enable", "cancel-disable"):
            steps.append(Step(d.gpu, "mig_on", reset_if_pending=bool(st.model and st.model.mode_change_needs_reset)))
        if d.mode == "pending-enable":
            steps.append(Step(d.gpu, "reset"))
        model = st.model
        for pl in d.destroy + d.needs_ci:
            gi = st.instance_at(pl)
            if gi is None:
                continue
            for ci in gi.compute_instances:
                steps.append(Step(d.gpu, "destroy_ci", pl, gi.id, ci.id))
            if pl in d.destroy:
                steps.append(Step(d.gpu, "destroy_gi", pl, gi.id))
        # Largest first: never strands a big instance behind small ones (FACTS.md 0.4).
        creates = sorted(d.create, key=lambda p: (-model.profile(p.profile).memory_slices, p.start)) if model else d.create
        for pl in creates:
            prof = model.profile(pl.profile) if model else None
            steps.append(Step(d.gpu, "create_gi", pl, profile_id=prof.id if prof else None, size=prof.memory_slices if prof else None))
            steps.append(Step(d.gpu, "create_ci", pl))
        for pl in d.needs_ci:
            steps.append(Step(d.gpu, "create_ci", pl, gi_id=st.instance_at(pl).id if st.instance_at(pl) else None))
        return steps

    def run_step(self, s: Step, created: dict[tuple[int, Placement], int]) -> None:
        w = self.w
        if s.kind == "mig_on":
            out = w.set_mig_mode(s.gpu, True)
            if w.dry_run and s.reset_if_pending:
                from migbench.backend import smi

                w.log.append(CommandRecord(smi.gpu_reset_argv(s.gpu), note="only if the mode change stays pending (Ampere)"))
            if out.pending:
                self._reset_for_mode(s.gpu, out.reason)
        elif s.kind == "reset":
            self._reset_for_mode(s.gpu, "a MIG mode change is pending")
        elif s.kind == "destroy_ci":
            w.destroy_compute_instance(s.gpu, int(s.gi_id), int(s.ci_id))
        elif s.kind == "destroy_gi":
            w.destroy_gpu_instance(s.gpu, int(s.gi_id))
        elif s.kind == "create_gi":
            gid = w.create_gpu_instance(s.gpu, int(s.profile_id), s.placement.start, int(s.size))
            if gid is not None:
                created[(s.gpu, s.placement)] = gid
        elif s.kind == "create_ci":
            gid = s.gi_id if s.gi_id is not None else created.get((s.gpu, s.placement))
            if gid is None and not w.dry_run:
                gi = self.host().gpu(s.gpu).instance_at(s.placement)
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
                    w.create_compute_instance(g, int(gid), profile_id=c["profile_id"])  # type: ignore[call-arg]
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


# ---------------------------------------------------------------------------------------------
# Lock, bindings
# ---------------------------------------------------------------------------------------------


class HostLock(PidLock):
    """An exclusive, non-blocking flock so two applies (or an apply and a launch's reconfigure)
    cannot interleave on one host."""

    def busy_error(self) -> MigbenchError:
        return MigbenchError(
            f"another migbench apply is changing this host (lock {self.path} held by PID {self.holder()})",
            hint="wait for it to finish; two applies must not interleave",
        )


def state_dir_for(plan: Plan, override: str | os.PathLike[str] | None = None) -> Path:
    """Where apply's bindings and launch's state live: `<plan dir>/<log_dir>/<sweep name>/`."""
    if override:
        return Path(override)
    base = Path(plan.path).resolve().parent if plan.path else Path.cwd()
    return base / str(plan.launch.get("log_dir") or "runs") / plan.name


def make_bindings(plan: Plan, host: HostState, gpus: Sequence[int]) -> dict:
    """Map each planned instance (and its runs) to the MIG device uuid the host reports."""
    instances: dict[str, dict] = {}
    runs: dict[str, str] = {}
    for g in gpus:
        st = host.gpu(g)
        for inst in plan.instances_of(g):
            gi = st.instance_at(inst.placement)
            if gi is None:
                continue
            devs = st.devices_of(gi.id)
            if not devs:
                continue
            dev = devs[0]
            instances[inst.key] = {"gpu": g, "gi": gi.id, "ci": dev.ci_id, "uuid": dev.uuid, "memory_mib": dev.memory_total_mib}
            for rid in inst.runs:
                runs[rid] = dev.uuid
    return {
        "version": 1,
        "plan": plan.name,
        "plan_file": plan.path,
        "driver": host.driver,
        "simulated": host.simulated,
        "gpus": {str(g): host.gpu(g).uuid for g in gpus},
        "instances": dict(sorted(instances.items())),
        "runs": dict(sorted(runs.items())),
    }


def load_bindings(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> dict | None:
    p = state_dir_for(plan, state_dir) / "bindings.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())


# ---------------------------------------------------------------------------------------------
# The entry points
# ---------------------------------------------------------------------------------------------


def apply_plan(
    plan: Plan,
    backend: Backend,
    *,
    gpus: Sequence[int] | None = None,
    dry_run: bool | None = None,
    confirm=None,  # type: ignore[no-untyped-def]
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
        steps = [s for d in diffs for s in ex.steps_for(d, host.gpu(d.gpu))]
        report = ApplyReport(diffs, backend.writer.log, bool(steps), dry_run=dry_run)
        if dry_run:
            created: dict = {}
            for s in steps:
                ex.run_step(s, created)
            return report
        if not steps:
            report.messages.append("every GPU already matches the plan; nothing changed")
            bindings = make_bindings(plan, host, targets)
            _save_bindings(plan, bindings, report, state_dir)
            return report
        destructive = [s for s in steps if s.kind in ("destroy_gi", "destroy_ci", "mig_on", "reset")]
        if destructive and confirm is not None:
            text = "\n".join(s.describe() for s in steps)
            if not confirm(text):
                raise MigbenchError("apply cancelled; nothing was changed")
        checkpoint = _snapshot(host, targets)
        sd = state_dir_for(plan, state_dir)
        write_json_atomic(sd / "checkpoint.json", {"version": 1, "gpus": checkpoint})
        created: dict[tuple[int, Placement], int] = {}
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
        _save_bindings(plan, bindings, report, state_dir)
        return report
    finally:
        if lock:
            lock.__exit__(None, None, None)


def _save_bindings(plan: Plan, bindings: dict, report: ApplyReport, state_dir) -> None:  # type: ignore[no-untyped-def]
    sd = state_dir_for(plan, state_dir)
    path = sd / "bindings.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged_instances = dict(old.get("instances", {})) if old.get("plan") == plan.name else {}
    merged_runs = dict(old.get("runs", {})) if old.get("plan") == plan.name else {}
    merged_instances.update(bindings["instances"])
    merged_runs.update(bindings["runs"])
    bindings = dict(bindings, instances=dict(sorted(merged_instances.items())), runs=dict(sorted(merged_runs.items())))
    write_json_atomic(path, bindings)
    report.bindings_path = str(path)
    report.bindings = bindings


def verify(plan: Plan, host: HostState, gpus: Sequence[int]) -> list[str]:
    """Differences between the host and the plan on `gpus` ([] when they match)."""
    out = []
    for g in gpus:
        try:
            st = host.gpu(g)
        except KeyError:
            out.append(f"GPU {g}: missing")
            continue
        if not st.mig_current:
            out.append(f"GPU {g}: MIG mode is {'pending enable' if st.mig_pending else 'disabled'}")
            continue
        want = plan.layout(g)
        have = st.layout()
        if want != have:
            extra = [str(p) for p in have if p not in want]
            missing = [str(p) for p in want if p not in have]
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if extra:
                parts.append("unplanned " + ", ".join(extra))
            out.append(f"GPU {g}: " + "; ".join(parts))
        for pl in want:
            gi = st.instance_at(pl)
            if gi is not None and not st.devices_of(gi.id):
                out.append(f"GPU {g}: {pl} has no compute instance (no MIG device)")
    return out


def is_tty() -> bool:
    return sys.stdin.isatty()
