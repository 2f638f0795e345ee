"""The living bench's scheduling pass (issue 21): the host's bench decides, at each event (a sweep
submitted, a run ended, a retry ready), what starts where and which idle slices are re-cut.

It asks `planner.recut.replan` (the same decision `forecast.living.play` and `bench/living.py`
play under the duration model), given:

- per GPU, its layout (the bench plan's instances: the host as the bench last applied it) and the
  runs live on each instance, each with its start and when the duration model expects it to end;
- the runs waiting (queued and ready), each with its arrival (when its sweep was submitted).

A re-cut never touches an instance with a live run (`replan` keeps every busy instance where it is;
`recut_plan` checks it again). The bench plan after a decision (`recut_plan`) has the new layout of
each re-cut GPU; the launcher applies it to those GPUs only (apply's reconcile, checkpoint and
rollback) before it starts anything there.

Pure: no processes, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from migbench.catalog.model import GpuModel
from migbench.duration import Demand, rate
from migbench.plan import Plan, PlanInstance
from migbench.planner.recut import HELD_END_S, Decision, GpuNow, LiveInstance, LiveRun, Recut, RecutSettings, Waiting, replan, slot_of
from migbench.types import InstanceRef, Layout, Placement, layout_key


@dataclass(frozen=True)
class Live:
    """A run live on an instance: its demand (memory as now known) and its start (s after the bench's start)."""

    instance: str
    demand: Demand
    start_s: float


@dataclass(frozen=True)
class Pending:
    """A run waiting: its demand and when it arrived (s after the bench's start)."""

    demand: Demand
    arrival_s: float


def layouts_of(plan: Plan) -> dict[int, Layout]:
    """Each GPU's layout in the bench plan."""
    return {g.gpu: tuple(plan.layout(g.gpu)) for g in plan.fleet}


def host_now(plan: Plan, models: Mapping[int, GpuModel], live: Iterable[Live], st: RecutSettings, held: Iterable[str] = ()) -> list[GpuNow]:
    """The GPUs as `replan` sees them: the bench plan's layouts, each instance with its live runs;
    a run's expected end is its start plus its work at the rate its instance gives it now. An
    instance in `held` (another live launch is bound to it) is full and busy until `HELD_END_S`."""
    on: dict[str, list[Live]] = {}
    for x in live:
        on.setdefault(x.instance, []).append(x)
    held = set(held)
    out = []
    for gpu, lay in sorted(layouts_of(plan).items()):
        g0 = GpuNow(gpu, models[gpu])
        insts = []
        for pl in lay:
            key = str(InstanceRef(gpu, pl))
            slot = slot_of(g0, pl, st.compute_basis)
            if key in held:
                insts.append(LiveInstance(pl, (LiveRun(Demand(f"held:{key}", slot.memory_mib, None, slot.capacity), 0.0, HELD_END_S),)))
                continue
            here = sorted(on.get(key, []), key=lambda x: x.demand.id)
            r = rate([x.demand for x in here], slot.capacity, st.interference) if here else 1.0
            insts.append(LiveInstance(pl, tuple(LiveRun(x.demand, x.start_s, x.start_s + x.demand.work_s / max(r, 1e-9)) for x in here)))
        out.append(GpuNow(gpu, models[gpu], tuple(insts)))
    return out


def decide(
    now_s: float, plan: Plan, models: Mapping[int, GpuModel], live: Iterable[Live], pending: Sequence[Pending], st: RecutSettings, held: Iterable[str] = ()
) -> Decision:
    """The decision now (`replan`): starts, re-cuts of idle slices, GPUs draining for big runs."""
    return replan(now_s, host_now(plan, models, live, st, held), [Waiting(p.demand, p.arrival_s) for p in pending], st)


def recut_plan(plan: Plan, recuts: Sequence[Recut], models: Mapping[int, GpuModel], busy: Iterable[str], st: RecutSettings) -> Plan:
    """The bench plan with `recuts` made: each destroyed instance gone, each created one added (its
    memory and compute share from the model). Raises ValueError when a re-cut would destroy a busy
    instance (`busy`: instance keys with a live run) or leaves a layout the model does not allow."""
    busy = set(busy)
    by_gpu = {rc.gpu: rc for rc in recuts}
    instances: list[PlanInstance] = []
    for gpu, lay in sorted(layouts_of(plan).items()):
        rc = by_gpu.get(gpu)
        if rc is None:
            instances += [i for i in plan.instances if i.gpu == gpu]
            continue
        hit = sorted(str(InstanceRef(gpu, p)) for p in rc.destroy if str(InstanceRef(gpu, p)) in busy)
        if hit:
            raise ValueError(f"a re-cut of GPU {gpu} would destroy busy instance(s) {', '.join(hit)}")
        new: list[Placement] = [p for p in lay if p not in rc.destroy] + list(rc.create)
        problems = models[gpu].check(new)
        if problems or len(set(new)) != len(new):
            raise ValueError(f"GPU {gpu}: layout {', '.join(map(str, new))} is not legal: {problems or 'a placement twice'}")
        kept = {i.ref.placement: i for i in plan.instances if i.gpu == gpu}
        for pl in layout_key(new):
            if pl in kept:
                instances.append(kept[pl])
            else:
                cap = slot_of(GpuNow(gpu, models[gpu]), pl, st.compute_basis)
                instances.append(PlanInstance(gpu, pl.profile, pl.start, cap.memory_mib, cap.capacity, ()))
    return replace(plan, instances=instances)
