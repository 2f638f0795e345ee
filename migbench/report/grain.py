"""The grain lever: the sweep planned at every partition grain the fleet allows.

A *grain* is the smallest instance a layout may use, in compute slices: at grain 7 every GPU of an
A100 is one 7g instance; at grain 3 the planner may also cut 4g and 3g instances; at grain 1 it may
use every profile, which is what `migbench plan` does. Each grain keeps every larger profile, so
every run that fits the fleet fits at every grain, and a finer grain can only add options. The
planner itself (`planner.solve`, the same objective and budget) plans each grain, on the fleet's
models with the smaller profiles taken out, and `forecast.simulate` plays each plan forward under
the duration model: instances -> runs at once, utilisation (busy compute over available compute, so
a coarse grain with light runs scores low), occupancy (busy slices), makespan. The finest grain is the
chosen plan (the report uses the plan file itself there).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from migbench.catalog import GpuModel, default_catalog
from migbench.duration import Demand, DurationModel
from migbench.forecast.simulate import SimReport, simulate_solution
from migbench.plan import Plan
from migbench.planner import FleetGpu, SolveOptions, solve
from migbench.types import Objective


class GrainPointDoc(TypedDict):
    """One grain of `report --grain --json` (`GrainPoint.to_dict`): `layout` by GPU index (as text)."""

    grain: int
    label: str
    profiles: dict[str, list[str]]  # model -> profiles allowed at this grain
    instances: int
    layout: dict[str, list[str]]
    runs_at_once: int
    utilisation: float | None
    occupancy: float | None
    makespan_s: float | None
    unplaced: int
    status: str
    seconds: float
    chosen: bool


class GrainLeverDoc(TypedDict):
    """`report --grain --json` (`GrainLever.to_dict`), less the sweep's name the command adds."""

    gpus: int
    timed: bool
    grains: list[GrainPointDoc]
    notes: list[str]


@dataclass
class GrainPoint:
    grain: int  # the smallest instance allowed, in compute slices
    label: str
    profiles: dict[str, list[str]]  # model -> profiles allowed at this grain
    instances: int
    per_gpu: dict[int, list[str]]  # GPU -> its layout as profile@start (the first GPU of each model)
    runs_at_once: int
    utilisation: float | None  # busy compute / available compute
    makespan_s: float | None
    unplaced: int
    status: str
    seconds: float
    chosen: bool = False
    occupancy: float | None = None  # busy slice-hours / available slice-hours
    from_plan: bool = False  # the point is the plan file itself, not a re-plan

    def to_dict(self) -> GrainPointDoc:
        return {
            "grain": self.grain,
            "label": self.label,
            "profiles": self.profiles,
            "instances": self.instances,
            "layout": {str(g): lay for g, lay in self.per_gpu.items()},
            "runs_at_once": self.runs_at_once,
            "utilisation": None if self.utilisation is None else round(self.utilisation, 4),
            "occupancy": None if self.occupancy is None else round(self.occupancy, 4),
            "makespan_s": None if self.makespan_s is None else round(self.makespan_s, 3),
            "unplaced": self.unplaced,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "chosen": self.chosen,
        }


@dataclass
class GrainLever:
    points: list[GrainPoint]
    timed: bool  # every run has a duration (else no utilisation or makespan)
    gpus: int
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # profile -> memory slices (to draw the layouts)
    memory_slices: dict[int, int] = field(default_factory=dict)  # GPU of `per_gpu` -> its memory slices

    def to_dict(self) -> GrainLeverDoc:
        return {"gpus": self.gpus, "timed": self.timed, "grains": [p.to_dict() for p in self.points], "notes": self.notes}


def grains(fleet: Sequence[FleetGpu]) -> list[int]:
    """The fleet's grains, coarse to fine: every compute size of a plain profile with a known memory."""
    sizes = {p.compute_slices for g in fleet for p in g.model.plain_profiles() if p.memory_mib}
    return sorted(sizes, reverse=True)


def _allowed(model: GpuModel, grain: int) -> list[str]:
    plain = [p for p in model.plain_profiles() if p.memory_mib]
    top = max((p.compute_slices for p in plain), default=0)
    return [p.name for p in plain if p.compute_slices >= min(grain, top)]


def at_grain(fleet: Sequence[FleetGpu], grain: int) -> list[FleetGpu]:
    """The fleet with every profile smaller than `grain` compute slices taken out of its models
    (a model whose largest profile is smaller keeps its largest)."""
    cache: dict[str, GpuModel] = {}
    out = []
    for g in fleet:
        m = cache.get(g.model.key)
        if m is None:
            keep = set(_allowed(g.model, grain))
            m = dataclasses.replace(g.model, profiles=tuple(p for p in g.model.profiles if p.name in keep))
            cache[g.model.key] = m
        out.append(FleetGpu(g.index, m))
    return out


def _label(grain: int, finest: int, coarsest: int) -> str:
    if grain == coarsest:
        return f"{grain}g (coarsest)"
    return f"{grain}g and up" + (" (finest)" if grain == finest else "")


def _first_gpus(fleet: Sequence[FleetGpu]) -> list[int]:
    seen: dict[str, int] = {}
    for g in fleet:
        seen.setdefault(g.model.key, g.index)
    return sorted(seen.values())


def grain_lever(
    demands: Sequence[Demand],
    fleet: Sequence[FleetGpu],
    dm: DurationModel,
    *,
    time_limit_s: float = 2.0,
    objective: Objective = Objective.AUTO,
    plan: Plan | None = None,
    plan_sim: SimReport | None = None,
    say: Callable[[str], None] | None = None,
) -> GrainLever:
    """Plan `demands` on `fleet` at every grain. With `plan` (and its simulation `plan_sim`), the
    finest grain is that plan rather than a re-plan."""
    timed = bool(demands) and all(d.duration_s for d in demands)
    sizes = grains(fleet)
    firsts = _first_gpus(fleet)
    points: list[GrainPoint] = []
    notes: list[str] = []
    opts = SolveOptions(time_limit_s=time_limit_s, objective=objective, allow_unplaced=True, interference=dm.interference, compute_basis=dm.compute_basis)
    for grain in sizes:
        fl = at_grain(fleet, grain)
        profiles = {g.model.key: [p.name for p in g.model.plain_profiles()] for g in fl}
        label = _label(grain, sizes[-1], sizes[0])
        if plan is not None and grain == sizes[-1]:
            points.append(_plan_point(plan, plan_sim, grain, label, profiles, firsts))
            continue
        if say:
            say(f"planning at grain {label} ...")
        t0 = time.perf_counter()
        sol = solve(demands, fl, opts)
        rep = simulate_solution(sol, fl, demands, dm, label=label) if timed and sol.assigned else None
        per_gpu = {g: [str(p) for p in sol.layouts.get(g, ())] for g in firsts}
        points.append(
            GrainPoint(
                grain,
                label,
                profiles,
                sum(len(lay) for lay in sol.layouts.values()),
                per_gpu,
                sol.runs_at_once,
                rep.utilisation if rep else None,
                rep.makespan_s if rep else None,
                len(sol.unplaced),
                sol.status,
                time.perf_counter() - t0,
                chosen=plan is None and grain == sizes[-1],
                occupancy=rep.occupancy if rep else None,
            )
        )
    if not timed:
        notes.append("some runs have no duration: each grain shows runs at once only (no utilisation or makespan)")
    if any(p.unplaced for p in points):
        notes.append("a run whose `profiles:` allow only smaller instances cannot run at a coarse grain (see unplaced)")
    mem_slices = {p.name: p.memory_slices for g in fleet for p in g.model.profiles}
    return GrainLever(points, timed, len(fleet), notes, mem_slices, {g.index: g.model.memory_slices for g in fleet if g.index in firsts})


def _plan_point(plan: Plan, sim: SimReport | None, grain: int, label: str, profiles: dict[str, list[str]], firsts: list[int]) -> GrainPoint:
    per_gpu = {g: [str(p) for p in plan.layout(g)] for g in firsts}
    return GrainPoint(
        grain,
        label + ", this plan",
        profiles,
        len(plan.instances),
        per_gpu,
        plan.solver.runs_at_once,
        sim.utilisation if sim else None,
        sim.makespan_s if sim else None,
        len(plan.unplaced),
        plan.solver.status,
        float(plan.solver.seconds or 0.0),
        chosen=True,
        occupancy=sim.occupancy if sim else None,
        from_plan=True,
    )


def plan_fleet(plan: Plan) -> list[FleetGpu]:
    """The fleet a plan file is for, with the catalogue's models."""
    cat = default_catalog()
    return [FleetGpu(g.gpu, cat.model(g.model, g.driver)) for g in plan.fleet]


def plan_objective(plan: Plan) -> Objective:
    return Objective.MAKESPAN if plan.solver.objective_name == "makespan_s" else Objective.THROUGHPUT


def lever_of_plan(plan: Plan, sim: SimReport | None, *, time_limit_s: float = 2.0, say: Callable[[str], None] | None = None) -> GrainLever:
    """The grain lever of a plan file's runs and fleet; the finest grain is the plan itself."""
    demands = [r.demand() for r in plan.runs if r.gpu is not None]
    return grain_lever(
        demands, plan_fleet(plan), plan.duration_model, time_limit_s=time_limit_s, objective=plan_objective(plan), plan=plan, plan_sim=sim, say=say
    )
