"""Small makespan problems solved exactly: the complete configuration model (after bench/exact.py).

Without lending every instance plays its queue on its own, so a plan's makespan is the largest
finish time of its instances. For an instance type and a multiset of run classes (a
*configuration*), `f` = the earliest finish over every queue order (`order.InstanceDP`, replayed
through `play_queue`). For a threshold T, every configuration with f <= T whose complement can still
fit the rest of the fleet is enumerated, and CP-SAT chooses how many GPUs of each model take each
layout and how many instances of each type take each configuration, covering every run once and
minimising the largest f used (by bisection on its rank among the distinct values). Every plan with
makespan <= T uses only such configurations, so a feasible model's optimum is the true optimum, and
an infeasible one proves the optimum is above T (T then grows by GROW).

Effort is deterministic: order-search states, configurations and CP-SAT deterministic time are
charged to the budget, and past its allowance the search gives up (`OutOfEffort`) and the planner
keeps its heuristic plan.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from migbench.duration import Demand, Slot
from migbench.duration.replay import play_queue
from migbench.planner.budget import Budget
from migbench.planner.improve import Evaluator, InstanceQueues
from migbench.planner.order import EPS, TIE, InstanceDP, OrderClass, OutOfEffort
from migbench.planner.problem import PlanningProblem, add_layout_vars
from migbench.planner.schedule import concretize

GROW = 1.06  # threshold growth after an infeasible round
DP_S_PER_STATE = 40e-6  # reference seconds per order-search state
CONFIG_S = 20e-6  # reference seconds per configuration considered
MAX_RUNS = 40  # larger problems are not tried exactly
MAX_GPUS = 4


@dataclass
class _TypeInfo:
    """What the fleet can still offer when one instance of this type is used: the rest of its GPU
    (best layout containing it) and every other GPU (best layout), in capacity and memory."""

    rest_cap: float
    rest_mem: float
    rest_types: set[int]
    rest_whole_gpus: int = 0  # other GPUs that could host a run allowed only on whole-GPU types


@dataclass
class _Store:
    classes: list[OrderClass]
    allowed: list[list[int]]
    interference: float
    available: list[int]
    whole_only: list[bool]
    budget: Budget
    stop_at: float
    dps: dict[tuple[int, float], InstanceDP] = field(default_factory=dict)
    values: dict[tuple, tuple[float, list[int]]] = field(default_factory=dict)
    failed: dict[tuple, float] = field(default_factory=dict)
    upper: float = math.inf  # searches run up to this (the incumbent's makespan)

    def dp(self, memory_mib: int, capacity: float) -> InstanceDP:
        k = (memory_mib, capacity)
        if k not in self.dps:
            self.dps[k] = InstanceDP(self.classes, memory_mib, capacity, self.interference, self.available)
        return self.dps[k]

    def spend(self, seconds: float) -> None:
        self.budget.charge(seconds)
        if self.budget.spent > self.stop_at or self.budget.expired():
            raise OutOfEffort

    def f(self, memory_mib: int, capacity: float, config: tuple[tuple[int, int], ...], T: float) -> tuple[float, list[int]] | None:
        """(f, queue of class indices) when f <= T, else None."""
        key = (memory_mib, capacity, config)
        hit = self.values.get(key)
        if hit is not None:
            return hit if hit[0] <= T * (1 + EPS) else None
        failed = self.failed.get(key)
        if failed is not None and failed > T * (1 + EPS):
            return None
        self.spend(CONFIG_S)
        dp = self.dp(memory_mib, capacity)
        counts = [0] * len(self.classes)
        for ci, k in config:
            counts[ci] = k
        cut = max(T, self.upper)
        before = dp.states
        dp.limit = before + max(0, int((self.stop_at - self.budget.spent) / DP_S_PER_STATE))
        try:
            res = dp.best(tuple(counts), cut)
        finally:
            self.spend((dp.states - before) * DP_S_PER_STATE)
        if res is None:
            self.failed[key] = cut
            return None
        _, order = res
        slot = Slot("s", memory_mib, capacity, "s")
        _, ends = play_queue([_job(self.classes[ci], i) for i, ci in enumerate(order)], slot, self.interference)
        value = max(ends)
        self.values[key] = (value, order)
        return (value, order) if value <= T * (1 + EPS) else None


def _job(c: OrderClass, i: int) -> Demand:
    return Demand(f"r{i}", c.memory_mib, c.duration_s, c.compute, c.cap)


def small_enough(prob: PlanningProblem) -> bool:
    return sum(c.n for c in prob.classes) <= MAX_RUNS and len(prob.fleet) <= MAX_GPUS


def solve_exact(prob: PlanningProblem, ev: Evaluator, incumbent: InstanceQueues, lower: float, allowance: float) -> tuple[InstanceQueues | None, float]:
    """The optimal plan when the model finds one within `allowance` reference seconds: (plan or
    None, proven lower bound). The plan is None when the incumbent is already optimal (the bound
    then equals its makespan) or the effort ran out (the bound is what was proven)."""
    budget = ev.budget
    classes = [OrderClass(c.memory_mib, float(c.duration_s or 1.0), c.compute, c.cap) for c in prob.classes]
    allowed = [list(c.types) for c in prob.classes]
    whole_type = _whole_types(prob)
    whole_only = [all(whole_type[ti] for ti in a) for a in allowed]
    wanted = [any(ti in allowed[ci] for ci in range(len(classes)) if whole_only[ci]) for ti in range(len(prob.types))]
    store = _Store(classes, allowed, ev.interference, [c.n for c in prob.classes], whole_only, budget, budget.spent + allowance)
    infos = _type_infos(prob, whole_type, wanted)
    work_all = sum(c.n * c.compute * float(c.duration_s or 1.0) for c in prob.classes)
    memt_all = sum(c.n * c.memory_mib * float(c.duration_s or 1.0) for c in prob.classes)
    value = incumbent.makespan()
    store.upper = value
    bound = lower
    T = lower
    best: InstanceQueues | None = None
    try:
        while bound < value - 2 * TIE:
            T = min(T, value - 2 * TIE)
            cfgs: dict[int, dict[tuple, tuple[float, list[int], float]]] = {}
            for ti, t in enumerate(prob.types):
                cis = [ci for ci in range(len(classes)) if ti in allowed[ci]]
                others = [ci for ci in range(len(classes)) if ti not in allowed[ci]]
                cfgs[ti] = _configs(store, ti, t.memory_mib, t.capacity, infos[ti], cis, [store.available[ci] for ci in cis], T, work_all, memt_all, others)
            st, res = _min_rank(prob, cfgs, store, bound)
            if st == "INFEASIBLE":
                bound = max(bound, T)
                T *= GROW
                continue
            if res is not None:
                plan = _rebuild(prob, ev, res["x"], res["y"], cfgs)
                if plan.makespan() < value - TIE:
                    best, value = plan, plan.makespan()
                bound = max(bound, min(res["bound"], value))
                if st == "OPTIMAL":
                    bound = value
            break
    except OutOfEffort:
        pass
    if bound >= value - 2 * TIE * (1 + EPS):
        bound = value
    return best, bound


def _configs(
    store: _Store,
    ti: int,
    memory_mib: int,
    capacity: float,
    info: _TypeInfo,
    cis: list[int],
    counts: list[int],
    T: float,
    work_all: float,
    memt_all: float,
    others: list[int],
) -> dict[tuple, tuple[float, list[int], float]]:
    """Every non-empty configuration of the classes `cis` (counts available) on this type with
    f <= T whose complement can still fit the rest of the fleet in T (work and memory x time; classes
    the rest cannot host at all must be in it). `others`: classes not allowed on this type."""
    if not cis:
        return {}
    cls = store.classes
    if any(not info.rest_types & set(store.allowed[ci]) for ci in others):
        return {}
    kmem = max(1, memory_mib // min(cls[ci].memory_mib for ci in cis))
    lim = T * (1 + EPS)
    parts = {}
    for ci in cis:
        c = cls[ci]
        parts[ci] = (
            c.duration_s * max(1.0, c.compute / capacity),
            c.compute * c.duration_s / capacity,
            c.duration_s / min(c.cap, kmem),
            c.memory_mib * c.duration_s / memory_mib,
            c.compute * c.duration_s,
            c.memory_mib * c.duration_s,
        )
    must = {ci for ci in cis if not info.rest_types & set(store.allowed[ci])}
    need_work = work_all - T * info.rest_cap - 1e-12 * max(1.0, work_all)
    need_memt = memt_all - T * info.rest_mem - 1e-12 * max(1.0, memt_all)
    pw = {ci: (cls[ci].duration_s / cls[ci].cap if store.whole_only[ci] else 0.0) for ci in range(len(cls))}
    pres_whole_all = sum(store.available[ci] * pw[ci] for ci in range(len(cls)))
    need_whole = pres_whole_all - T * info.rest_whole_gpus - 1e-12 * max(1.0, pres_whole_all)
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
                cfg = tuple(chosen)
                r = store.f(memory_mib, capacity, cfg, T)
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


def _whole_types(prob: PlanningProblem) -> list[bool]:
    """Types that no layout combines with another instance (the full-GPU profile)."""
    out = []
    for t in prob.types:
        sizes = [sum(ms.values()) for ms, _ in prob.layouts[t.model] if ms.get(t.profile.name)]
        out.append(bool(sizes) and max(sizes) == 1)
    return out


def _type_infos(prob: PlanningProblem, whole_type: list[bool], wanted: list[bool]) -> list[_TypeInfo]:
    types = prob.types
    cap = {i: t.capacity for i, t in enumerate(types)}
    mem = {i: t.memory_mib for i, t in enumerate(types)}

    def lay_types(key: str, ms: dict[str, int]) -> list[int]:
        return [prob.type_index[(key, p)] for p, n in ms.items() for _ in range(n) if (key, p) in prob.type_index]

    best_cap = {k: max(sum(cap[i] for i in lay_types(k, ms)) for ms, _ in lays) for k, lays in prob.layouts.items()}
    best_mem = {k: max(sum(mem[i] for i in lay_types(k, ms)) for ms, _ in lays) for k, lays in prob.layouts.items()}
    all_types = {k: {i for ms, _ in lays for i in lay_types(k, ms)} for k, lays in prob.layouts.items()}
    count = {k: len(v) for k, v in prob.gpus_of.items()}
    out = []
    for ti, t in enumerate(types):
        rc, rm, rt = -math.inf, -math.inf, set()
        for ms, _ in prob.layouts[t.model]:
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


def _min_rank(
    prob: PlanningProblem, cfgs: dict[int, dict[tuple, tuple[float, list[int], float]]], store: _Store, known_below: float
) -> tuple[str, dict[str, Any] | None]:
    """Minimise the largest f used by bisection on its rank among the distinct f values, each step a
    CP-SAT feasibility model (an exact cover by configurations whose f has at most that rank)."""
    values = sorted({round(v[0], 6) for per in cfgs.values() for v in per.values()})
    if not values:
        return "INFEASIBLE", None
    lo = -1
    while lo + 1 < len(values) and values[lo + 1] <= known_below * (1 + EPS):
        lo += 1
    hi = len(values) - 1
    sol = None
    probe = hi
    while True:
        st, got = _cover(prob, cfgs, values[probe], store)
        if st == "FEASIBLE" and got is not None:
            sol = got
            hi = values.index(round(got["value"], 6))
        elif st == "INFEASIBLE":
            lo = probe
        else:
            break
        if sol is None and lo >= len(values) - 1:
            return "INFEASIBLE", None
        if lo + 1 >= hi and sol is not None:
            return "OPTIMAL", dict(sol, bound=sol["value"])
        probe = (lo + hi) // 2 if sol is not None else hi
    if sol is None:
        return "UNKNOWN", None
    return "FEASIBLE", dict(sol, bound=values[lo + 1] if lo + 1 < len(values) else sol["value"])


def _cover(
    prob: PlanningProblem, cfgs: dict[int, dict[tuple, tuple[float, list[int], float]]], limit: float, store: _Store
) -> tuple[str, dict[str, Any] | None]:
    """CP-SAT feasibility: how many GPUs of each model take each layout, how many instances of each
    type take each configuration with f <= limit, covering every run exactly once."""
    m = cp_model.CpModel()
    x, n_inst = add_layout_vars(m, prob)
    y: dict[int, list[tuple[tuple, Any]]] = {}
    cover: dict[int, list[Any]] = defaultdict(list)
    for ti, per in cfgs.items():
        t = prob.types[ti]
        ub = max((lay[0].get(t.profile.name, 0) for lay in prob.layouts[t.model]), default=0) * len(prob.gpus_of[t.model])
        if ub == 0 or not per:
            continue
        vs = []
        for cfg, (f, _, need) in per.items():
            if round(f, 6) > limit or need > limit * (1 + EPS):
                continue
            hi = ub
            for ci, k in cfg:
                hi = min(hi, store.available[ci] // k)
            if hi == 0:
                continue
            v = m.new_int_var(0, hi, "")
            vs.append((cfg, v))
            for ci, k in cfg:
                cover[ci].append(k * v)
        y[ti] = vs
        if vs:
            m.add(sum(v for _, v in vs) <= n_inst[ti])
    for ci in range(len(store.classes)):
        if not cover[ci]:
            return "INFEASIBLE", None
        m.add(sum(cover[ci]) == store.available[ci])
    left = store.stop_at - store.budget.spent
    if left <= 0:
        raise OutOfEffort
    s = store.budget.solver(left / 2)
    st = s.solve(m)
    store.budget.solved(s, st)
    if st == cp_model.INFEASIBLE:
        return "INFEASIBLE", None
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "UNKNOWN", None
    used = {ti: [(cfg, int(s.value(v))) for cfg, v in vs if s.value(v)] for ti, vs in y.items()}
    val = max(cfgs[ti][cfg][0] for ti, lst in used.items() for cfg, _ in lst)
    return "FEASIBLE", {"value": val, "x": {k: [int(s.value(v)) for v in vs] for k, vs in x.items()}, "y": used}


def _rebuild(
    prob: PlanningProblem,
    ev: Evaluator,
    x: dict[str, list[int]],
    y: dict[int, list[tuple[tuple, int]]],
    cfgs: dict[int, dict[tuple, tuple[float, list[int], float]]],
) -> InstanceQueues:
    """The model's counts as a concrete layout and queues (each configuration's best order)."""
    conc = concretize(prob, x)
    free: dict[int, list[str]] = defaultdict(list)
    for s in conc.slots:
        free[conc.slot_type[s.key]].append(s.key)
    pool = {ci: list(c.runs) for ci, c in enumerate(prob.classes)}
    queues: dict[str, list[str]] = {s.key: [] for s in conc.slots}
    for ti in sorted(y):
        for cfg, count in y[ti]:
            order = cfgs[ti][cfg][1]
            for _ in range(count):
                key = free[ti].pop(0)
                queues[key] = [pool[ci].pop(0) for ci in order]
    return ev.state(conc, queues)
