"""The planning problem, aggregated: instance types, every usable layout per GPU model (as profile
multisets, dominated ones dropped), and run classes (runs the planner cannot tell apart).

GPUs of one model are interchangeable, so the models choose *how many* GPUs take each layout;
runs with the same memory, duration, compute, sharing cap and allowed profiles form one class.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from migbench.catalog import GpuModel, Profile
from migbench.duration import Demand, instance_capacity
from migbench.duration.model import ComputeBasis
from migbench.planner.budget import ProgressFn
from migbench.planner.fleet import FleetGpu
from migbench.types import InstanceRef, Objective, Placement
from migbench.units import format_mib

SCALE = 1000  # fixed-point scale for the relaxation's fractional coefficients
MAX_PATTERNS = 20000  # beyond this many instance patterns, fall back to a restricted set
MAX_POINTS = 24  # time-point cuts use at most this many points
LAZY_ROUNDS = 3  # rounds of adding violated time-point cuts to a relaxation
LAZY_PER_TYPE = 4  # cuts added per instance type and round
LAZY_MAX_PAIRS = 1000  # above this many (run class, instance type) pairs only the fixed cuts are used


@dataclass(frozen=True)
class SolveOptions:
    """The planner's settings. `time_limit_s` is seconds of wall time for the whole command, counted
    from `started` (a `time.monotonic()` reading; default: when `solve` starts): the planner works to
    a deterministic budget derived from it (or `work_s` reference seconds where given) and stops
    hard at it (`migbench.planner.budget`).
    `progress` is called with a `Progress` as the search advances (never in the plan's way)."""

    time_limit_s: float = 10.0
    work_s: float | None = None  # the deterministic work budget; None: derived from the time limit
    objective: Objective = Objective.AUTO
    allow_unplaced: bool = False
    workers: int = 1
    interference: float = 0.0
    compute_basis: ComputeBasis = ComputeBasis.SM
    started: float | None = None
    progress: ProgressFn | None = None
    most_compute: bool = True  # runs at once: then the most compute for the runs, then the fewest instances


@dataclass(frozen=True)
class InstanceType:
    model: str
    profile: Profile
    capacity: float  # fraction of the whole GPU's compute

    @property
    def key(self) -> str:
        return f"{self.model}/{self.profile.name}"

    @property
    def memory_mib(self) -> int:
        return int(self.profile.memory_mib or 0)


@dataclass
class RunClass:
    memory_mib: int
    duration_s: float | None
    compute: float
    cap: int
    types: tuple[int, ...]  # indices into the instance-type list
    runs: list[str]  # run ids, in sweep order

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class Assigned:
    gpu: int
    placement: Placement
    wave: int
    start_s: float | None
    end_s: float | None


@dataclass
class Solution:
    layouts: dict[int, tuple[Placement, ...]]
    assigned: dict[str, Assigned]
    unplaced: dict[str, str]  # run id -> reason
    status: str
    objective_name: str  # runs_at_once | makespan_s
    objective: float
    bound: float
    gap: float
    seconds: float
    runs_at_once: int
    makespan_s: float | None
    notes: list[str] = field(default_factory=list)
    capacity: dict[InstanceRef, float] = field(default_factory=dict)  # each instance's compute share


# ---------------------------------------------------------------------------------------------


def _usable_profiles(model: GpuModel, runs: Sequence[Demand]) -> list[Profile]:
    wanted_media = {p for r in runs for p in (r.profiles or ()) if "+" in p}
    return [p for p in model.profiles if p.memory_mib and (not p.media or p.name in wanted_media)]


@dataclass
class PlanningProblem:
    fleet: list[FleetGpu]
    types: list[InstanceType]
    classes: list[RunClass]
    # per model: list of (multiset as {profile: count}, canonical layout)
    layouts: dict[str, list[tuple[dict[str, int], tuple[Placement, ...]]]]
    gpus_of: dict[str, list[int]]
    type_index: dict[tuple[str, str], int]
    runs: dict[str, Demand]


def build_problem(
    runs: Sequence[Demand], fleet: Sequence[FleetGpu], opts: SolveOptions, mode: Objective = Objective.MAKESPAN
) -> tuple[PlanningProblem, dict[str, str], list[str]]:
    """Instance types, layouts and run classes. For the runs-at-once objective only memory, sharing
    cap and allowed instance types matter, so runs differing in duration or compute share a class."""
    notes: list[str] = []
    models: dict[str, GpuModel] = {}
    gpus_of: dict[str, list[int]] = defaultdict(list)
    for g in sorted(fleet, key=lambda g: g.index):
        models.setdefault(g.model.key, g.model)
        gpus_of[g.model.key].append(g.index)
    types: list[InstanceType] = []
    layouts: dict[str, list[tuple[dict[str, int], tuple[Placement, ...]]]] = {}
    for key in sorted(models):
        model = models[key]
        usable = _usable_profiles(model, runs)
        missing = [p.name for p in model.profiles if not p.memory_mib]
        if missing:
            notes.append(
                f"{key}: the catalogue has no memory size for {', '.join(missing)}; those profiles are not planned (plan on the host so NVML supplies them)"
            )
        for p in sorted(usable, key=lambda p: (p.memory_mib, p.compute_slices, p.name)):
            types.append(InstanceType(key, p, instance_capacity(model, p, opts.compute_basis)))
        layouts[key] = [(dict(ms), lay) for ms, lay in _model_layouts(model, tuple(p.name for p in usable))]
    type_index = {(t.model, t.profile.name): i for i, t in enumerate(types)}

    unplaced: dict[str, str] = {}
    by_key: dict[tuple, RunClass] = {}
    largest = max(types, key=lambda t: (t.memory_mib, t.key)) if types else None
    fits: dict[tuple, tuple[int, ...]] = {}  # (memory, allowed profiles) -> instance types: once per kind of run
    for r in runs:
        fk = (r.memory_mib, r.profiles)
        fit = fits.get(fk)
        if fit is None:
            fit = fits[fk] = tuple(i for i, t in enumerate(types) if r.memory_mib <= t.memory_mib and (r.profiles is None or t.profile.name in r.profiles))
        if not fit:
            if largest is None:
                unplaced[r.id] = "the fleet has no usable MIG profile"
            elif r.profiles is not None and r.memory_mib <= largest.memory_mib:
                unplaced[r.id] = f"needs {format_mib(r.memory_mib)} on one of {', '.join(r.profiles)}, and no such instance in the fleet is that large"
            else:
                unplaced[r.id] = (
                    f"needs {format_mib(r.memory_mib)} ({r.memory_mib} MiB); the largest instance in the fleet "
                    f"is {largest.profile.name} on {largest.model} with {format_mib(largest.memory_mib)} "
                    f"({largest.memory_mib} MiB)"
                )
            continue
        dur = float(r.duration_s) if r.duration_s else None
        if mode is Objective.THROUGHPUT:
            dur, comp = None, 1.0
        else:
            comp = float(r.compute)
        k = (r.memory_mib, dur, comp, int(r.max_runs_per_instance), fit)
        if k not in by_key:
            by_key[k] = RunClass(r.memory_mib, dur, comp, int(r.max_runs_per_instance), fit, [])
        by_key[k].runs.append(r.id)
    classes = sorted(by_key.values(), key=lambda c: (-(c.duration_s or 0), -c.memory_mib, c.runs[0]))
    prob = PlanningProblem(list(fleet), types, classes, layouts, dict(gpus_of), type_index, {r.id: r for r in runs})
    return prob, unplaced, notes


@functools.lru_cache(maxsize=64)
def _model_layouts(model: GpuModel, names: tuple[str, ...]) -> tuple[tuple[tuple, tuple[Placement, ...]], ...]:
    """A model's maximal layouts of these profiles, one per profile multiset, dominated ones
    dropped, in placement order (cached: enumerating them is the slow part of building a problem)."""
    seen: dict[tuple, tuple[Placement, ...]] = {}
    for lay in model.layouts(list(names)):
        ms = tuple(sorted(_count(lay).items()))
        if ms not in seen:
            seen[ms] = lay
    kept = _undominated(model, seen)
    return tuple(sorted(kept.items(), key=lambda kv: _layout_sort(kv[1])))


def _undominated(model: GpuModel, seen: dict[tuple, tuple[Placement, ...]]) -> dict[tuple, tuple[Placement, ...]]:
    """Drop layouts another layout beats instance for instance: the same number of instances of
    each compute size, each with at least as much memory (e.g. 1g.20gb@6 beats 1g.10gb@6)."""

    def sig(ms: tuple) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for name, n in ms:
            p = model.profile(name)
            out.setdefault(p.compute_slices, []).extend([int(p.memory_mib or 0)] * n)
        return {c: sorted(v) for c, v in out.items()}

    sigs = {ms: sig(ms) for ms in seen}

    def beats(b: dict[int, list[int]], a: dict[int, list[int]]) -> bool:
        if set(a) != set(b) or any(len(a[c]) != len(b[c]) for c in a):
            return False
        return all(x >= y for c in a for x, y in zip(b[c], a[c])) and a != b

    return {ms: lay for ms, lay in seen.items() if not any(beats(sigs[o], sigs[ms]) for o in seen if o != ms)}


def _count(lay: Sequence[Placement]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in lay:
        out[p.profile] += 1
    return dict(out)


def _layout_sort(lay: Sequence[Placement]) -> list[tuple[int, str]]:
    return [(p.start, p.profile) for p in lay]


def add_layout_vars(m: cp_model.CpModel, prob: PlanningProblem) -> tuple[dict[str, list[Any]], dict[int, Any]]:
    x: dict[str, list[Any]] = {}
    n_inst: dict[int, Any] = {}
    for key, lays in prob.layouts.items():
        g = len(prob.gpus_of[key])
        x[key] = [m.new_int_var(0, g, f"x[{key},{i}]") for i in range(len(lays))]
        m.add(sum(x[key]) == g)
    for ti, t in enumerate(prob.types):
        lays = prob.layouts[t.model]
        terms = [lays[i][0].get(t.profile.name, 0) * x[t.model][i] for i in range(len(lays))]
        n_inst[ti] = sum(terms)
    return x, n_inst
