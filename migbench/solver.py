"""Choose a MIG layout for every GPU and an assignment of runs to instances (OR-Tools CP-SAT).

Exact about placements: a GPU's layout is one of the legal layouts the catalogue enumerates from the
profiles' legal starts (`GpuModel.layouts()`), so every instance is a `profile@start`, never a bare
count. Fast at fleet scale because the model never looks at individual GPUs or runs:

- GPUs of one model are interchangeable, so the model chooses *how many* GPUs take each layout
  (`x[model, layout]`), over the layouts' distinct profile multisets (38 for an 8-slot GPU);
- runs with the same memory, duration, compute, sharing cap and allowed profiles form one class;
- an instance's contents are described by *patterns*: maximal multisets of run classes that fit
  its memory and its sharing cap.

Two objectives:

1. **runs at once** (no durations): maximise the runs that start immediately; CP-SAT proves the
   bound. Runs that do not fit wait in queues on the same layout, in waves.
2. **makespan** (every run has a duration): the smallest T for which an aggregated relaxation is
   feasible is found by bisection with CP-SAT; its layouts are turned into concrete schedules by
   list scheduling under the duration model (`migbench.engine`), and the best is kept. The
   relaxation's infeasibility proofs give the lower bound, so the reported gap is honest: it
   compares the plan's estimated makespan with a bound no fixed-layout plan can beat.

Deterministic: the same input gives the same plan (CP-SAT runs with deterministic time limits).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ortools.sat.python import cp_model

from migbench.catalog import GpuModel, Placement, Profile
from migbench.engine import Job, Result, Slot, list_schedule, replay
from migbench.errors import MigbenchError
from migbench.units import format_mib

SCALE = 1000  # fixed-point scale for the relaxation's fractional coefficients
MAX_PATTERNS = 20000  # beyond this many instance patterns, fall back to a restricted set
LARGE = 2000  # above this many runs the makespan search tries fewer schedule variants per layout
HUGE = 5000  # above this many runs the local search after list scheduling is skipped
MAX_POINTS = 24  # time-point cuts use at most this many points
LAZY_ROUNDS = 3  # rounds of adding violated time-point cuts to a relaxation
LAZY_PER_TYPE = 4  # cuts added per instance type and round
LAZY_MAX_PAIRS = 1000  # above this many (run class, instance type) pairs only the fixed cuts are used
IMPROVE_SOURCES = 8  # the local search moves runs off this many latest-finishing instances


class RunLike(Protocol):
    id: str
    memory_mib: int
    duration_s: float | None
    compute: float
    max_runs_per_instance: int
    profiles: tuple[str, ...] | None


@dataclass(frozen=True)
class FleetGpu:
    index: int
    model: GpuModel


@dataclass(frozen=True)
class SolveOptions:
    time_limit_s: float = 10.0
    objective: str = "auto"  # auto | throughput | makespan
    allow_unplaced: bool = False
    workers: int = 1
    interference: float = 0.0
    compute_basis: str = "sm"  # sm | slices


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
    capacity: dict[str, float] = field(default_factory=dict)  # "gpu:profile@start" -> compute share


# ---------------------------------------------------------------------------------------------


def instance_capacity(model: GpuModel, profile: Profile, basis: str = "sm") -> float:
    """An instance's share of the GPU's compute: SMs / the full profile's SMs (or slices / total)."""
    if basis == "sm":
        full = max((p.engines.sm or 0) for p in model.profiles)
        if profile.engines.sm and full:
            return profile.engines.sm / full
    return profile.compute_slices / model.compute_slices


def _usable_profiles(model: GpuModel, runs: Sequence[RunLike]) -> list[Profile]:
    wanted_media = {p for r in runs for p in (r.profiles or ()) if "+" in p}
    return [p for p in model.profiles if p.memory_mib and (not p.media or p.name in wanted_media)]


@dataclass
class _Problem:
    fleet: list[FleetGpu]
    types: list[InstanceType]
    classes: list[RunClass]
    # per model: list of (multiset as {profile: count}, canonical layout)
    layouts: dict[str, list[tuple[dict[str, int], tuple[Placement, ...]]]]
    gpus_of: dict[str, list[int]]
    type_index: dict[tuple[str, str], int]
    runs: dict[str, RunLike]


def _build(
    runs: Sequence[RunLike], fleet: Sequence[FleetGpu], opts: SolveOptions, mode: str = "makespan"
) -> tuple[_Problem, dict[str, str], list[str]]:
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
                f"{key}: the catalogue has no memory size for {', '.join(missing)}; those profiles are "
                "not planned (plan on the host so NVML supplies them)"
            )
        for p in sorted(usable, key=lambda p: (p.memory_mib, p.compute_slices, p.name)):
            types.append(InstanceType(key, p, instance_capacity(model, p, opts.compute_basis)))
        seen: dict[tuple, tuple[Placement, ...]] = {}
        for lay in model.layouts([p.name for p in usable]):
            ms = tuple(sorted(_count(lay).items()))
            if ms not in seen:
                seen[ms] = lay
        kept = _undominated(model, seen)
        layouts[key] = [(dict(ms), lay) for ms, lay in sorted(kept.items(), key=lambda kv: _layout_sort(kv[1]))]
    type_index = {(t.model, t.profile.name): i for i, t in enumerate(types)}

    unplaced: dict[str, str] = {}
    by_key: dict[tuple, RunClass] = {}
    largest = max(types, key=lambda t: (t.memory_mib, t.key)) if types else None
    for r in runs:
        fit = tuple(
            i
            for i, t in enumerate(types)
            if r.memory_mib <= t.memory_mib and (r.profiles is None or t.profile.name in r.profiles)
        )
        if not fit:
            if largest is None:
                unplaced[r.id] = "the fleet has no usable MIG profile"
            elif r.profiles is not None and r.memory_mib <= largest.memory_mib:
                unplaced[r.id] = (
                    f"needs {format_mib(r.memory_mib)} on one of {', '.join(r.profiles)}, and no such "
                    "instance in the fleet is that large"
                )
            else:
                unplaced[r.id] = (
                    f"needs {format_mib(r.memory_mib)} ({r.memory_mib} MiB); the largest instance in the fleet "
                    f"is {largest.profile.name} on {largest.model} with {format_mib(largest.memory_mib)} "
                    f"({largest.memory_mib} MiB)"
                )
            continue
        dur = float(r.duration_s) if r.duration_s else None
        if mode == "throughput":
            dur, comp = None, 1.0
        else:
            comp = float(r.compute)
        k = (r.memory_mib, dur, comp, int(r.max_runs_per_instance), fit)
        if k not in by_key:
            by_key[k] = RunClass(r.memory_mib, dur, comp, int(r.max_runs_per_instance), fit, [])
        by_key[k].runs.append(r.id)
    classes = sorted(by_key.values(), key=lambda c: (-(c.duration_s or 0), -c.memory_mib, c.runs[0]))
    prob = _Problem(list(fleet), types, classes, layouts, dict(gpus_of), type_index, {r.id: r for r in runs})
    return prob, unplaced, notes


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


# ---------------------------------------------------------------------------------------------
# Patterns: maximal sets of run classes that can share one instance
# ---------------------------------------------------------------------------------------------


def _patterns(prob: _Problem, ti: int, limit: int) -> tuple[list[tuple[tuple[int, int], ...]], bool]:
    """Maximal patterns for instance type `ti` as tuples of (class index, count). Returns
    (patterns, complete): complete is False when the enumeration hit `limit`."""
    t = prob.types[ti]
    cls = [ci for ci, c in enumerate(prob.classes) if ti in c.types]
    cls.sort(key=lambda ci: (-prob.classes[ci].memory_mib, ci))
    mem = t.memory_mib
    out: list[tuple[tuple[int, int], ...]] = []
    chosen: list[tuple[int, int]] = []
    complete = True

    def can_add(ci: int, used: int, count: int, mincap: int, cnt: dict[int, int]) -> bool:
        c = prob.classes[ci]
        if cnt.get(ci, 0) >= c.n:
            return False
        if used + c.memory_mib > mem:
            return False
        return count + 1 <= min(mincap, c.cap)

    def rec(i: int, used: int, count: int, mincap: int) -> None:
        nonlocal complete
        if len(out) >= limit:
            complete = False
            return
        if i == len(cls):
            if not chosen:
                return
            cnt = dict(chosen)
            if any(can_add(ci, used, count, mincap, cnt) for ci in cls):
                return
            out.append(tuple(chosen))
            return
        ci = cls[i]
        c = prob.classes[ci]
        room_cap = min(mincap, c.cap) - count
        hi = min(c.n, (mem - used) // c.memory_mib if c.memory_mib else c.n, max(room_cap, 0))
        for k in range(hi, -1, -1):
            if k:
                chosen.append((ci, k))
                rec(i + 1, used + k * c.memory_mib, count + k, min(mincap, c.cap))
                chosen.pop()
            else:
                rec(i + 1, used, count, mincap)

    rec(0, 0, 0, 10**9)
    return out, complete


def _greedy_patterns(prob: _Problem, ti: int) -> list[tuple[tuple[int, int], ...]]:
    """A restricted pattern set when full enumeration is too large: for every class, fill an
    instance with it first, then first-fit the other classes by decreasing memory."""
    t = prob.types[ti]
    cls = [ci for ci, c in enumerate(prob.classes) if ti in c.types]
    cls.sort(key=lambda ci: (-prob.classes[ci].memory_mib, ci))
    out = set()
    for first in cls:
        cnt: dict[int, int] = {}
        used, count, mincap = 0, 0, 10**9
        for ci in [first] + cls:
            c = prob.classes[ci]
            while (
                cnt.get(ci, 0) < c.n
                and used + c.memory_mib <= t.memory_mib
                and count + 1 <= min(mincap, c.cap)
            ):
                cnt[ci] = cnt.get(ci, 0) + 1
                used += c.memory_mib
                count += 1
                mincap = min(mincap, c.cap)
        out.add(tuple(sorted(cnt.items())))
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# Objective 1: runs at once
# ---------------------------------------------------------------------------------------------


def _add_layout_vars(m: cp_model.CpModel, prob: _Problem) -> tuple[dict[str, list[Any]], dict[int, Any]]:
    x: dict[str, list[Any]] = {}
    n_inst: dict[int, Any] = {}
    for key, lays in prob.layouts.items():
        g = len(prob.gpus_of[key])
        x[key] = [m.NewIntVar(0, g, f"x[{key},{i}]") for i in range(len(lays))]
        m.Add(sum(x[key]) == g)
    for ti, t in enumerate(prob.types):
        lays = prob.layouts[t.model]
        terms = [lays[i][0].get(t.profile.name, 0) * x[t.model][i] for i in range(len(lays))]
        n_inst[ti] = sum(terms)
    return x, n_inst


def _solver(time_limit: float, workers: int) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    s.parameters.max_deterministic_time = max(0.05, time_limit)
    s.parameters.max_time_in_seconds = max(0.1, time_limit * 4)  # hard stop; deterministic limit rules
    s.parameters.num_workers = max(1, workers)
    s.parameters.random_seed = 0
    return s


def _solve_throughput(prob: _Problem, opts: SolveOptions, budget: float) -> tuple[dict, dict, str, float, float, list[str]]:
    """CP-SAT: maximise runs started at once. Returns (layout counts, per-type pattern counts,
    status, objective, bound, notes)."""
    notes: list[str] = []
    m = cp_model.CpModel()
    x, n_inst = _add_layout_vars(m, prob)
    pats: dict[int, list[tuple[tuple[int, int], ...]]] = {}
    complete = True
    total = 0
    for ti in range(len(prob.types)):
        p, ok = _patterns(prob, ti, MAX_PATTERNS - total)
        if not ok:
            complete = False
            p = _greedy_patterns(prob, ti)
        pats[ti] = p
        total += len(p)
    y: dict[tuple[int, int], Any] = {}
    cover: dict[int, list[Any]] = defaultdict(list)
    for ti, plist in pats.items():
        t = prob.types[ti]
        ub = len(prob.gpus_of[t.model]) * t.profile.max_count
        vs = []
        for pi, pat in enumerate(plist):
            v = m.NewIntVar(0, ub, f"y[{ti},{pi}]")
            y[(ti, pi)] = v
            vs.append(v)
            for ci, k in pat:
                cover[ci].append(k * v)
        if vs:
            m.Add(sum(vs) <= n_inst[ti])
    z = []
    for ci, c in enumerate(prob.classes):
        v = m.NewIntVar(0, c.n, f"z[{ci}]")
        m.Add(v <= sum(cover[ci])) if cover[ci] else m.Add(v == 0)
        z.append(v)
        # Runs that wait must still have a home on the layout: one instance that fits them.
        m.Add(sum(n_inst[ti] for ti in c.types) >= 1)
    m.Maximize(sum(z))
    s = _solver(0.8 * budget, opts.workers)
    st = s.Solve(m)
    if st == cp_model.INFEASIBLE:
        raise MigbenchError(
            "no layout of the fleet offers an instance for every run at the same time",
            hint="the runs' profile allow-lists or memory needs cannot all be met on these GPUs; add GPUs or relax `profiles:`",
        )
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise MigbenchError(f"the solver found no plan ({s.StatusName(st)})", hint="raise --time-limit")
    obj = s.ObjectiveValue()
    bound = s.BestObjectiveBound()
    status = "OPTIMAL" if st == cp_model.OPTIMAL else "FEASIBLE"
    if not complete:
        # The restricted pattern set makes CP-SAT's bound a bound of the restricted model only;
        # an honest bound comes from the aggregated relaxation.
        bound = max(obj, _throughput_relaxation_bound(prob, opts, 0.2 * budget))
        status = "OPTIMAL" if bound <= obj + 1e-9 else "FEASIBLE"
        notes.append(
            f"more than {MAX_PATTERNS} sharing patterns: used a restricted set; bound from the "
            "memory/slot relaxation"
        )
    counts = {key: [int(s.Value(v)) for v in vs] for key, vs in x.items()}
    used = {
        ti: [(pats[ti][pi], int(s.Value(y[(ti, pi)]))) for pi in range(len(pats[ti])) if s.Value(y[(ti, pi)])]
        for ti in pats
    }
    return counts, used, status, obj, bound, notes


def _throughput_relaxation_bound(prob: _Problem, opts: SolveOptions, budget: float) -> float:
    m = cp_model.CpModel()
    _, n_inst = _add_layout_vars(m, prob)
    caps = sorted({c.cap for c in prob.classes})
    lcm = 1
    for k in caps:
        lcm = lcm * k // math.gcd(lcm, k)
    r: dict[tuple[int, int], Any] = {}
    for ci, c in enumerate(prob.classes):
        for ti in c.types:
            r[(ci, ti)] = m.NewIntVar(0, c.n, f"r[{ci},{ti}]")
        m.Add(sum(r[(ci, ti)] for ti in c.types) <= c.n)
    for ti, t in enumerate(prob.types):
        terms = [(ci, v) for (ci, tj), v in r.items() if tj == ti]
        if not terms:
            continue
        m.Add(sum(prob.classes[ci].memory_mib * v for ci, v in terms) <= t.memory_mib * n_inst[ti])
        m.Add(sum((lcm // prob.classes[ci].cap) * v for ci, v in terms) <= lcm * n_inst[ti])
    for c in prob.classes:
        m.Add(sum(n_inst[ti] for ti in c.types) >= 1)
    m.Maximize(sum(r.values()))
    s = _solver(budget, opts.workers)
    st = s.Solve(m)
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float(s.BestObjectiveBound())
    return float(sum(c.n for c in prob.classes))


# ---------------------------------------------------------------------------------------------
# Objective 2: makespan
# ---------------------------------------------------------------------------------------------


def _solo(prob: _Problem, c: RunClass, ti: int) -> float:
    t = prob.types[ti]
    return float(c.duration_s or 1.0) * max(1.0, c.compute / t.capacity)


Cut = tuple[int, tuple[tuple[int, int], ...]]  # (K points, ((class index, weight), ...))


def _point_cuts(prob: _Problem, T: float, ti: int, cis: Sequence[int], lazy: bool) -> list[Cut]:
    """Time-point cuts for instance type `ti` in a schedule of length T.

    Put points at every positive multiple of L below T: K = ceil(T/L) - 1 of them. A run of solo
    time a occupies a half-open interval of length >= a inside [0, T), which holds at least
    w = ceil(a/L) - 1 of the points (the worst case starts at 0). At each point an instance hosts
    runs whose 1/cap shares add up to at most 1 and whose memory fits, so over the N instances
        sum n*w/cap <= K*N   and   sum n*w*mem <= K*M*N.
    Weights are rounded down and K up, so every cut holds for any schedule of length T.

    The models always carry the spacings T/2, T/3, T/4 (`lazy=False`). The spacings just below
    a, a/2 and a/3 for every solo time a on the type (where weights jump) are many, so they are
    separated lazily (`lazy=True`): added only when a solution violates them."""
    solos = {ci: _solo(prob, prob.classes[ci], ti) for ci in cis}
    if lazy:
        spacings = {a / div * (1 - 1e-7) for a in set(solos.values()) for div in (1, 2, 3)}
        cands = {(L, math.ceil(T / L + 1e-9) - 1) for L in spacings if 0 < L and T / L <= MAX_POINTS + 1}
    else:
        cands = {(T / (q + 1), q) for q in (1, 2, 3)}  # exactly q points: T/(q+1), ..., qT/(q+1)
    cuts: list[Cut] = []
    seen: set[Cut] = set()
    for L, k in sorted(cands, reverse=True):
        if k < 1:
            continue
        weighted = tuple((ci, w) for ci in cis if (w := min(k, math.ceil(solos[ci] / L - 1e-9) - 1)) >= 1)
        if weighted and (k, weighted) not in seen:
            seen.add((k, weighted))
            cuts.append((k, weighted))
    return cuts


def _lazy_ok(prob: _Problem) -> bool:
    """Separating lazy cuts costs about (class, type) pairs x spacings per round; past
    LAZY_MAX_PAIRS it costs more planning time than its tighter bound is worth."""
    return sum(len(c.types) for c in prob.classes) <= LAZY_MAX_PAIRS


def _violated_cuts(prob: _Problem, T: float, values: dict[int, dict[int, float]], n_inst: dict[int, float]) -> dict[int, list[Cut]]:
    """The lazy time-point cuts that a (relaxed or integer) solution violates, the worst few per
    type. `values[ti][ci]` = runs of class ci on type ti, `n_inst[ti]` = instances of type ti."""
    out: dict[int, list[Cut]] = {}
    for ti, vals in values.items():
        t = prob.types[ti]
        N = n_inst.get(ti, 0.0)
        scored = []
        for cut in _point_cuts(prob, T, ti, sorted(vals), lazy=True):
            k, weighted = cut
            slot = sum(vals[ci] * w / prob.classes[ci].cap for ci, w in weighted)
            mem = sum(vals[ci] * w * prob.classes[ci].memory_mib / t.memory_mib for ci, w in weighted)
            excess = (max(slot, mem) - k * N) / k
            if excess > 1e-6:
                scored.append((-excess, cut))
        scored.sort(key=lambda x: x[0])
        if scored:
            out[ti] = [cut for _, cut in scored[:LAZY_PER_TYPE]]
    return out


def _lp_infeasible(prob: _Problem, T: float) -> bool:
    """True when the linear relaxation of `_makespan_feasible` at time T is infeasible (GLOP), which
    proves that no fixed-layout plan finishes within T. Cheap at any scale; weaker than CP-SAT."""
    return _lp(prob, T)[0]


def _lp(prob: _Problem, T: float) -> tuple[bool, dict[str, list[int]] | None, dict[int, list[Cut]]]:
    """The linear relaxation at T, with lazy time-point cuts separated until none is violated:
    (infeasible?, layout counts rounded from its solution, the lazy cuts it added)."""
    from ortools.linear_solver import pywraplp

    lp = pywraplp.Solver.CreateSolver("GLOP")
    n_inst: dict[int, Any] = {}
    x: dict[str, list[Any]] = {}
    for key, lays in prob.layouts.items():
        g = len(prob.gpus_of[key])
        x[key] = [lp.NumVar(0, g, "") for _ in lays]
        lp.Add(sum(x[key]) == g)
    for ti, t in enumerate(prob.types):
        lays = prob.layouts[t.model]
        n_inst[ti] = sum(lays[i][0].get(t.profile.name, 0) * x[t.model][i] for i in range(len(lays)))
    by_type: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for ci, c in enumerate(prob.classes):
        ok = [ti for ti in c.types if _solo(prob, c, ti) <= T * (1 + 1e-9)]
        if not ok:
            return True, None, {}
        vs = []
        for ti in ok:
            v = lp.NumVar(0, c.n, "")
            lp.Add(v <= c.n * n_inst[ti])
            by_type[ti].append((ci, v))
            vs.append(v)
        lp.Add(sum(vs) == c.n)
    for ti, terms in by_type.items():
        t = prob.types[ti]
        N = n_inst[ti]
        work, memt, slot = [], [], []
        for ci, v in terms:
            c = prob.classes[ci]
            a = _solo(prob, c, ti)
            work.append((float(c.duration_s or 1.0) * c.compute / T) * v)
            memt.append(((c.memory_mib / t.memory_mib) * (a / T)) * v)
            slot.append((a / (c.cap * T)) * v)
        lp.Add(sum(work) <= t.capacity * N)
        lp.Add(sum(memt) <= N)
        lp.Add(sum(slot) <= N)
    var_of = {(ti, ci): v for ti, terms in by_type.items() for ci, v in terms}

    def add_cuts(ti: int, cuts: list[Cut]) -> None:
        t, N = prob.types[ti], n_inst[ti]
        for k, weighted in cuts:
            lp.Add(sum((w / prob.classes[ci].cap) * var_of[(ti, ci)] for ci, w in weighted) <= k * N)
            lp.Add(sum((w * prob.classes[ci].memory_mib / t.memory_mib) * var_of[(ti, ci)] for ci, w in weighted) <= k * N)

    for ti, terms in by_type.items():
        add_cuts(ti, _point_cuts(prob, T, ti, [ci for ci, _ in terms], lazy=False))
    added: dict[int, list[Cut]] = defaultdict(list)
    for rnd in range(LAZY_ROUNDS + 1):
        st = lp.Solve()
        if st == pywraplp.Solver.INFEASIBLE:
            return True, None, dict(added)
        if st not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return False, None, dict(added)
        if rnd == LAZY_ROUNDS or not _lazy_ok(prob):
            break
        values = {ti: {ci: v.solution_value() for ci, v in terms} for ti, terms in by_type.items()}
        x_val = {key: [v.solution_value() for v in vs] for key, vs in x.items()}
        violated = _violated_cuts(prob, T, values, {ti: _instances(prob, ti, x_val) for ti in by_type})
        if not violated:
            break
        for ti, cuts in violated.items():
            add_cuts(ti, cuts)
            added[ti].extend(cuts)
    counts: dict[str, list[int]] = {}
    for key, vs in x.items():
        vals = [v.solution_value() for v in vs]
        g = len(prob.gpus_of[key])
        base = [int(v + 1e-6) for v in vals]
        rest = sorted(range(len(vals)), key=lambda i: (-(vals[i] - base[i]), i))
        for i in rest[: g - sum(base)]:
            base[i] += 1
        counts[key] = base
    return False, counts, dict(added)


def _instances(prob: _Problem, ti: int, x_val: dict[str, list[float]]) -> float:
    """Instances of type ti under layout counts (or their relaxed values) x_val."""
    t = prob.types[ti]
    lays = prob.layouts[t.model]
    return sum(lays[i][0].get(t.profile.name, 0) * v for i, v in enumerate(x_val[t.model]))


def _makespan_feasible(
    prob: _Problem, T: float, opts: SolveOptions, time_limit: float, cuts: dict[int, list[Cut]] | None = None
) -> tuple[str, dict | None, dict | None]:
    """Is there a layout and class->type split whose aggregate load fits in time T?

    Necessary conditions per instance type (all valid for any schedule of length T, so
    INFEASIBLE proves that no plan on a fixed layout finishes within T):
      compute work   sum n*d*u            <= capacity * N * T
      memory-time    sum n*m*solo         <= M * N * T
      sharing slots  sum n*solo/cap       <= N * T
      time points    see `_point_cuts`: at K time points spaced L apart, a run of solo time a
                     is running at ceil(a/L) - 1 of them at least, so
                     sum n*w/cap <= K*N and sum n*w*m <= K*M*N
      and a run only goes where its solo time is <= T.
    Coefficients are rounded down (right-hand sides up) so the model stays a relaxation. `cuts`
    are lazy time-point cuts to start from (the LP's at the same T); one more round is separated
    from CP-SAT's own solution.
    """
    m = cp_model.CpModel()
    x, n_inst = _add_layout_vars(m, prob)
    n: dict[tuple[int, int], Any] = {}
    for ci, c in enumerate(prob.classes):
        ok = [ti for ti in c.types if _solo(prob, c, ti) <= T * (1 + 1e-9)]
        if not ok:
            return "INFEASIBLE", None, None
        for ti in ok:
            n[(ci, ti)] = m.NewIntVar(0, c.n, f"n[{ci},{ti}]")
        m.Add(sum(n[(ci, ti)] for ti in ok) == c.n)
    by_type: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for (ci, ti), v in n.items():
        by_type[ti].append((ci, v))
    for ti, terms in by_type.items():
        t = prob.types[ti]
        N = n_inst[ti]
        for ci, v in terms:
            m.Add(v <= prob.classes[ci].n * N)  # runs only go to a type the layout has
        work, memt, slot = [], [], []
        for ci, v in terms:
            c = prob.classes[ci]
            a = _solo(prob, c, ti)
            d = float(c.duration_s or 1.0)
            work.append(int(math.floor(SCALE * d * c.compute / T)) * v)
            memt.append(int(math.floor(SCALE * (c.memory_mib / t.memory_mib) * (a / T))) * v)
            slot.append(int(math.floor(SCALE * a / (c.cap * T))) * v)
        m.Add(sum(work) <= int(math.ceil(SCALE * t.capacity)) * N)
        m.Add(sum(memt) <= SCALE * N)
        m.Add(sum(slot) <= SCALE * N)

    def add_cuts(ti: int, cuts: list[Cut]) -> None:
        t, N = prob.types[ti], n_inst[ti]
        for k, weighted in cuts:
            m.Add(sum((w * SCALE // prob.classes[ci].cap) * n[(ci, ti)] for ci, w in weighted) <= k * SCALE * N)
            m.Add(
                sum(int(math.floor(w * SCALE * prob.classes[ci].memory_mib / t.memory_mib)) * n[(ci, ti)] for ci, w in weighted)
                <= k * SCALE * N
            )

    for ti, terms in by_type.items():
        add_cuts(ti, _point_cuts(prob, T, ti, [ci for ci, _ in terms], lazy=False) + (cuts or {}).get(ti, []))
    # Prefer, among feasible splits, sending runs to their fastest instance (a mild tie-break).
    m.Minimize(sum(int(round(100 * _solo(prob, prob.classes[ci], ti) / (prob.classes[ci].duration_s or 1.0))) * v for (ci, ti), v in n.items()))
    for rnd in range(2):
        s = _solver(time_limit, opts.workers)
        st = s.Solve(m)
        if st == cp_model.INFEASIBLE:
            return "INFEASIBLE", None, None
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return "UNKNOWN", None, None
        if rnd == 1 or not _lazy_ok(prob):
            break
        values = {ti: {ci: float(s.Value(v)) for ci, v in terms} for ti, terms in by_type.items()}
        violated = _violated_cuts(prob, T, values, {ti: float(s.Value(n_inst[ti])) for ti in by_type})
        if not violated:
            break
        for ti, cuts in violated.items():
            add_cuts(ti, cuts)
    counts = {key: [int(s.Value(v)) for v in vs] for key, vs in x.items()}
    split = {k: int(s.Value(v)) for k, v in n.items() if s.Value(v)}
    return "FEASIBLE", counts, split


# ---------------------------------------------------------------------------------------------
# From aggregate solutions to concrete GPUs, instances and queues
# ---------------------------------------------------------------------------------------------


@dataclass
class _Concrete:
    layouts: dict[int, tuple[Placement, ...]]
    slots: list[Slot]
    slot_type: dict[str, int]
    slot_place: dict[str, tuple[int, Placement]]


def _concretize(prob: _Problem, counts: dict[str, list[int]]) -> _Concrete:
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
            key = f"{gpu}:{pl}"
            slots.append(Slot(key, t.memory_mib, t.capacity, type_key=str(ti)))
            slot_type[key] = ti
            slot_place[key] = (gpu, pl)
    return _Concrete(layouts, slots, slot_type, slot_place)


def _jobs(prob: _Problem, unit: bool) -> dict[str, Job]:
    out = {}
    for c in prob.classes:
        for rid in c.runs:
            r = prob.runs[rid]
            dur = 1.0 if unit or not r.duration_s else float(r.duration_s)
            out[rid] = Job(rid, r.memory_mib, dur, float(r.compute), int(r.max_runs_per_instance))
    return out


def _class_of(prob: _Problem) -> dict[str, int]:
    return {rid: ci for ci, c in enumerate(prob.classes) for rid in c.runs}


def _schedule(
    conc: _Concrete,
    jobs: dict[str, Job],
    order: list[str],
    allowed_types: dict[str, set[int]],
    opts: SolveOptions,
    pinned: dict[str, str] | None = None,
) -> Result:
    def allowed(j: Job, s: Slot) -> bool:
        return conc.slot_type[s.key] in allowed_types[j.id]

    return list_schedule([jobs[r] for r in order], conc.slots, allowed, interference=opts.interference, pinned=pinned)


def _lpt_order(prob: _Problem, jobs: dict[str, Job]) -> list[str]:
    cls = _class_of(prob)

    def key(rid: str) -> tuple:
        c = prob.classes[cls[rid]]
        j = jobs[rid]
        fastest = min(j.duration_s * max(1.0, j.compute / prob.types[ti].capacity) for ti in c.types)
        return (-fastest, -j.memory_mib, -j.compute, rid)

    return sorted(jobs, key=key)


# ---------------------------------------------------------------------------------------------


def solve(runs: Sequence[RunLike], fleet: Sequence[FleetGpu], opts: SolveOptions = SolveOptions()) -> Solution:
    """Plan `runs` on `fleet`. Raises MigbenchError when a run fits nowhere (unless allowed)."""
    t0 = time.perf_counter()
    # The budget is CP-SAT *deterministic* time, never the wall clock, so that the same input gives
    # the same plan on any machine (CP-SAT keeps a wall-clock stop at 4x as a safety net only).
    budget = opts.time_limit_s
    if not fleet:
        raise MigbenchError("the fleet is empty", hint="give --fleet MODEL:COUNT or a `fleet:` in the sweep")
    with_dur = bool(runs) and all(r.duration_s for r in runs)
    mode = opts.objective
    if mode == "auto":
        mode = "makespan" if with_dur else "throughput"
    if mode == "makespan" and not with_dur:
        raise MigbenchError(
            "the makespan objective needs a duration for every run",
            hint="give each group a `duration:` or use --objective throughput",
        )
    prob, unplaced, notes = _build(runs, fleet, opts, mode)
    if unplaced and not opts.allow_unplaced:
        lines = [f"{rid}: {why}" for rid, why in sorted(unplaced.items())]
        raise MigbenchError(
            f"{len(unplaced)} run(s) fit no instance of the fleet:\n  " + "\n  ".join(lines[:20])
            + ("\n  ..." if len(lines) > 20 else ""),
            hint="lower the run's memory, add a larger GPU to the fleet, or pass --allow-unplaced to plan the rest",
        )
    if not prob.classes:
        empty_layouts = {g.index: () for g in fleet}
        return Solution(empty_layouts, {}, unplaced, "OPTIMAL", "runs_at_once", 0, 0, 0.0, time.perf_counter() - t0, 0, None, notes)
    if mode == "throughput":
        sol = _plan_throughput(prob, opts, budget, notes)
    else:
        sol = _plan_makespan(prob, opts, budget, notes)
    sol.unplaced = unplaced
    sol.seconds = time.perf_counter() - t0
    return sol


def _finish(prob: _Problem, conc: _Concrete, res: Result, jobs: dict[str, Job], timed: bool) -> tuple[dict[str, Assigned], dict[str, float]]:
    waves = res.wave_of()
    assigned = {}
    for rid in jobs:
        gpu, pl = conc.slot_place[res.slot_of[rid]]
        assigned[rid] = Assigned(
            gpu, pl, waves[rid], res.start_s[rid] if timed else None, res.end_s.get(rid) if timed else None
        )
    capacity = {k: s.capacity for k, s in ((s.key, s) for s in conc.slots)}
    return assigned, capacity


def _plan_throughput(prob: _Problem, opts: SolveOptions, budget: float, notes: list[str]) -> Solution:
    counts, used, status, obj, bound, more = _solve_throughput(prob, opts, budget)
    notes += more
    conc = _concretize(prob, counts)
    # Fill each type's instances with the chosen patterns, in instance order.
    pinned: dict[str, str] = {}
    remaining = {ci: list(c.runs) for ci, c in enumerate(prob.classes)}
    for ti in sorted(used):
        inst = [s.key for s in conc.slots if conc.slot_type[s.key] == ti]
        k = 0
        for pat, count in used[ti]:
            for _ in range(count):
                slot = inst[k]
                k += 1
                for ci, num in pat:
                    for _ in range(num):
                        if remaining[ci]:
                            pinned[remaining[ci].pop(0)] = slot
    timed = all(c.duration_s for c in prob.classes)
    jobs = _jobs(prob, unit=not timed)
    cls = _class_of(prob)
    allowed = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
    order = [r for r in _lpt_order(prob, jobs)]
    res = _schedule(conc, jobs, order, allowed, opts, pinned=pinned)
    assigned, capacity = _finish(prob, conc, res, jobs, timed)
    gap = 0.0 if bound <= 0 else max(0.0, (bound - obj) / bound)
    return Solution(
        conc.layouts, assigned, {}, status, "runs_at_once", float(obj), float(bound), gap, 0.0,
        res.started_at_once, res.makespan_s if timed else None, notes, capacity,
    )


def _plan_makespan(prob: _Problem, opts: SolveOptions, budget: float, notes: list[str]) -> Solution:
    jobs = _jobs(prob, unit=False)
    cls = _class_of(prob)
    order = _lpt_order(prob, jobs)
    lb0 = max(min(_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    total = sum(c.n * min(_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    calls = 24  # at most this many relaxation solves: the first, ~20 bisection steps, 3 probes
    # CP-SAT deterministic seconds run about 3x slower than wall seconds here; these calls get
    # roughly half of the budget in wall time.
    per_call = lambda: max(0.02, budget / (6 * calls))  # noqa: E731
    tolerance = 0.002 if len(jobs) <= LARGE else 0.005

    best: tuple[float, Result, _Concrete] | None = None
    tried: set[tuple] = set()

    def evaluate(counts: dict[str, list[int]], split: dict[tuple[int, int], int]) -> None:
        nonlocal best
        key = tuple(sorted((k, tuple(v)) for k, v in counts.items())) + tuple(sorted(split.items()))
        if key in tried:
            return
        tried.add(key)
        conc = _concretize(prob, counts)
        # Variant A: each class's runs go to the instance types the relaxation chose, in its numbers.
        allowed: dict[str, set[int]] = {}
        for ci, c in enumerate(prob.classes):
            quota = sorted(((ti, k) for (cj, ti), k in split.items() if cj == ci), key=lambda x: x[0])
            rids = list(c.runs)
            for ti, k in quota:
                for rid in rids[:k]:
                    allowed[rid] = {ti}
                rids = rids[k:]
            for rid in rids:
                allowed[rid] = set(c.types)
        present = {conc.slot_type[s.key] for s in conc.slots}
        free = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
        variants = ("split", "free", "ect") if len(jobs) <= LARGE else ("split", "ect")
        for variant in variants:
            if variant == "ect":
                queues = _ect_queues(prob, conc, jobs, order, free)
                if sum(len(q) for q in queues.values()) != len(jobs):
                    continue  # some run has no instance of its types in this layout
                try:
                    res = replay([jobs[r] for r in order], conc.slots, queues, interference=opts.interference)
                except ValueError:
                    continue
            else:
                allowed = free if variant == "free" else allowed
                if any(not (a & present) for a in allowed.values()):
                    continue
                res = _schedule(conc, jobs, order, allowed, opts)
            if best is None or res.makespan_s < best[0] - 1e-6:
                best = (res.makespan_s, res, conc)

    status, counts, split = _makespan_feasible(prob, max(total, lb0), opts, per_call())
    if counts is not None:
        evaluate(counts, split or {})
    lo, hi = lb0, best[0] if best else 2 * max(total, lb0)
    proven_lb = lb0
    # First a cheap bound: bisection on the linear relaxation (an infeasible LP is a proof too).
    lp_lo, lp_hi = lb0, hi
    while lp_hi - lp_lo > 0.001 * lp_hi:
        mid = (lp_lo + lp_hi) / 2
        if _lp_infeasible(prob, mid):
            lp_lo = mid
        else:
            lp_hi = mid
    if lp_lo > lb0 and _lp_infeasible(prob, lp_lo):
        proven_lb = lo = lp_lo
    # Layouts rounded from the LP just above its threshold are good starting points too.
    for f in (1.0, 1.03, 1.08):
        _, lp_counts, _ = _lp(prob, lp_hi * f)
        if lp_counts is not None:
            evaluate(lp_counts, {})
    if best is None:  # CP-SAT ran out of time on the first relaxation and the LP gave nothing usable
        raise MigbenchError("the solver found no layout for the sweep", hint="raise --time-limit")
    hi = min(hi, best[0])
    # Bisection on the relaxation: infeasible T values are proven lower bounds.
    steps = 0
    while hi - lo > tolerance * hi and steps < calls - 4:
        steps += 1
        mid = (lo + hi) / 2
        lp_inf, _, cuts = _lp(prob, mid)
        st, c2, s2 = ("INFEASIBLE", None, None) if lp_inf else _makespan_feasible(prob, mid, opts, per_call(), cuts)
        if st == "INFEASIBLE":
            lo = mid
            proven_lb = max(proven_lb, mid)
        elif st == "FEASIBLE":
            hi = mid
            evaluate(c2, s2 or {})
            hi = min(hi, best[0])
        else:
            lo = mid  # unknown: search above, but do not count it as a proof
    # Also try the relaxation a little above its threshold: its layouts schedule differently.
    for f in (1.01, 1.03, 1.06):
        st, c2, s2 = _makespan_feasible(prob, hi * f, opts, per_call(), _lp(prob, hi * f)[2])
        if st == "FEASIBLE":
            evaluate(c2, s2 or {})
    makespan, res, conc = best
    if proven_lb < makespan * (1 - 1e-9) and len(jobs) <= HUGE:
        res = _improve(prob, conc, jobs, res, opts, max_evals=max(20, min(2000, 200000 // max(1, len(jobs)))))
        makespan = res.makespan_s
    bound = min(proven_lb, makespan)
    gap = 0.0 if makespan <= 0 else max(0.0, (makespan - bound) / makespan)
    status = "OPTIMAL" if gap <= 1e-9 else "FEASIBLE"
    assigned, capacity = _finish(prob, conc, res, jobs, True)
    return Solution(
        conc.layouts, assigned, {}, status, "makespan_s", makespan, bound, gap, 0.0,
        res.started_at_once, makespan, notes, capacity,
    )


def _finish_profile(res: Result) -> list[float]:
    """Per-slot finish times, latest first: the improvement order (makespan, then the runner-up...)."""
    ends: dict[str, float] = {}
    for jid, slot in res.slot_of.items():
        ends[slot] = max(ends.get(slot, 0.0), res.end_s[jid])
    return sorted(ends.values(), reverse=True)


def _improve(
    prob: _Problem, conc: _Concrete, jobs: dict[str, Job], res: Result, opts: SolveOptions, max_evals: int
) -> Result:
    """Local search on the queues: move a run from one of the instances that finish last to another
    instance it may use (to either end of its queue), or swap it with a shorter run there; keep a
    change when the finish profile (makespan, then the next latest instance...) improves, so
    unloading a runner-up instance counts too and makes room for the next move off the latest. Each candidate is
    replayed through the engine, so the result is exactly what `simulate` will show."""
    cls = _class_of(prob)
    types_of = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
    job_list = [jobs[r] for r in res.slot_of]
    queues = {s.key: list(res.order.get(s.key, [])) for s in conc.slots}
    best = res
    best_prof = _finish_profile(res)
    evals = 0

    def play(q: dict[str, list[str]]) -> Result:
        return replay(job_list, conc.slots, q, interference=opts.interference)

    def attempt(cand: dict[str, list[str]]) -> bool:
        nonlocal best, best_prof, queues, evals
        evals += 1
        try:
            r2 = play(cand)
        except ValueError:
            return False
        prof = _finish_profile(r2)
        if prof < best_prof:
            best, best_prof, queues = r2, prof, cand
            return True
        return False

    improved = True
    while improved and evals < max_evals:
        improved = False
        ends: dict[str, float] = {}
        for jid, slot in best.slot_of.items():
            ends[slot] = max(ends.get(slot, 0.0), best.end_s[jid])
        # Sources: the instances that finish last; targets: the earliest-finishing ones first.
        sources = sorted(ends, key=lambda k: (-ends[k], k))[:IMPROVE_SOURCES]
        for src in sources:
            if improved or evals >= max_evals:
                break
            others = sorted((x for x in conc.slots if x.key != src), key=lambda x: (ends.get(x.key, 0.0), x.key))
            for rid in reversed(queues[src]):  # the last started first
                if improved or evals >= max_evals:
                    break
                for target in others:
                    if conc.slot_type[target.key] not in types_of[rid]:
                        continue
                    # move to the end, then to the front of the target's queue
                    for front in (False, True):
                        cand = {k: list(v) for k, v in queues.items()}
                        cand[src].remove(rid)
                        if front:
                            cand[target.key].insert(0, rid)
                        else:
                            cand[target.key].append(rid)
                        if attempt(cand):
                            improved = True
                            break
                    if improved or evals >= max_evals:
                        break
                    # swap with a shorter run of the target
                    for other in reversed(queues[target.key]):
                        if jobs[other].duration_s >= jobs[rid].duration_s or conc.slot_type[src] not in types_of[other]:
                            continue
                        cand = {k: list(v) for k, v in queues.items()}
                        i, j = cand[src].index(rid), cand[target.key].index(other)
                        cand[src][i], cand[target.key][j] = other, rid
                        improved = attempt(cand)
                        break
                    if improved or evals >= max_evals:
                        break
    return best


def _ect_queues(
    prob: _Problem, conc: _Concrete, jobs: dict[str, Job], order: list[str], allowed: dict[str, set[int]]
) -> dict[str, list[str]]:
    """Earliest-completion assignment: runs in priority order, each to the instance where it is
    estimated to finish first. An instance is seen as `k` lanes for a run that can share it `k`-wide
    (its cap and its memory), each run taking its solo time times the slowdown of `k` such runs.
    Instances of one type are interchangeable, so each type keeps a heap of its instances' loads."""
    import heapq

    heaps: dict[int, list[tuple[float, str]]] = {}
    slot_of_type: dict[int, Slot] = {}
    for s in conc.slots:
        ti = conc.slot_type[s.key]
        heaps.setdefault(ti, []).append((0.0, s.key))
        slot_of_type[ti] = s
    for h in heaps.values():
        heapq.heapify(h)
    queues: dict[str, list[str]] = {s.key: [] for s in conc.slots}
    for rid in order:
        j = jobs[rid]
        best: tuple[float, int, float] | None = None
        for ti in sorted(allowed[rid]):
            if ti not in heaps:
                continue
            s = slot_of_type[ti]
            if j.memory_mib > s.memory_mib:
                continue
            load = heaps[ti][0][0]
            k = max(1, min(j.cap, s.memory_mib // max(1, j.memory_mib)))
            t = j.duration_s * max(1.0, k * j.compute / s.capacity)
            new_load = load + t / k
            est = new_load + t * (1 - 1 / k)
            if best is None or est < best[0] - 1e-9:
                best = (est, ti, new_load)
        if best is None:
            continue
        _, ti, new_load = best
        _, key = heapq.heappop(heaps[ti])
        heapq.heappush(heaps[ti], (new_load, key))
        queues[key].append(rid)
    return queues
