"""A grown sweep joins what the host has (issue 21): `run` of a sweep that already launched places its
unfinished and new runs on the instances the earlier plan made, and re-cuts only what it must.

`grow_plan` is pure and deterministic: the earlier plan, the sweep now, the fleet and what the launch
state says of each run (`RunState`) give the same plan, byte for byte. It answers None where growing
does not apply (the fleet changed: plan from scratch) and otherwise a `Grown` plan that:

- keeps every run of the earlier plan that finished (marked `done:` with its final state and
  `ran_on:` where it ran; placed where it was while that instance still exists) and every run a
  launcher may still have live (`starting`/`running`: its instance is busy and never touched);
- drops a run no longer in the sweep that is neither finished nor live (a note says so);
- places the runs to start (new, queued, interrupted) on the existing instances with the re-plan
  step's greedy fit (`recut.pack`, tightest instance across the GPUs, wave after wave), after the
  runs already on each instance;
- re-cuts a GPU only when a run fits no instance of the layout, and then only GPUs whose instances
  are all idle, as `recut.replan` chooses for those runs; a run that still fits nowhere is unplaced;
- when more runs wait than the instances take at once, adds instances in the unused slices of idle
  GPUs (destroying none) where `recut.choose_layout` finds that more start at once.

Each instance's queue keeps its earlier runs first, so the plan played forward (`simulate`, the
report's timeline) shows the whole sweep; the new runs' estimated start and end come from that same
play (`duration.replay`, no lending), when every placed run has a duration.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from migbench.catalog.model import GpuModel
from migbench.duration import Demand, DurationModel, Slot
from migbench.duration.model import ComputeBasis
from migbench.duration.replay import replay
from migbench.plan import Assignment, Finished, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced, model_summary
from migbench.plancheck import DONE_STATES
from migbench.planner.fleet import FleetGpu
from migbench.planner.recut import (
    GpuNow,
    LiveInstance,
    LiveRun,
    RecutSettings,
    Waiting,
    choose_layout,
    instances_now,
    maximal_layouts,
    pack,
    priority,
    replan,
    slot_of,
)
from migbench.sweep.model import Run, Sweep
from migbench.types import InstanceRef, Layout, layout_key

SHARED_STATUS = "SHARED"
"""The solver status of a plan grown over a host other launches share (no solve: `grow_plan`'s greedy fit)."""

LIVE_STATES = ("starting", "running")
"""Runs a launcher may still have on an instance (a killed launcher's runs are adopted by the next)."""


@dataclass(frozen=True)
class RunState:
    """What the launch state says of a run: its state and where its latest attempt ran (if it did)."""

    state: str
    instance: str | None = None


@dataclass(frozen=True)
class HostNow:
    """The host as it is when other live launches share it: each GPU's layout (as NVML reads it)
    and the instances those launches hold, each with who holds it. A held instance is busy: no run
    starts beside what runs there, its GPU is not re-cut, and runs placed on it come after the
    holder's (the launcher starts them once the holder lets the instance go)."""

    layouts: Mapping[int, Layout]
    held: Mapping[InstanceRef, str] = field(default_factory=dict)


@dataclass
class Grown:
    """The grown plan and what was decided, in words (for the user and the plan's warnings)."""

    plan: Plan
    decided: list[str] = field(default_factory=list)
    recut_gpus: tuple[int, ...] = ()
    starting: tuple[str, ...] = ()  # the runs placed to start (new, queued or interrupted before)


def instances_on(models: Mapping[int, GpuModel], layouts: Mapping[int, Layout], basis: ComputeBasis, keep: Sequence[PlanInstance] = ()) -> list[PlanInstance]:
    """A plan's instances for each GPU's layout (GPUs in `models`' order): memory and compute share
    from the model, no run queued; an instance of `keep` at the same place is kept as it is."""
    have = {i.ref: i for i in keep}
    out = []
    for gpu, model in models.items():
        for pl in layouts.get(gpu, ()):
            cap = slot_of(GpuNow(gpu, model), pl, basis)
            out.append(have.get(InstanceRef(gpu, pl)) or PlanInstance(gpu, pl.profile, pl.start, cap.memory_mib, cap.capacity, ()))
    return out


def host_plan(sweep: Sweep, fleet: Sequence[FleetGpu], layouts: Mapping[int, Layout]) -> Plan:
    """A plan with no run yet whose instances are the host's (`layouts`): what `grow_plan` grows
    when a sweep that never launched here joins a host other launches share."""
    instances = instances_on({g.index: g.model for g in fleet}, layouts, sweep.duration_model.compute_basis)
    return Plan(
        name=sweep.name,
        sweep_file=None if sweep.path is None else os.path.relpath(sweep.path),
        sweep_sha256=sweep.sha256,
        fleet=[PlanGpu(g.index, g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver)), g.node) for g in fleet],
        instances=instances,
        runs=[],
        unplaced=[],
        solver=SolverInfo(SHARED_STATUS, "", 0.0, 0.0, 0.0),
        duration_model=sweep.duration_model,
        launch=sweep.launch,
        models={},
    )


def same_fleet(old: Plan, fleet: Sequence[FleetGpu]) -> bool:
    return [(g.gpu, g.model, g.node) for g in old.fleet] == [(g.index, g.model.key, g.node) for g in fleet]


def grow_plan(
    old: Plan, sweep: Sweep, fleet: Sequence[FleetGpu], states: Mapping[str, RunState], *, notes: Sequence[str] = (), host: HostNow | None = None
) -> Grown | None:
    """The earlier plan `old` grown to `sweep` (see the module's docstring); None when the fleet
    changed. With `host`, the layouts are the host's (not the earlier plan's) and the instances other
    launches hold are busy."""
    if not same_fleet(old, fleet):
        return None
    dm = sweep.duration_model
    st = RecutSettings(compute_basis=dm.compute_basis, interference=dm.interference)
    in_sweep = {r.id: r for r in sweep.runs}
    state = dict(states)
    decided: list[str] = []

    # what is kept as it was: finished runs (marked) and live ones; what is dropped
    kept, dropped = _kept(old, state, in_sweep)
    models = {g.index: g.model for g in fleet}
    layouts: dict[int, Layout] = {g.index: tuple(host.layouts.get(g.index, ())) if host else old.layout(g.index) for g in fleet}
    exists = {InstanceRef(g, pl) for g, lay in layouts.items() for pl in lay}
    live: dict[InstanceRef, list[Demand]] = {}  # the host as the earlier plan left it, busy where a run lives
    for ref, who in sorted((host.held if host else {}).items(), key=lambda kv: str(kv[0])):
        if ref in exists:  # filled: nothing of this sweep starts beside the holder's runs
            live[ref] = [Demand(f"held by {who}", slot_of(GpuNow(ref.gpu, models[ref.gpu]), ref.placement, st.compute_basis).memory_mib)]
    for rid, s in state.items():  # runs an earlier plan file does not list (a plan of the new runs only)
        known = kept.get(rid)
        if s.state in DONE_STATES and known is None and rid in in_sweep:
            kept[rid] = PlanRun.of(in_sweep[rid].core(), finished=Finished(s.state, s.instance))
        elif s.state in LIVE_STATES:
            where = _ref(s.instance) or (known.ref if known is not None else None)
            if known is None and rid in in_sweep:
                known = kept[rid] = _placed(PlanRun.of(in_sweep[rid].core()), where if where in exists else None)
            if where is not None and where in exists:
                mib = slot_of(GpuNow(where.gpu, models[where.gpu]), where.placement, st.compute_basis).memory_mib
                # a live run nothing describes any more fills its instance: no run joins it
                live.setdefault(where, []).append(known.demand() if known is not None else Demand(rid, mib))
    todo = [r for r in sweep.runs if r.id not in kept]

    def now(gpu: int, with_live: bool = True) -> GpuNow:
        insts = tuple(LiveInstance(pl, tuple(LiveRun(d, 0.0, 0.0) for d in live.get(InstanceRef(gpu, pl), [])) if with_live else ()) for pl in layouts[gpu])
        return GpuNow(gpu, models[gpu], insts)

    waiting = sorted((Waiting(r.demand(), 0.0) for r in todo), key=priority)
    current = {g: now(g) for g in sorted(layouts)}
    room = sorted({(slot_of(current[g], pl, st.compute_basis).memory_mib, pl.profile) for g in layouts for pl in layouts[g]})
    unfit = [w for w in waiting if not any(_holds(mib, prof, w) for mib, prof in room)]
    recut: dict[int, tuple[Layout, Layout]] = {}
    if unfit:
        idle = [g for g in current.values() if not g.busy_placements]
        decision = replan(0.0, idle, unfit, st)
        for rc in decision.recuts:
            before = layouts[rc.gpu]
            layouts[rc.gpu] = layout_key([*(p for p in before if p not in rc.destroy), *rc.create])
            recut[rc.gpu] = (before, layouts[rc.gpu])

    first = {w.demand.id for w in unfit}  # the runs a GPU was re-cut for take its new instances first
    queue = [w for w in waiting if w.demand.id in first] + [w for w in waiting if w.demand.id not in first]
    untouched = [g for g in sorted(layouts) if g not in recut and not current[g].busy_placements]
    added = _add_in_unused_slices(queue, layouts, untouched, now, st)

    # place wave after wave: the first beside the live runs, each next one on empty instances
    assigned, unplaced_ids = _waves(queue, layouts, now, st)

    plan = _assemble(old, sweep, fleet, layouts, kept, todo, assigned, unplaced_ids, st, dm)
    earlier_ids = {r.id for r in old.runs}
    fresh = sum(1 for rid in assigned if rid not in earlier_ids)
    decided += _say(fresh, assigned, unplaced_ids, recut, added, live, dropped, frozenset(host.held) if host else frozenset())
    plan.warnings = [*notes, *decided]
    return Grown(plan, decided, tuple(sorted({*recut, *added})), tuple(r.id for r in todo if r.id in assigned))


def _kept(old: Plan, state: Mapping[str, RunState], in_sweep: Mapping[str, Run]) -> tuple[dict[str, PlanRun], list[str]]:
    """The earlier plan's runs kept as they were (finished ones marked, live ones, and finished
    history no longer in the sweep), and the ids of those dropped (not in the sweep, never run)."""
    kept: dict[str, PlanRun] = {}
    dropped: list[str] = []
    for r in old.runs:
        s = state.get(r.id)
        if s is not None and s.state in DONE_STATES:
            kept[r.id] = replace(r, finished=Finished(s.state, s.instance or r.ran_on or r.instance_key))
        elif s is not None and s.state in LIVE_STATES:
            kept[r.id] = r
        elif r.id not in in_sweep and r.done is None:
            dropped.append(r.id)
        elif r.id not in in_sweep:
            kept[r.id] = r  # finished in a launch before, and no longer in the sweep: history
    return kept, dropped


def _waves(
    queue: list[Waiting], layouts: Mapping[int, Layout], now: Callable[[int, bool], GpuNow], st: RecutSettings
) -> tuple[dict[str, tuple[InstanceRef, int]], set[str]]:
    """Place `queue` wave after wave: the first beside the live runs, each next one on empty
    instances; ({run id: (instance, wave)}, the ids that fit no instance)."""
    assigned: dict[str, tuple[InstanceRef, int]] = {}
    k = 0
    while queue:
        insts = [i for g in sorted(layouts) for i in instances_now(now(g, k == 0), st)]
        placed = pack(insts, queue)
        if not placed and k > 0:  # on empty instances, nothing more fits: what is left fits no instance
            break
        for rid, inst in placed:
            assigned[rid] = (InstanceRef(inst.gpu, inst.placement), k)
        queue = [w for w in queue if w.demand.id not in assigned]
        k += 1
    return assigned, {w.demand.id for w in queue}


def _add_in_unused_slices(
    queue: Sequence[Waiting], layouts: dict[int, Layout], idle: Sequence[int], now: Callable[[int], GpuNow], st: RecutSettings
) -> dict[int, tuple[Layout, Layout]]:
    """Runs that would wait for an instance (more runs than the instances take at once) may start on
    instances created in the unused slices of an idle GPU: among the maximal layouts that keep every
    instance it has, the one `recut.choose_layout` scores best for them, if better than the layout as
    it is. Nothing is destroyed. Updates `layouts`; returns each changed GPU's (before, after)."""
    placed = pack([i for g in sorted(layouts) for i in instances_now(now(g), st)], queue)
    on: dict[InstanceRef, list[Demand]] = {}
    demand = {w.demand.id: w.demand for w in queue}
    for rid, inst in placed:
        on.setdefault(InstanceRef(inst.gpu, inst.placement), []).append(demand[rid])
    taken = {rid for rid, _ in placed}
    left = [w for w in queue if w.demand.id not in taken]
    out: dict[int, tuple[Layout, Layout]] = {}
    for g in idle:
        if not left:
            break
        cur, model = layouts[g], now(g).model
        wider = [lay for lay in maximal_layouts(model) if set(cur) < set(lay)]
        if not wider:
            continue
        gnow = GpuNow(g, model, tuple(LiveInstance(pl, tuple(LiveRun(d, 0.0, 0.0) for d in on.get(InstanceRef(g, pl), []))) for pl in cur))
        lay, more = choose_layout(gnow, [left], st, [cur, *wider])
        if lay == cur:
            continue
        layouts[g] = lay
        out[g] = (cur, lay)
        taken = {rid for rid, _ in more}
        left = [w for w in left if w.demand.id not in taken]
    return out


def _ref(key: str | None) -> InstanceRef | None:
    if not key:
        return None
    try:
        return InstanceRef.parse(key)
    except ValueError:
        return None


def _placed(r: PlanRun, where: InstanceRef | None) -> PlanRun:
    """A run placed on `where` (first in its queue), or unplaced."""
    if where is None:
        return r
    return replace(r, at=Assignment.on(where, 0))


def _holds(memory_mib: int, profile: str, w: Waiting) -> bool:
    """Could an instance of this memory and profile ever run `w` (alone): memory and the run's allowed profiles."""
    d = w.demand
    return d.memory_mib <= memory_mib and (d.profiles is None or profile in d.profiles)


def _assemble(
    old: Plan,
    sweep: Sweep,
    fleet: Sequence[FleetGpu],
    layouts: Mapping[int, Layout],
    kept: Mapping[str, PlanRun],
    todo: Sequence,
    assigned: Mapping[str, tuple[InstanceRef, int]],
    unplaced_ids: set[str],
    st: RecutSettings,
    dm: DurationModel,
) -> Plan:
    """The grown plan: the earlier instances where kept (their queues first), new ones where re-cut."""
    exists = {InstanceRef(g, pl) for g, lay in layouts.items() for pl in lay}
    runs: dict[str, PlanRun] = {}
    for rid, r in kept.items():  # a finished run whose instance was re-cut keeps only where it ran
        runs[rid] = r if r.ref is not None and r.ref in exists else replace(r, at=None)
    queues: dict[InstanceRef, list[str]] = {ref: [] for ref in exists}
    for i in old.instances:
        if i.ref in exists:
            queues[i.ref] = [rid for rid in i.runs if rid in runs and runs[rid].at is not None]
    listed = {rid for q in queues.values() for rid in q}
    for rid, r in runs.items():  # a live run the earlier plan did not list: first on its instance
        if r.ref is not None and rid not in listed:
            queues[r.ref].insert(0, rid)
    base = {ref: 1 + max((runs[rid].wave or 0 for rid in q), default=-1) for ref, q in queues.items()}
    new: dict[str, PlanRun] = {}
    for r in todo:
        if r.id in assigned:
            ref, k = assigned[r.id]
            new[r.id] = PlanRun.of(r.core(), Assignment.on(ref, base[ref] + k))
        else:
            new[r.id] = PlanRun.of(r.core())
    pos = {r.id: n for n, r in enumerate(todo)}
    for rid in sorted(assigned, key=lambda x: (assigned[x][1], pos[x])):
        queues[assigned[rid][0]].append(rid)
    models = {g.index: g.model for g in fleet}
    old_inst = {i.ref: i for i in old.instances}
    instances: list[PlanInstance] = []
    for g in sorted(layouts):
        order = [i.ref for i in old.instances if i.gpu == g and i.ref in exists]
        order += [InstanceRef(g, pl) for pl in layouts[g] if InstanceRef(g, pl) not in old_inst]
        for ref in order:
            cap = slot_of(GpuNow(g, models[g]), ref.placement, st.compute_basis)
            prev = old_inst.get(ref)
            instances.append(
                PlanInstance(
                    g, ref.placement.profile, ref.placement.start, cap.memory_mib, prev.compute if prev is not None else cap.capacity, tuple(queues[ref])
                )
            )
    everything = {**runs, **new}
    _estimate(instances, everything, set(new), dm)
    declared = {r.id for r in sweep.runs}
    order_ids = [r.id for r in sweep.runs] + [r.id for r in old.runs if r.id not in declared]
    used: dict[str, set[str]] = {}
    for i in instances:
        used.setdefault(models[i.gpu].key, set()).add(i.profile)
    summaries = {key: model_summary(m, sorted(used.get(key, set()))) for key, m in sorted({g.model.key: g.model for g in fleet}.items())}
    return Plan(
        name=sweep.name,
        sweep_file=old.sweep_file if sweep.path is None else os.path.relpath(sweep.path),
        sweep_sha256=sweep.sha256,
        fleet=list(old.fleet),
        instances=instances,
        runs=[everything[rid] for rid in order_ids if rid in everything],
        unplaced=[
            Unplaced(rid, everything[rid].memory_mib, "fits no instance of the layout, and no idle GPU can be re-cut for it") for rid in sorted(unplaced_ids)
        ],
        solver=old.solver,
        duration_model=dm,
        launch=sweep.launch,
        models=summaries,
    )


def _estimate(instances: Sequence[PlanInstance], runs: dict[str, PlanRun], new: set[str], dm: DurationModel) -> None:
    """The new runs' estimated start and end: the plan played forward, each instance's queue in order
    (as `simulate` plays it, without lending), when every placed run has a duration."""
    placed = [runs[rid] for i in instances for rid in i.runs]
    if not placed or any(not r.duration_s for r in placed):
        return
    slots = [Slot(i.key, i.memory_mib, i.compute or 1.0, str(i.gpu)) for i in instances]
    res = replay([r.demand() for r in placed], slots, {i.key: list(i.runs) for i in instances}, interference=dm.interference)
    for rid in new:
        at = runs[rid].at
        if rid in res.start_s and at is not None:
            runs[rid] = replace(runs[rid], at=replace(at, est_start_s=res.start_s[rid], est_end_s=res.end_s[rid]))


def _say(
    fresh: int,
    assigned: Mapping[str, tuple[InstanceRef, int]],
    unplaced: set[str],
    recut: Mapping[int, tuple[Layout, Layout]],
    added: Mapping[int, tuple[Layout, Layout]],
    live: Mapping[InstanceRef, list[Demand]],
    dropped: Sequence[str],
    held: frozenset[InstanceRef] = frozenset(),
) -> list[str]:
    """What was decided, in words: where the runs to start go, which GPUs were re-cut and why."""
    out: list[str] = []
    if assigned:
        on = Counter(ref for ref, _ in assigned.values())
        refs = sorted(on, key=lambda x: (x.gpu, x.placement.start, x.placement.profile))
        where = [f"the {'held' if ref in held else 'busy' if ref in live else 'idle'} {ref.placement} of GPU {ref.gpu}" for ref in refs]
        text = ", ".join(where[:3]) + (f" and {len(where) - 3} more instance(s)" if len(where) > 3 else "")
        again = len(assigned) - fresh
        what = ", ".join(x for x in (_n(fresh, "new run"), _n(again, "unfinished run")) if x)
        how = [f"re-cut only GPU(s) {_gpus(recut)}" if recut else "", f"instances added on idle GPU(s) {_gpus(added)}, none destroyed" if added else ""]
        out.append(f"{what} to start on {text}; " + ("; ".join(x for x in how if x) or "no re-cut"))
    for g, (before, after) in sorted(recut.items()):
        out.append(f"GPU {g} (every instance idle) re-cut from {_lay(before)} to {_lay(after)}: a run to start fits no instance of the layout")
    for g, (before, after) in sorted(added.items()):
        out.append(
            f"GPU {g} (every instance idle): {_lay(tuple(p for p in after if p not in before))} added in its unused "
            "slices, none destroyed: more runs start at once than its instances take"
        )
    if unplaced:
        out.append(
            f"{len(unplaced)} run(s) fit no instance and no idle GPU can be re-cut for them: unplaced "
            f"({', '.join(sorted(unplaced)[:5])}); run again when the GPUs are idle"
        )
    if dropped:
        out.append(
            f"{len(dropped)} run(s) no longer in the sweep and never finished are dropped: {', '.join(dropped[:5])}" + (", ..." if len(dropped) > 5 else "")
        )
    return out


def _gpus(gpus: Mapping[int, object]) -> str:
    return ", ".join(map(str, sorted(gpus)))


def _n(n: int, what: str) -> str:
    return "" if not n else f"{n} {what}" + ("s" if n > 1 else "")


def _lay(lay: Layout) -> str:
    return " + ".join(str(p) for p in lay) or "no instance"
