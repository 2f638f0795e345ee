"""What apply must do, computed without touching anything: host x plan -> per-GPU differences ->
steps. Also the checks that come before (the host is the plan's, nothing planned away is in use) and
after (the host reads back as planned)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from migbench.backend.base import GpuState, HostState
from migbench.errors import MigbenchError
from migbench.plan import Plan
from migbench.types import Placement


class StepKind(str, Enum):
    MIG_ON = "mig_on"
    MIG_OFF = "mig_off"
    RESET = "reset"
    DESTROY_CI = "destroy_ci"
    DESTROY_GI = "destroy_gi"
    CREATE_GI = "create_gi"
    CREATE_CI = "create_ci"

    def __str__(self) -> str:
        return self.value


DESTRUCTIVE = (StepKind.DESTROY_GI, StepKind.DESTROY_CI, StepKind.MIG_ON, StepKind.RESET)


@dataclass(frozen=True)
class Step:
    gpu: int
    kind: StepKind
    placement: Placement | None = None
    gi_id: int | None = None
    ci_id: int | None = None
    profile_id: int | None = None
    size: int | None = None
    reset_if_pending: bool = False  # Ampere: a mode change may need a GPU reset to take effect

    def describe(self) -> str:
        where = f"GPU {self.gpu}"
        if self.kind is StepKind.MIG_ON:
            return f"{where}: enable MIG mode"
        if self.kind is StepKind.MIG_OFF:
            return f"{where}: disable MIG mode"
        if self.kind is StepKind.RESET:
            return f"{where}: reset the GPU to apply the pending MIG mode"
        if self.kind is StepKind.DESTROY_CI:
            return f"{where}: destroy compute instance {self.ci_id} of GPU instance {self.gi_id} ({self.placement})"
        if self.kind is StepKind.DESTROY_GI:
            return f"{where}: destroy GPU instance {self.gi_id} ({self.placement})"
        if self.kind is StepKind.CREATE_GI:
            return f"{where}: create GPU instance {self.placement}"
        if self.kind is StepKind.CREATE_CI:
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
                    f"GPU {g}: {inst.profile} has {live} MiB on driver {host.driver}, the plan assumed {inst.memory_mib} MiB and a run needs {need} MiB"
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


def changed_devices(host: HostState, diffs: Sequence[GpuDiff]) -> dict[str, str]:
    """MIG device uuid -> what apply would do to it, for every device the diffs destroy or re-create."""
    out = {}
    for d in diffs:
        st = host.gpu(d.gpu)
        for pl in d.destroy + d.needs_ci:
            gi = st.instance_at(pl)
            if gi is None:
                continue
            verb = "destroy" if pl in d.destroy else "recreate the compute instance of"
            for dev in st.devices_of(gi.id):
                out[dev.uuid] = f"GPU {d.gpu}: would {verb} GPU instance {gi.id} ({pl})"
    return out


def steps_for(d: GpuDiff, st: GpuState) -> list[Step]:
    """The steps that take one GPU from its state to the plan's layout (pure)."""
    steps: list[Step] = []
    if d.mode in ("enable", "cancel-disable"):
        steps.append(Step(d.gpu, StepKind.MIG_ON, reset_if_pending=bool(st.model and st.model.mode_change_needs_reset)))
    if d.mode == "pending-enable":
        steps.append(Step(d.gpu, StepKind.RESET))
    model = st.model
    for pl in d.destroy + d.needs_ci:
        gi = st.instance_at(pl)
        if gi is None:
            continue
        for ci in gi.compute_instances:
            steps.append(Step(d.gpu, StepKind.DESTROY_CI, pl, gi.id, ci.id))
        if pl in d.destroy:
            steps.append(Step(d.gpu, StepKind.DESTROY_GI, pl, gi.id))
    # Largest first: never strands a big instance behind small ones (docs/mig-facts.md, creation order).
    creates = sorted(d.create, key=lambda p: (-model.profile(p.profile).memory_slices, p.start)) if model else d.create
    for pl in creates:
        prof = model.profile(pl.profile) if model else None
        steps.append(Step(d.gpu, StepKind.CREATE_GI, pl, profile_id=prof.id if prof else None, size=prof.memory_slices if prof else None))
        steps.append(Step(d.gpu, StepKind.CREATE_CI, pl))
    for pl in d.needs_ci:
        gi = st.instance_at(pl)
        steps.append(Step(d.gpu, StepKind.CREATE_CI, pl, gi_id=gi.id if gi else None))
    return steps


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
