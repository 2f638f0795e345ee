"""From aggregate solutions to concrete GPUs, instances and queues, scheduled under the duration model."""

from __future__ import annotations

from dataclasses import dataclass, replace

from migbench.duration import Demand, Slot, solo_time
from migbench.duration.replay import Result, list_schedule
from migbench.planner.problem import Assigned, PlanningProblem, SolveOptions
from migbench.types import InstanceRef, Placement


@dataclass
class Concrete:
    layouts: dict[int, tuple[Placement, ...]]
    slots: list[Slot]
    slot_type: dict[str, int]
    slot_place: dict[str, tuple[int, Placement]]


def concretize(prob: PlanningProblem, counts: dict[str, list[int]]) -> Concrete:
    layouts: dict[int, tuple[Placement, ...]] = {}
    for key, lays in prob.layouts.items():
        gpus = list(prob.gpus_of[key])
        i = 0
        for li, k in enumerate(counts[key]):
            for _ in range(k):
                layouts[gpus[i]] = lays[li][1]
                i += 1
    slots, slot_type, slot_place = [], {}, {}
    model_of = {g.index: g.model.key for g in prob.fleet}
    for gpu in sorted(layouts):
        for pl in layouts[gpu]:
            ti = prob.type_index[(model_of[gpu], pl.profile)]
            t = prob.types[ti]
            key = str(InstanceRef(gpu, pl))
            slots.append(Slot(key, t.memory_mib, t.capacity, type_key=str(ti)))
            slot_type[key] = ti
            slot_place[key] = (gpu, pl)
    return Concrete(layouts, slots, slot_type, slot_place)


def demands_of(prob: PlanningProblem, unit: bool) -> dict[str, Demand]:
    out = {}
    for c in prob.classes:
        for rid in c.runs:
            r = prob.runs[rid]
            out[rid] = replace(r, duration_s=None) if unit else r
    return out


def class_of(prob: PlanningProblem) -> dict[str, int]:
    return {rid: ci for ci, c in enumerate(prob.classes) for rid in c.runs}


def schedule(
    conc: Concrete,
    jobs: dict[str, Demand],
    order: list[str],
    allowed_types: dict[str, set[int]],
    opts: SolveOptions,
    pinned: dict[str, str] | None = None,
) -> Result:
    def allowed(j: Demand, s: Slot) -> bool:
        return conc.slot_type[s.key] in allowed_types[j.id]

    keys: dict[int, tuple[str, ...]] = {}

    def types_of(j: Demand) -> tuple[str, ...]:
        a = allowed_types[j.id]
        k = keys.get(id(a))
        if k is None:
            k = keys[id(a)] = tuple(str(ti) for ti in sorted(a))
        return k

    return list_schedule([jobs[r] for r in order], conc.slots, allowed, interference=opts.interference, pinned=pinned, types_of=types_of)


def lpt_order(prob: PlanningProblem, jobs: dict[str, Demand]) -> list[str]:
    """Longest (fastest solo time) first, then most memory, most compute, run id."""
    cls = class_of(prob)
    fastest: dict[tuple[int, float, float], float] = {}

    def key(rid: str) -> tuple:
        j = jobs[rid]
        k = (cls[rid], j.work_s, j.compute)
        f = fastest.get(k)
        if f is None:
            f = fastest[k] = min(solo_time(j, prob.types[ti].capacity) for ti in prob.classes[cls[rid]].types)
        return (-f, -j.memory_mib, -j.compute, rid)

    return sorted(jobs, key=key)


# ---------------------------------------------------------------------------------------------


def finish(prob: PlanningProblem, conc: Concrete, res: Result, jobs: dict[str, Demand], timed: bool) -> tuple[dict[str, Assigned], dict[InstanceRef, float]]:
    waves = res.wave_of()
    assigned = {}
    for rid in jobs:
        gpu, pl = conc.slot_place[res.slot_of[rid]]
        assigned[rid] = Assigned(gpu, pl, waves[rid], res.start_s[rid] if timed else None, res.end_s.get(rid) if timed else None)
    capacity = {InstanceRef(*conc.slot_place[s.key]): s.capacity for s in conc.slots}
    return assigned, capacity
