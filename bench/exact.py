"""Exact makespan optimum for small sweeps (about 10-14 runs on 1-2 GPUs), for measuring the planner.

The problem is the one migbench's makespan planner solves: every GPU gets one fixed legal layout
(any legal layout of the catalogue's plain profiles, maximal or not), every run is queued on one
instance of a type it may use, and each instance plays its queue under the duration model of
`migbench.duration.replay` (`replay`, lend=None): a queue is started in order, its head starts as soon as
it fits alongside what runs there (memory and sharing caps) and the runs behind it wait.

Method ("complete configuration model"):

1. Runs with the same (memory, duration, compute, cap, allowed profiles) form one class.
2. Without lending, `replay` plays every instance on its own (a slot's clock, rate and queue are
   touched only by that slot's own events; `fill` reads only its own queue), so a plan's makespan
   is the largest finish time over its instances. For an instance type (GPU model x profile:
   memory, capacity) and a multiset of classes (a "configuration"), f(config) = the best finish
   time over all queue orders, found by `InstanceDP` (a memoised search over the engine's states,
   with exact bounds; see there). The best order is replayed through `migbench.duration.replay.replay` on a single
   slot and that value is the one stored (`sim_mismatch` counts disagreements with the search's
   own arithmetic; there were none).
3. Rounds: for a threshold T, every configuration with f <= T is enumerated (configurations whose
   static lower bounds exceed T are skipped with all their supersets, and so are those whose
   complement cannot fit the rest of the fleet in T: compute work, memory x time, whole-GPU-only
   runs, instance types). A CP-SAT model then chooses, per GPU model, how many GPUs take each
   layout and, per instance type, how many instances take each configuration (at most as many as
   the layouts offer; the others stay empty, so maximal layouts suffice and every legal layout is
   covered), covering every run exactly once; the largest f used is minimised by bisection over
   the sorted distinct f values (feasibility models; no rounding). Every plan with makespan <= T
   uses only configurations of that round, so a feasible round gives the optimum and an
   infeasible one proves the optimum > T; T then grows x `GROW`.
4. An incumbent comes first from list scheduling (`migbench.duration.replay.list_schedule`) over every combination
   of maximal layouts; rounds stop just below it (2 TIE = 2e-6 s): if no plan beats it, it is the
   optimum. Configurations are searched up to the incumbent's makespan, so later rounds reuse them.
5. The plan is rebuilt concretely (a placement layout per GPU, a queue per instance) and replayed
   through `migbench.duration.replay.replay` on the whole fleet (lend=None): `replay_makespan_s` must equal
   `makespan_s`.

GPUs of one model and instances of one type are interchangeable (same memory and capacity), which
is what makes the aggregated counts exact. "Optimal" is up to TIE-sized (1e-6 s) differences.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

# --- everything used from migbench (re-point here when its modules move) ---------------------
from migbench.catalog import GpuModel, Placement
from migbench.duration import Demand as Job
from migbench.duration import Slot, instance_capacity
from migbench.duration.replay import list_schedule, replay
from migbench.planner import FleetGpu
from migbench.planner.budget import Solver
from migbench.planner.order import InstanceDP as _PlannerDP

__all__ = ["ExactResult", "solve_exact", "best_order", "FleetGpu"]

GROW = 1.06  # threshold growth after an infeasible round
EVAL_AT_INCUMBENT = True  # search configurations up to the incumbent's makespan, not just to T
EPS = 1e-9
DONE_SLACK = 1e-6  # engine._State.pop_finish: a run is done when its target is within this
TIE = 1e-6  # seconds: a queue order must beat the best found by more than this to count


class _Timeout(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Classes and instance types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunClass:
    memory_mib: int
    duration_s: float
    compute: float
    cap: int
    profiles: tuple[str, ...] | None

    def job(self, rid: str) -> Job:
        return Job(rid, self.memory_mib, self.duration_s, self.compute, self.cap)


@dataclass(frozen=True)
class IType:
    model: str
    profile: str
    memory_mib: int
    capacity: float

    @property
    def key(self) -> str:
        return f"{self.model}/{self.profile}"


def _run_class(r: Any) -> RunClass:
    prof = getattr(r, "profiles", None)
    return RunClass(
        int(r.memory_mib),
        float(r.duration_s or 1.0),
        float(r.compute),
        int(r.max_runs_per_instance),
        tuple(sorted(prof)) if prof else None,
    )


def _layouts(model: GpuModel) -> list[tuple[dict[str, int], tuple[Placement, ...], bool]]:
    """Distinct profile multisets of every legal layout (maximal or not) of the plain profiles,
    each with one concrete placement tuple (a maximal one where the multiset has one) and whether
    it is maximal. A non-maximal layout is a subset of a maximal one, and an instance may stay
    empty, so the cover model only needs the maximal ones."""
    seen: dict[tuple, tuple[Placement, ...]] = {}
    maximal: set[tuple] = set()
    for lay in model.layouts(maximal=True):
        ms = tuple(sorted(Counter(p.profile for p in lay).items()))
        seen.setdefault(ms, lay)
        maximal.add(ms)
    for lay in model.layouts(maximal=False):
        ms = tuple(sorted(Counter(p.profile for p in lay).items()))
        seen.setdefault(ms, lay)
    return [(dict(ms), lay, ms in maximal) for ms, lay in seen.items()]


# ---------------------------------------------------------------------------------------------
# One instance: the best queue order, by dynamic programming over the engine's states
# ---------------------------------------------------------------------------------------------


class InstanceDP(_PlannerDP):
    """The planner's per-instance order search (`migbench.planner.order.InstanceDP`), stopped by a
    wall-clock deadline instead of a count of states: the exact solver runs to a time limit."""

    deadline = math.inf

    def _tick(self) -> None:
        if self.states % 4096 == 0 and time.perf_counter() > self.deadline:
            raise _Timeout


def best_order(
    counts: dict[int, int],
    classes: Sequence[RunClass],
    memory_mib: int,
    capacity: float,
    interference: float = 0.0,
    bound: float = math.inf,
) -> tuple[float, list[int]] | None:
    """The best finish time on one instance of a multiset of classes (`counts`: class -> runs) over
    all queue orders, with one order achieving it (class indices); None when all exceed `bound`."""
    dp = InstanceDP(classes, memory_mib, capacity, interference)
    return dp.best([counts.get(ci, 0) for ci in range(len(classes))], bound)


def replay_one(jobs: Sequence[Job], memory_mib: int, capacity: float, interference: float = 0.0) -> float:
    """A queue (in this order) on one instance, through `migbench.duration.replay.replay`."""
    slot = Slot("s", memory_mib, capacity, "s")
    return replay(list(jobs), [slot], {"s": [j.id for j in jobs]}, interference=interference, lend=None).makespan_s


# ---------------------------------------------------------------------------------------------
# Configurations per instance type
# ---------------------------------------------------------------------------------------------


@dataclass
class _TypeInfo:
    """What the rest of the fleet can still offer when one instance of this type is used: the
    largest total capacity and instance memory, and the types it can contain."""

    rest_cap: float
    rest_mem: float
    rest_types: set[int]
    # GPUs other than this instance's that could host a run allowed only on whole-GPU instances
    # (a type no layout combines with another instance): each such GPU is then one instance
    rest_whole_gpus: int = 0


@dataclass
class _ConfigStore:
    classes: list[RunClass]
    allowed: list[list[int]]  # class -> instance types it may use
    interference: float
    available: list[int]  # runs per class
    whole_only: list[bool] = field(default_factory=list)  # class may only use whole-GPU instances
    dps: dict[tuple[int, float], InstanceDP] = field(default_factory=dict)
    # (memory, capacity, config) -> (engine value, order)
    values: dict[tuple, tuple[float, list[int]]] = field(default_factory=dict)
    failed: dict[tuple, float] = field(default_factory=dict)  # config -> budget it was proven above
    budget: float = 0.0
    searches: int = 0
    deadline: float = math.inf
    sim_mismatch: int = 0
    max_mismatch: float = 0.0

    def dp(self, memory_mib: int, capacity: float) -> InstanceDP:
        k = (memory_mib, capacity)
        if k not in self.dps:
            self.dps[k] = InstanceDP(self.classes, memory_mib, capacity, self.interference, self.available)
            self.dps[k].deadline = self.deadline
        return self.dps[k]

    def f(self, memory_mib: int, capacity: float, config: tuple[tuple[int, int], ...], T: float) -> tuple[float, list[int]] | None:
        """(f, queue of class indices) when f <= T, else None. Searches run with the budget
        `self.budget` (>= T; the incumbent's makespan is a good one: no configuration above it can
        be in a better plan), so a later round with a larger T rarely searches again."""
        key = (memory_mib, capacity, config)
        hit = self.values.get(key)
        if hit is not None:
            return hit if hit[0] <= T * (1 + EPS) else None
        failed = self.failed.get(key)
        if failed is not None and failed > T * (1 + EPS):
            return None
        dp = self.dp(memory_mib, capacity)
        counts = [0] * len(self.classes)
        for ci, k in config:
            counts[ci] = k
        self.searches += 1
        budget = max(T, self.budget)
        res = dp.best(tuple(counts), budget)
        if res is None:
            self.failed[key] = budget
            return None
        val, order = res
        jobs = [self.classes[ci].job(f"r{i}") for i, ci in enumerate(order)]
        ev = replay_one(jobs, memory_mib, capacity, self.interference)
        if abs(ev - val) > 1e-6 * max(1.0, val):
            self.sim_mismatch += 1
            self.max_mismatch = max(self.max_mismatch, abs(ev - val))
        self.values[key] = (ev, order)
        return (ev, order) if ev <= T * (1 + EPS) else None


def _configs(
    store: _ConfigStore,
    it: IType,
    info: _TypeInfo,
    cis: list[int],
    counts: list[int],
    T: float,
    work_all: float,
    memt_all: float,
    others: list[int],
    deadline: float = math.inf,
) -> dict[tuple, tuple[float, list[int], float]]:
    """Every non-empty configuration of the classes `cis` (counts available) on type `it` with
    f <= T and whose complement can still fit the rest of the fleet in T (work and memory x time
    bounds; classes the rest cannot host at all must be in it). `others`: classes not allowed on
    this type (all of them go to the rest)."""
    if not cis:
        return {}
    cls = store.classes
    if any(not info.rest_types & set(_allowed_types_of(store, ci)) for ci in others):
        return {}
    kmem = max(1, it.memory_mib // min(cls[ci].memory_mib for ci in cis))
    lim = T * (1 + EPS)
    parts = {}
    for ci in cis:
        c = cls[ci]
        parts[ci] = (
            c.duration_s * max(1.0, c.compute / it.capacity),
            c.compute * c.duration_s / it.capacity,
            c.duration_s / min(c.cap, kmem),
            c.memory_mib * c.duration_s / it.memory_mib,
            c.compute * c.duration_s,
            c.memory_mib * c.duration_s,
        )
    must = {ci for ci in cis if not info.rest_types & set(_allowed_types_of(store, ci))}
    need_work = work_all - T * info.rest_cap - 1e-12 * max(1.0, work_all)
    need_memt = memt_all - T * info.rest_mem - 1e-12 * max(1.0, memt_all)
    # whole-GPU-only runs outside the configuration: on the other GPUs, one instance each, so their
    # presence (duration / cap) must fit rest_whole_gpus x T
    pw = {ci: (cls[ci].duration_s / cls[ci].cap if store.whole_only[ci] else 0.0) for ci in range(len(cls))}
    pres_whole_all = sum(store.available[ci] * pw[ci] for ci in range(len(cls)))
    need_whole = pres_whole_all - T * info.rest_whole_gpus - 1e-12 * max(1.0, pres_whole_all)
    # what the classes from position i on can still add
    tail_w = [0.0] * (len(cis) + 1)
    tail_m = [0.0] * (len(cis) + 1)
    tail_p = [0.0] * (len(cis) + 1)
    for i in range(len(cis) - 1, -1, -1):
        tail_w[i] = tail_w[i + 1] + counts[i] * parts[cis[i]][4]
        tail_m[i] = tail_m[i + 1] + counts[i] * parts[cis[i]][5]
        tail_p[i] = tail_p[i + 1] + counts[i] * pw[cis[i]]
    out: dict[tuple, tuple[float, list[int], float]] = {}
    chosen: list[tuple[int, int]] = []

    def rec(i: int, solo: float, work: float, pres: float, memt: float, w: float, mt: float, pwh: float) -> None:
        if w + tail_w[i] < need_work or mt + tail_m[i] < need_memt or pwh + tail_p[i] < need_whole:
            return
        if i == len(cis):
            if chosen:
                if time.perf_counter() > deadline:
                    raise _Timeout
                cfg = tuple(chosen)
                r = store.f(it.memory_mib, it.capacity, cfg, T)
                if r is not None:
                    need = max(_needs(work_all - w, info.rest_cap), _needs(memt_all - mt, info.rest_mem), _needs(pres_whole_all - pwh, info.rest_whole_gpus))
                    out[cfg] = (r[0], r[1], need)
            return
        ci = cis[i]
        p = parts[ci]
        if ci not in must:
            rec(i + 1, solo, work, pres, memt, w, mt, pwh)
        for k in range(1, counts[i] + 1):
            if max(solo, p[0]) > lim or work + k * p[1] > lim or pres + k * p[2] > lim or memt + k * p[3] > lim:
                break
            if ci in must and k < counts[i]:
                continue
            chosen.append((ci, k))
            rec(i + 1, max(solo, p[0]), work + k * p[1], pres + k * p[2], memt + k * p[3], w + k * p[4], mt + k * p[5], pwh + k * pw[ci])
            chosen.pop()

    rec(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return out


def _needs(left: float, rest: float) -> float:
    """The least makespan at which the rest of the fleet (offering `rest` per second) could absorb
    `left` (compute work or memory x time) of the runs outside a configuration."""
    if left <= 1e-12 * max(1.0, abs(left)):
        return 0.0
    return math.inf if rest <= 0 else left / rest


def _allowed_types_of(store: _ConfigStore, ci: int) -> list[int]:
    return store.allowed[ci]


# ---------------------------------------------------------------------------------------------
# The whole fleet
# ---------------------------------------------------------------------------------------------


@dataclass
class ExactResult:
    status: str  # OPTIMAL | FEASIBLE (best found, not proven) | UNKNOWN (nothing found)
    makespan_s: float | None  # the model's value (best found)
    bound_s: float  # proven lower bound on the optimum
    replay_makespan_s: float | None  # the rebuilt plan through replay (lend=None)
    layouts: dict[int, list[str]]  # gpu -> placements
    queues: dict[str, list[str]]  # "gpu:profile@start" -> run ids in queue order
    seconds: float
    rounds: list[dict[str, Any]]
    stats: dict[str, Any]


def _restrict_layouts(layouts, fixed, fleet):  # type: ignore[no-untyped-def]
    """Only the given layouts (GPU index -> placements), as (layouts per model, count of GPUs per
    layout); each layout keeps its own placements."""
    out: dict[str, list] = {}
    counts: dict[str, list[int]] = {}
    for g in sorted(fleet, key=lambda g: g.index):
        lay = tuple(fixed[g.index])
        problems = g.model.check(lay)
        if problems:
            raise ValueError(f"GPU {g.index}: {'; '.join(problems)}")
        ms = dict(Counter(p.profile for p in lay))
        lst = out.setdefault(g.model.key, [])
        cnt = counts.setdefault(g.model.key, [])
        for i, (ms2, _, _) in enumerate(lst):
            if ms2 == ms:
                cnt[i] += 1
                break
        else:
            lst.append((ms, lay, True))
            cnt.append(1)
    return out, counts


def _whole_types(types: list[IType], layouts: dict[str, list]) -> list[bool]:
    """Types that no legal layout combines with another instance (the full-GPU profile)."""
    out = []
    for t in types:
        sizes = [sum(ms.values()) for ms, _, _ in layouts[t.model] if ms.get(t.profile)]
        out.append(bool(sizes) and max(sizes) == 1)
    return out


def _type_infos(
    types: list[IType],
    layouts: dict[str, list[tuple[dict[str, int], tuple[Placement, ...], bool]]],
    fleet: Sequence[FleetGpu],
    models: dict[str, GpuModel],
    whole_type: list[bool],
    wanted: list[bool],
) -> list[_TypeInfo]:
    """Per type: what the fleet offers besides one instance of it (same GPU: the best layout that
    contains it, less that instance; every other GPU: its best layout), and how many other GPUs
    could host the runs allowed only on whole-GPU types (`wanted`: types such runs may use)."""
    tix = {(t.model, t.profile): i for i, t in enumerate(types)}
    cap = {i: t.capacity for i, t in enumerate(types)}
    mem = {i: t.memory_mib for i, t in enumerate(types)}

    def lay_types(key: str, ms: dict[str, int]) -> list[int]:
        return [tix[(key, p)] for p, n in ms.items() for _ in range(n) if (key, p) in tix]

    best_cap = {k: max(sum(cap[i] for i in lay_types(k, ms)) for ms, _, _ in lays) for k, lays in layouts.items()}
    best_mem = {k: max(sum(mem[i] for i in lay_types(k, ms)) for ms, _, _ in lays) for k, lays in layouts.items()}
    all_types = {k: {i for ms, _, _ in lays for i in lay_types(k, ms)} for k, lays in layouts.items()}
    count = Counter(g.model.key for g in fleet)
    out = []
    for ti, t in enumerate(types):
        rc, rm, rt = -math.inf, -math.inf, set()
        for ms, _, _ in layouts[t.model]:
            lt = lay_types(t.model, ms)
            if ti not in lt:
                continue
            lt.remove(ti)
            rc = max(rc, sum(cap[i] for i in lt))
            rm = max(rm, sum(mem[i] for i in lt))
            rt |= set(lt)
        rw = 0
        for k, n in count.items():
            others = n - (1 if k == t.model else 0)
            if others > 0:
                rc += others * best_cap[k]
                rm += others * best_mem[k]
                rt |= all_types[k]
                if any(whole_type[i] and wanted[i] for i in all_types[k]):
                    rw += others
        out.append(_TypeInfo(rc, rm, rt, rw))
    return out


def _lower_bound(
    classes: list[RunClass], members: list[list[str]], types: list[IType], allowed: list[list[int]], fleet: Sequence[FleetGpu], max_cap_sum: dict[str, float]
) -> float:
    lb = 0.0
    for ci, c in enumerate(classes):
        lb = max(lb, min(c.duration_s * max(1.0, c.compute / types[ti].capacity) for ti in allowed[ci]))
    work = sum(len(members[ci]) * c.compute * c.duration_s for ci, c in enumerate(classes))
    total_cap = sum(max_cap_sum[g.model.key] for g in fleet)
    return max(lb, work / total_cap)


def solve_exact(
    runs: Sequence[Any],
    fleet: Sequence[FleetGpu],
    *,
    time_limit_s: float = 60.0,
    workers: int = 2,
    interference: float = 0.0,
    start_T: float | None = None,
    fixed_layouts: dict[int, Sequence[Placement]] | None = None,
) -> ExactResult:
    """Minimum makespan over (one legal layout per GPU, one queue per instance), replayed without
    lending. `runs` need id, memory_mib, duration_s, compute, max_runs_per_instance (and optional
    profiles). With `fixed_layouts` (GPU index -> placements, every GPU), only the queues are
    optimised: the best plan on those layouts."""
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    deadline = t0 + time_limit_s
    # classes
    key_of: dict[RunClass, int] = {}
    classes: list[RunClass] = []
    members: list[list[str]] = []
    for r in runs:
        c = _run_class(r)
        if c not in key_of:
            key_of[c] = len(classes)
            classes.append(c)
            members.append([])
        members[key_of[c]].append(r.id)
    # models, layouts, types
    models: dict[str, GpuModel] = {}
    gpus_of: dict[str, list[int]] = defaultdict(list)
    for g in sorted(fleet, key=lambda g: g.index):
        models.setdefault(g.model.key, g.model)
        gpus_of[g.model.key].append(g.index)
    layouts = {k: _layouts(m) for k, m in models.items()}
    fixed_counts: dict[str, list[int]] | None = None
    if fixed_layouts is not None:
        layouts, fixed_counts = _restrict_layouts(layouts, fixed_layouts, fleet)
    types: list[IType] = []
    type_index: dict[tuple[str, str], int] = {}
    max_cap_sum: dict[str, float] = {}
    for k, m in sorted(models.items()):
        for p in m.plain_profiles():
            if not p.memory_mib:
                continue
            type_index[(k, p.name)] = len(types)
            types.append(IType(k, p.name, int(p.memory_mib), instance_capacity(m, p)))
        max_cap_sum[k] = max(sum(instance_capacity(m, m.profile(n)) * c for n, c in ms.items()) for ms, _, _ in layouts[k])
    allowed = [[ti for ti, t in enumerate(types) if c.memory_mib <= t.memory_mib and (c.profiles is None or t.profile in c.profiles)] for c in classes]
    for ci, a in enumerate(allowed):
        if not a:
            raise ValueError(f"run {members[ci][0]} fits no instance type of the fleet")
    whole_type = _whole_types(types, layouts)
    whole_only = [all(whole_type[ti] for ti in allowed[ci]) for ci in range(len(classes))]
    wanted = [any(ti in allowed[ci] for ci in range(len(classes)) if whole_only[ci]) for ti in range(len(types))]
    store = _ConfigStore(classes, allowed, interference, [len(m) for m in members], whole_only, deadline=deadline)
    infos = _type_infos(types, layouts, fleet, models, whole_type, wanted)
    work_all = sum(len(members[ci]) * c.compute * c.duration_s for ci, c in enumerate(classes))
    memt_all = sum(len(members[ci]) * c.memory_mib * c.duration_s for ci, c in enumerate(classes))
    lb = _lower_bound(classes, members, types, allowed, fleet, max_cap_sum)
    # An incumbent from list scheduling on every combination of maximal layouts: a real plan, so
    # its replayed makespan bounds the optimum from above and caps the thresholds.
    th = time.perf_counter()
    inc = _heuristic(
        classes,
        members,
        types,
        type_index,
        allowed,
        models,
        gpus_of,
        interference,
        {g: tuple(lay) for g, lay in fixed_layouts.items()} if fixed_layouts is not None else None,
    )
    heur_s = time.perf_counter() - th
    incumbent = {"value": inc[0], "layouts": inc[1], "queues": inc[2], "replay": inc[0], "source": "list scheduling"}
    bound = lb
    rounds: list[dict[str, Any]] = []
    status = "FEASIBLE"
    T = max(lb, start_T or 0.0)
    deadline_hit = False
    # Rounds: is there a plan with makespan <= T? T grows from the lower bound and stops just below
    # the incumbent: if no plan beats the incumbent by 2 TIE, the incumbent is optimal.
    while bound < incumbent["value"] - 2 * TIE:
        T = min(T, incumbent["value"] - 2 * TIE)
        tr = time.perf_counter()
        store.budget = incumbent["value"] if EVAL_AT_INCUMBENT else T
        for dp in store.dps.values():
            dp.deadline = deadline
        try:
            if tr > deadline:
                raise _Timeout
            cfgs: dict[int, dict[tuple, tuple[float, list[int], float]]] = {}
            for ti, it in enumerate(types):
                cis = [ci for ci in range(len(classes)) if ti in allowed[ci]]
                others = [ci for ci in range(len(classes)) if ti not in allowed[ci]]
                cfgs[ti] = _configs(store, it, infos[ti], cis, [len(members[ci]) for ci in cis], T, work_all, memt_all, others, deadline)
        except _Timeout:
            deadline_hit = True
            rounds.append({"T_s": round(T, 3), "configs": None, "enum_s": round(time.perf_counter() - tr, 3), "cpsat_s": 0.0, "cpsat": "NOT RUN (time limit)"})
            break
        t_enum = time.perf_counter() - tr
        ncfg = sum(len(v) for v in cfgs.values())
        res = _cpsat(
            classes,
            members,
            types,
            cfgs,
            layouts,
            gpus_of,
            max(1.0, deadline - time.perf_counter()),
            workers,
            known_below=bound if rounds else -math.inf,
            fixed_counts=fixed_counts,
        )
        rounds.append(
            {
                "T_s": round(T, 3),
                "configs": ncfg,
                "enum_s": round(t_enum, 3),
                "cpsat_s": round(time.perf_counter() - tr - t_enum, 3),
                "cpsat": res["status"],
                "cpsat_solves": res["solves"],
            }
        )
        if res["status"] == "INFEASIBLE":
            # every plan with makespan <= T uses only configurations of this model: the optimum is > T
            bound = max(bound, T)
            T *= GROW
            continue
        if res["status"] in ("OPTIMAL", "FEASIBLE"):
            lay_out, q_out, rep = _rebuild(res["x"], res["y"], classes, members, types, type_index, cfgs, layouts, gpus_of, interference)
            incumbent = {"value": res["value"], "layouts": lay_out, "queues": q_out, "replay": rep, "source": "configuration model"}
            bound = max(bound, min(res["bound"], incumbent["value"]))
            if res["status"] == "OPTIMAL":
                bound = incumbent["value"]
        else:
            deadline_hit = True
        break
    if bound >= incumbent["value"] - 2 * TIE * (1 + EPS):
        # no plan beats the incumbent by more than 2 TIE (2e-6 s): it is optimal
        status = "OPTIMAL"
        bound = incumbent["value"]
    stats = {
        "classes": len(classes),
        "types": len(types),
        "layouts": {k: len(v) for k, v in layouts.items()},
        "order_searches": store.searches,
        "dp_states": sum(d.states for d in store.dps.values()),
        "sim_mismatch": store.sim_mismatch,
        "max_sim_mismatch_s": store.max_mismatch,
        "lower_bound_start_s": lb,
        "heuristic_s": round(heur_s, 3),
        "heuristic_makespan_s": inc[0],
        "plan_from": incumbent["source"],
        "time_limit_hit": deadline_hit,
        "cpu_s": round(time.process_time() - cpu0, 3),
    }
    return ExactResult(
        status, incumbent["value"], bound, incumbent["replay"], incumbent["layouts"], incumbent["queues"], time.perf_counter() - t0, rounds, stats
    )


def _heuristic(classes, members, types, type_index, allowed, models, gpus_of, interference, fixed=None):  # type: ignore[no-untyped-def]
    """Best list schedule (list_schedule, then replayed) over every combination of maximal
    layouts (distinct profile multisets), or the `fixed` one, and two priority orders."""
    per_model: dict[str, list[tuple[Placement, ...]]] = {}
    for key, m in models.items():
        seen: dict[tuple, tuple[Placement, ...]] = {}
        for lay in m.layouts():
            seen.setdefault(tuple(sorted(Counter(p.profile for p in lay).items())), lay)
        per_model[key] = list(seen.values())
    jobs = {rid: classes[ci].job(rid) for ci in range(len(classes)) for rid in members[ci]}
    types_of = {rid: set(allowed[ci]) for ci in range(len(classes)) for rid in members[ci]}
    solo = {
        rid: min(classes[ci].duration_s * max(1.0, classes[ci].compute / types[ti].capacity) for ti in allowed[ci])
        for ci in range(len(classes))
        for rid in members[ci]
    }
    orders = [
        sorted(jobs, key=lambda r: (-solo[r], -jobs[r].memory_mib, r)),
        sorted(jobs, key=lambda r: (-jobs[r].memory_mib, -solo[r], r)),
    ]
    combos: list[dict[int, tuple[Placement, ...]]] = [{}]
    for key in sorted(gpus_of):
        gpus = gpus_of[key]
        new = []
        for pick in itertools.combinations_with_replacement(range(len(per_model[key])), len(gpus)):
            for base in combos:
                d = dict(base)
                for g, li in zip(gpus, pick):
                    d[g] = per_model[key][li]
                new.append(d)
        combos = new
    if fixed is not None:
        combos = [dict(fixed)]
    model_of = {g: k for k, gs in gpus_of.items() for g in gs}
    best = None
    for lay_of in combos:
        slots, stype = [], {}
        for gpu in sorted(lay_of):
            for pl in lay_of[gpu]:
                ti = type_index[(model_of[gpu], pl.profile)]
                key = f"{gpu}:{pl}"
                slots.append(Slot(key, types[ti].memory_mib, types[ti].capacity, str(ti)))
                stype[key] = ti
        present = set(stype.values())
        if any(not (types_of[r] & present) for r in jobs):
            continue
        for order in orders:
            res = list_schedule([jobs[r] for r in order], slots, lambda j, s, stype=stype: stype[s.key] in types_of[j.id], interference=interference)
            if best is None or res.makespan_s < best[0] - TIE:
                best = (res.makespan_s, lay_of, slots, res.order)
    assert best is not None, "no combination of maximal layouts hosts every run"
    _, lay_of, slots, order = best
    queues = {k: list(v) for k, v in order.items() if v}
    res = replay(list(jobs.values()), slots, queues, interference=interference, lend=None)
    return res.makespan_s, {g: [str(p) for p in lay_of[g]] for g in sorted(lay_of)}, queues


def _cpsat(
    classes,
    members,
    types,
    cfgs,
    layouts,
    gpus_of,
    time_limit,
    workers,
    known_below=-math.inf,  # type: ignore[no-untyped-def]
    fixed_counts=None,
) -> dict[str, Any]:
    """Minimise the largest f used, by bisection on its rank among the distinct f values: each step
    is a CP-SAT feasibility model (an exact cover of the runs by configurations whose f has at most
    that rank, on instances some combination of layouts offers). Feasibility models prove far
    faster than minimising the rank directly (whose linear relaxation is weak). `known_below`: no
    plan reaches this value (an earlier round), so ranks at or below it are not tried."""
    t_end = time.perf_counter() + time_limit
    values = sorted({round(v[0], 6) for per in cfgs.values() for v in per.values()})
    if not values:
        return {"status": "INFEASIBLE", "solves": 0}
    lo = -1  # highest rank proven infeasible
    while lo + 1 < len(values) and values[lo + 1] <= known_below * (1 + EPS):
        lo += 1
    hi = len(values) - 1
    sol = None
    solves = 0
    # the first step tries every value: it finds a plan (or proves there is none) and sets hi
    probe = hi
    while True:
        left = t_end - time.perf_counter()
        if left <= 0:
            break
        st, got = _cover(classes, members, types, cfgs, layouts, gpus_of, values[probe], left, workers, fixed_counts)
        solves += 1
        if st == "FEASIBLE":
            sol = got
            hi = values.index(round(got["value"], 6))
        elif st == "INFEASIBLE":
            lo = probe
        else:
            break
        if sol is None and lo >= len(values) - 1:
            return {"status": "INFEASIBLE", "solves": solves}
        if lo + 1 >= hi and sol is not None:
            return {"status": "OPTIMAL", "value": sol["value"], "bound": sol["value"], "x": sol["x"], "y": sol["y"], "solves": solves}
        probe = (lo + hi) // 2 if sol is not None else hi
    if sol is None:
        return {"status": "UNKNOWN", "solves": solves}
    return {
        "status": "FEASIBLE",
        "value": sol["value"],
        "bound": values[lo + 1] if lo + 1 < len(values) else sol["value"],
        "x": sol["x"],
        "y": sol["y"],
        "solves": solves,
    }


def _cover(classes, members, types, cfgs, layouts, gpus_of, limit, time_limit, workers, fixed_counts=None):  # type: ignore[no-untyped-def]
    """CP-SAT feasibility: how many GPUs of each model take each layout (maximal layouts suffice:
    instances may stay empty, and every legal layout is part of a maximal one), how many instances
    of each type take each configuration with f <= limit, covering every run exactly once."""
    m = cp_model.CpModel()
    x: dict[str, list[Any]] = {}
    n_inst: dict[int, Any] = {}
    for key, lays in layouts.items():
        g = len(gpus_of[key])
        if fixed_counts is not None:
            x[key] = [m.NewConstant(n) for n in fixed_counts[key]]
            continue
        x[key] = [m.NewIntVar(0, g, f"x[{key},{i}]") if maximal else m.NewConstant(0) for i, (_, _, maximal) in enumerate(lays)]
        m.Add(sum(x[key]) == g)
    for ti, t in enumerate(types):
        lays = layouts[t.model]
        n_inst[ti] = sum(lays[i][0].get(t.profile, 0) * x[t.model][i] for i in range(len(lays)))
    y: dict[int, list[tuple[tuple, Any]]] = {}
    cover: dict[int, list[Any]] = defaultdict(list)
    for ti, per in cfgs.items():
        t = types[ti]
        ub = max((lay[0].get(t.profile, 0) for lay in layouts[t.model]), default=0) * len(gpus_of[t.model])
        if ub == 0 or not per:
            continue
        vs = []
        for cfg, (f, _, need) in per.items():
            if round(f, 6) > limit or need > limit * (1 + EPS):
                continue  # too slow, or the other runs could not fit the rest of the fleet by `limit`
            hi = ub
            for ci, k in cfg:
                hi = min(hi, len(members[ci]) // k)
            if hi == 0:
                continue
            v = m.NewIntVar(0, hi, "")
            vs.append((cfg, v))
            for ci, k in cfg:
                cover[ci].append(k * v)
        y[ti] = vs
        if vs:
            m.Add(sum(v for _, v in vs) <= n_inst[ti])
    for ci in range(len(classes)):
        if not cover[ci]:
            return "INFEASIBLE", None
        m.Add(sum(cover[ci]) == len(members[ci]))
    s = Solver()  # migbench's: gives SIGINT back to Python after the search (the tests run this in-process)
    s.parameters.max_time_in_seconds = max(0.1, time_limit)
    s.parameters.num_workers = workers
    s.parameters.random_seed = 0
    st = s.Solve(m)
    if st == cp_model.INFEASIBLE:
        return "INFEASIBLE", None
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "UNKNOWN", None
    used = {ti: [(cfg, int(s.Value(v))) for cfg, v in vs if s.Value(v)] for ti, vs in y.items()}
    val = max(cfgs[ti][cfg][0] for ti, lst in used.items() for cfg, _ in lst)
    return "FEASIBLE", {"value": val, "x": {k: [int(s.Value(v)) for v in vs] for k, vs in x.items()}, "y": used}


def _rebuild(x, y, classes, members, types, type_index, cfgs, layouts, gpus_of, interference):  # type: ignore[no-untyped-def]
    """Concrete layouts and queues from the model's counts; replayed through replay."""
    lay_of: dict[int, tuple[Placement, ...]] = {}
    for key, counts in x.items():
        gpus = list(gpus_of[key])
        i = 0
        for li, k in enumerate(counts):
            for _ in range(k):
                lay_of[gpus[i]] = layouts[key][li][1]
                i += 1
    model_of = {g: k for k, gs in gpus_of.items() for g in gs}
    slots: list[Slot] = []
    free: dict[int, list[str]] = defaultdict(list)  # type -> slot keys
    for gpu in sorted(lay_of):
        for pl in lay_of[gpu]:
            ti = type_index[(model_of[gpu], pl.profile)]
            key = f"{gpu}:{pl}"
            slots.append(Slot(key, types[ti].memory_mib, types[ti].capacity, key))
            free[ti].append(key)
    pool = {ci: list(members[ci]) for ci in range(len(classes))}
    queues: dict[str, list[str]] = {s.key: [] for s in slots}
    for ti in sorted(y):
        for cfg, count in y[ti]:
            order = cfgs[ti][cfg][1]
            for _ in range(count):
                key = free[ti].pop(0)
                queues[key] = [pool[ci].pop(0) for ci in order]
    jobs = [classes[ci].job(rid) for ci in range(len(classes)) for rid in members[ci]]
    res = replay(jobs, slots, queues, interference=interference, lend=None)
    layouts_out = {g: [str(p) for p in lay_of[g]] for g in sorted(lay_of)}
    return layouts_out, {k: v for k, v in queues.items() if v}, res.makespan_s
