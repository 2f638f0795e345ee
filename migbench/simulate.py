"""Play a whole sweep forward under the plan's duration model: `migbench simulate`.

The replay uses the launcher's queue policy (`engine.replay`: per-instance queues in wave order,
idle instances lending themselves to waiting runs), so the figures are what the plan buys under the
model before a week of GPU time is spent:

- makespan, and runs running over time;
- utilisation = busy slice-hours / available slice-hours, where an instance's compute slices count as
  busy while at least one run is on it and the available slice-hours are every GPU's compute slices
  over the makespan;
- compute use = the compute actually consumed under the model (sum over instances of
  min(capacity, demand of the runs on it)) over the fleet's full compute over the makespan;
- idle slices: compute slices that no instance of the layout covers (stranded by the layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from migbench.engine import Job, Result, Slot, replay
from migbench.errors import MigbenchError
from migbench.plan import Plan


@dataclass
class SimReport:
    label: str
    makespan_s: float
    runs: int
    started_at_once: int
    utilisation: float
    compute_use: float
    idle_slices: int
    total_slices: int
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (time s, runs running from then)
    unrunnable: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "makespan_s": round(self.makespan_s, 3),
            "runs": self.runs,
            "started_at_once": self.started_at_once,
            "utilisation": round(self.utilisation, 4),
            "compute_use": round(self.compute_use, 4),
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
    jobs: Sequence[Job],
    total_slices: int,
    gpus: int,
) -> SimReport:
    """Utilisation, compute use and the running-runs timeline from a played schedule."""
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
    for slot, evs in per_slot.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        running: set[str] = set()
        last = 0.0
        for t, kind, jid in evs:
            if running and t > last:
                busy_slice_s += slot_slices[slot] * (t - last)
                demand = sum(by_id[j].compute for j in running)
                compute_s += min(caps[slot], demand) * (t - last)
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
        utilisation=busy_slice_s / avail if avail > 0 else 0.0,
        compute_use=compute_s / (gpus * makespan) if makespan > 0 else 0.0,
        idle_slices=total_slices - used_slices,
        total_slices=total_slices,
        timeline=timeline,
    )


def plan_jobs(plan: Plan) -> list[Job]:
    missing = [r.id for r in plan.placed_runs() if not r.duration_s]
    if missing:
        raise MigbenchError(
            f"{len(missing)} run(s) have no duration, e.g. {missing[0]}; the simulation needs one for every run",
            hint="give each group a `duration:` (e.g. duration: 8h) and plan again",
        )
    return [
        Job(r.id, r.memory_mib, float(r.duration_s or 1.0), float(r.compute), int(r.max_runs_per_instance))
        for r in plan.placed_runs()
    ]


def simulate_plan(plan: Plan, *, lend: bool = True, label: str = "migbench plan") -> SimReport:
    """Replay `plan` under its duration model with the launcher's queue policy."""
    from migbench.catalog import default_catalog

    jobs = plan_jobs(plan)
    slots, slot_slices, queues = [], {}, {}
    total_slices = 0
    cat = default_catalog()
    models = {g.model: cat.model(g.model) for g in plan.fleet} if plan.fleet else {}
    for g in plan.fleet:
        total_slices += models[g.model].compute_slices
    for inst in plan.instances:
        slots.append(Slot(inst.key, inst.memory_mib, inst.compute or 1.0, f"{inst.gpu}"))
        slot_slices[inst.key] = models[next(x.model for x in plan.fleet if x.gpu == inst.gpu)].profile(inst.profile).compute_slices
        queues[inst.key] = list(inst.runs)
    allowed = {r.id: r.profiles for r in plan.placed_runs()}
    slot_profile = {i.key: i.profile for i in plan.instances}

    def lend_ok(job: Job, slot: Slot) -> bool:
        prof = allowed.get(job.id)
        return prof is None or slot_profile[slot.key] in prof

    interference = float(plan.duration_model.get("interference", 0.0) or 0.0)
    planned = {r.id: float(r.est_start_s) for r in plan.placed_runs() if r.est_start_s is not None}
    res = replay(
        jobs, slots, queues, interference=interference, lend=lend_ok if lend else None,
        planned_start=planned or None,
    )
    return figures(label, res, slots, slot_slices, jobs, total_slices, len(plan.fleet))
