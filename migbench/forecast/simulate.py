"""Play a whole sweep forward under the plan's duration model: `migbench simulate`.

The replay uses the launcher's queue policy (`duration.replay.replay`: per-instance queues in wave order,
idle instances lending themselves to waiting runs), so the figures are what the plan buys under the
model before a week of GPU time is spent:

- makespan, and runs running over time;
- utilisation = busy compute / available compute: the compute the runs are served under the model
  (per instance and moment, min(its capacity, the demand of the runs on it), in whole GPUs) over
  every GPU's whole compute over the makespan. One run of compute 0.2 alone on a GPU is 20 %,
  however the GPU is cut;
- occupancy = busy slice-hours / available slice-hours, where an instance's compute slices count as
  busy while at least one run is on it (how much of the fleet the instances hold, not how much
  compute the runs use: a whole-GPU instance with one light run is fully occupied);
- idle slices: compute slices that no instance of the layout covers (stranded by the layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from migbench.catalog import default_catalog
from migbench.duration import Demand, DurationModel, Slot, instance_capacity
from migbench.duration.replay import Result, replay
from migbench.errors import MigbenchError
from migbench.plan import Plan, replay_plan
from migbench.planner.fleet import FleetGpu
from migbench.planner.problem import Solution
from migbench.types import InstanceRef


@dataclass
class SimReport:
    label: str
    makespan_s: float
    runs: int
    started_at_once: int
    utilisation: float  # busy compute / available compute
    occupancy: float  # busy slice-hours / available slice-hours
    idle_slices: int
    total_slices: int
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (time s, runs running from then)
    unrunnable: int = 0
    notes: list[str] = field(default_factory=list)
    busy_slice_s: dict[str, float] = field(default_factory=dict)  # per instance: compute slices x seconds busy
    busy_compute_s: dict[str, float] = field(default_factory=dict)  # per instance: compute served (GPUs) x seconds

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "makespan_s": round(self.makespan_s, 3),
            "runs": self.runs,
            "started_at_once": self.started_at_once,
            "utilisation": round(self.utilisation, 4),
            "occupancy": round(self.occupancy, 4),
            "idle_slices": self.idle_slices,
            "total_slices": self.total_slices,
            "unrunnable": self.unrunnable,
            "timeline": [[round(t, 3), n] for t, n in self.timeline],
            "notes": self.notes,
        }


def figures(
    label: str,
    res: Result,
    slots: Sequence[Slot],
    slot_slices: dict[str, int],
    jobs: Sequence[Demand],
    total_slices: int,
    gpus: int,
) -> SimReport:
    """Utilisation (busy compute), occupancy (busy slices) and the running-runs timeline from a played schedule."""
    by_id = {j.id: j for j in jobs}
    caps = {s.key: s.capacity for s in slots}
    makespan = res.makespan_s
    # Per slot: intervals where the running set is constant.
    per_slot: dict[str, list[tuple[float, int, str]]] = {}
    for jid, slot in res.slot_of.items():
        per_slot.setdefault(slot, []).append((res.start_s[jid], +1, jid))
        per_slot.setdefault(slot, []).append((res.end_s[jid], -1, jid))
    busy_slice_s = 0.0
    compute_s = 0.0
    busy_by_slot: dict[str, float] = {}
    compute_by_slot: dict[str, float] = {}
    for slot, evs in per_slot.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        running: set[str] = set()
        last = 0.0
        for t, kind, jid in evs:
            if running and t > last:
                busy_slice_s += slot_slices[slot] * (t - last)
                busy_by_slot[slot] = busy_by_slot.get(slot, 0.0) + slot_slices[slot] * (t - last)
                demand = sum(by_id[j].compute for j in running)
                served = min(caps[slot], demand) * (t - last)
                compute_s += served
                compute_by_slot[slot] = compute_by_slot.get(slot, 0.0) + served
            last = t
            if kind > 0:
                running.add(jid)
            else:
                running.discard(jid)
    changes: dict[float, int] = {}
    for jid in res.slot_of:
        changes[res.start_s[jid]] = changes.get(res.start_s[jid], 0) + 1
        changes[res.end_s[jid]] = changes.get(res.end_s[jid], 0) - 1
    timeline, n = [], 0
    for t in sorted(changes):
        n += changes[t]
        timeline.append((t, n))
    used_slices = sum(slot_slices.values())
    avail = total_slices * makespan
    return SimReport(
        label=label,
        makespan_s=makespan,
        runs=len(res.slot_of),
        started_at_once=res.started_at_once,
        utilisation=compute_s / (gpus * makespan) if makespan > 0 else 0.0,
        occupancy=busy_slice_s / avail if avail > 0 else 0.0,
        idle_slices=total_slices - used_slices,
        total_slices=total_slices,
        timeline=timeline,
        busy_slice_s=busy_by_slot,
        busy_compute_s=compute_by_slot,
    )


def plan_jobs(plan: Plan) -> list[Demand]:
    missing = [r.id for r in plan.placed_runs() if not r.duration_s]
    if missing:
        raise MigbenchError(
            f"{len(missing)} run(s) have no duration, e.g. {missing[0]}; the simulation needs one for every run",
            hint="give each group a `duration:` (e.g. duration: 8h) and plan again",
        )
    return [r.demand() for r in plan.placed_runs()]


@dataclass(frozen=True)
class ReplayInstance:
    """One instance to replay: where it is, its memory, its compute share and its compute slices."""

    ref: InstanceRef
    memory_mib: int
    capacity: float
    slices: int


def replay_instances(
    label: str,
    instances: Sequence[ReplayInstance],
    queues: Mapping[InstanceRef, Sequence[str]],
    demands: Sequence[Demand],
    dm: DurationModel,
    *,
    total_slices: int,
    gpus: int,
    lend: bool = True,
    planned_start: Mapping[str, float] | None = None,
) -> SimReport:
    """Replay instances with per-instance queues (instance -> run ids in wave order) under the
    duration model and the launcher's queue policy: idle instances lend themselves to runs late on
    their own queue, where the run's profiles allow."""
    return play_instances(label, instances, queues, demands, dm, total_slices=total_slices, gpus=gpus, lend=lend, planned_start=planned_start)[0]


def play_instances(
    label: str,
    instances: Sequence[ReplayInstance],
    queues: Mapping[InstanceRef, Sequence[str]],
    demands: Sequence[Demand],
    dm: DurationModel,
    *,
    total_slices: int,
    gpus: int,
    lend: bool = True,
    planned_start: Mapping[str, float] | None = None,
) -> tuple[SimReport, Result]:
    """`replay_instances`, also returning the played schedule (each run's start, end and instance)."""
    slots = [Slot(str(i.ref), i.memory_mib, i.capacity, str(i.ref.gpu)) for i in instances]
    slot_profile = {str(i.ref): i.ref.placement.profile for i in instances}

    def lend_ok(d: Demand, slot: Slot) -> bool:
        return d.profiles is None or slot_profile[slot.key] in d.profiles

    res = replay(
        demands,
        slots,
        {str(i.ref): list(queues.get(i.ref, ())) for i in instances},
        interference=dm.interference,
        lend=lend_ok if lend else None,
        planned_start=dict(planned_start) if planned_start else None,
    )
    return figures(label, res, slots, {str(i.ref): i.slices for i in instances}, demands, total_slices, gpus), res


def simulate_plan(plan: Plan, *, lend: bool = True, label: str = "migbench plan") -> SimReport:
    """Replay `plan` under its duration model with the launcher's queue policy."""
    return play_plan(plan, lend=lend, label=label)[0]


def plan_instances(plan: Plan) -> tuple[list[ReplayInstance], int]:
    """The plan's instances as the replay sees them, and the fleet's compute slices."""
    cat = default_catalog()
    models = {g.gpu: cat.model(g.model, g.driver) for g in plan.fleet}
    instances = [ReplayInstance(i.ref, i.memory_mib, i.compute or 1.0, models[i.gpu].profile(i.profile).compute_slices) for i in plan.instances]
    return instances, sum(m.compute_slices for m in models.values())


def play_plan(plan: Plan, *, lend: bool = True, label: str = "migbench plan") -> tuple[SimReport, Result]:
    """`simulate_plan`, also returning the played schedule (for the report's timeline). The replay is
    `plan.replay_plan`, the very one that gives the plan's own makespan."""
    instances, total_slices = plan_instances(plan)
    jobs = plan_jobs(plan)
    res = replay_plan(plan, lend=lend)
    slots = [Slot(str(i.ref), i.memory_mib, i.capacity, str(i.ref.gpu)) for i in instances]
    return figures(label, res, slots, {str(i.ref): i.slices for i in instances}, jobs, total_slices, len(plan.fleet)), res


def simulate_solution(
    sol: Solution, fleet: Sequence[FleetGpu], demands: Sequence[Demand], dm: DurationModel, *, label: str = "migbench", lend: bool = True
) -> SimReport:
    """Replay a planner solution (before it becomes a plan file) exactly as `simulate_plan` would."""
    models = {g.index: g.model for g in fleet}
    instances = []
    for gpu, lay in sorted(sol.layouts.items()):
        for pl in lay:
            p = models[gpu].profile(pl.profile)
            ref = InstanceRef(gpu, pl)
            cap = sol.capacity.get(ref) or instance_capacity(models[gpu], p, dm.compute_basis)
            instances.append(ReplayInstance(ref, int(p.memory_mib or 0), cap, p.compute_slices))
    queues: dict[InstanceRef, list[str]] = {}
    for rid, a in sorted(sol.assigned.items(), key=lambda kv: (kv[1].wave, kv[1].start_s or 0, kv[0])):
        queues.setdefault(InstanceRef(a.gpu, a.placement), []).append(rid)
    placed = [d for d in demands if d.id in sol.assigned]
    planned = {rid: a.start_s for rid, a in sol.assigned.items() if a.start_s is not None}
    return replay_instances(
        label,
        instances,
        queues,
        placed,
        dm,
        total_slices=sum(g.model.compute_slices for g in fleet),
        gpus=len(fleet),
        lend=lend,
        planned_start=planned or None,
    )
