"""Objective 1, runs at once (no durations): CP-SAT maximises the runs that start immediately over
layout counts and per-type pattern counts, and proves the bound. Then, lexicographically, among the
plans with that many runs at once, the one that gives the runs the most compute (the compute share of
the instances that hold a run at once), then the fewest instances: 3 x 2g.20gb + 1g.20gb rather than
4 x 1g.20gb and 3 idle slices for the same runs. Runs that do not fit wait in queues on the same
layout, in waves.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ortools.sat.python import cp_model

from migbench.errors import MigbenchError
from migbench.planner.budget import Budget
from migbench.planner.patterns import greedy_patterns, patterns
from migbench.planner.problem import MAX_PATTERNS, PlanningProblem, Solution, SolveOptions, add_layout_vars
from migbench.planner.schedule import class_of, concretize, demands_of, finish, lpt_order, schedule


def _no_layout() -> MigbenchError:
    return MigbenchError(
        "no layout of the fleet offers an instance for every run at the same time",
        hint="the runs' profile allow-lists or memory needs cannot all be met on these GPUs; add GPUs or relax `profiles:`",
    )


COMPUTE_SCALE = 1000  # an instance's compute share in thousandths, for the second objective
SECOND_MIN_S = 0.2  # reference seconds the second objective may always use (within half the budget left)
MAX_SECOND_VARS = 20000  # past this many (class, pattern) pairs the second objective is not solved


@dataclass
class AtOnce:
    """What the second objective decided: per (type, pattern), the runs of each class it holds at
    once over all its instances (`runs`). The fill spreads them so that every instance the solver
    counted as holding a run holds one."""

    runs: dict[tuple[int, tuple[tuple[int, int], ...]], dict[int, int]]  # (type, pattern) -> class -> runs


def solve_throughput(prob: PlanningProblem, opts: SolveOptions, budget: Budget) -> tuple[dict, dict, AtOnce | None, str, float, float, list[str]]:
    """CP-SAT: maximise runs started at once, then (the first objective held) the compute the runs
    are given, then the fewest instances. Returns (layout counts, per-type pattern counts, the runs
    at once per pattern when the second objective was solved, status, objective, bound, notes)."""
    notes: list[str] = []
    m = cp_model.CpModel()
    x, n_inst = add_layout_vars(m, prob)
    pats: dict[int, list[tuple[tuple[int, int], ...]]] = {}
    complete = True
    total = 0
    for ti in range(len(prob.types)):
        p, ok = patterns(prob, ti, MAX_PATTERNS - total)
        if not ok:
            complete = False
            p = greedy_patterns(prob, ti)
        pats[ti] = p
        total += len(p)
    y: dict[tuple[int, int], Any] = {}
    cover: dict[int, list[Any]] = defaultdict(list)
    for ti, plist in pats.items():
        t = prob.types[ti]
        ub = len(prob.gpus_of[t.model]) * t.profile.max_count
        vs = []
        for pi, pat in enumerate(plist):
            v = m.new_int_var(0, ub, f"y[{ti},{pi}]")
            y[(ti, pi)] = v
            vs.append(v)
            for ci, k in pat:
                cover[ci].append(k * v)
        if vs:
            m.add(sum(vs) <= n_inst[ti])
    z = []
    for ci, c in enumerate(prob.classes):
        v = m.new_int_var(0, c.n, f"z[{ci}]")
        m.add(v <= sum(cover[ci])) if cover[ci] else m.add(v == 0)
        z.append(v)
        # Runs that wait must still have a home on the layout: one instance that fits them.
        m.add(sum(n_inst[ti] for ti in c.types) >= 1)
    m.maximize(sum(z))
    spent0 = budget.spent
    s = budget.solver(budget.share(0.8))
    st = s.solve(m)
    budget.solved(s, st)
    first_cost = budget.spent - spent0
    if st == cp_model.INFEASIBLE:
        raise _no_layout()
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # Its share ran out (or the hard stop fired, say under load, before the call began): any
        # plan beats none, so take the model's first solution (the hard stop's warning says so).
        s = budget.rescue_solver()
        st = s.solve(m)
        budget.solved(s, st)
        if st == cp_model.INFEASIBLE:
            raise _no_layout()
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise MigbenchError(f"the solver found no plan ({s.status_name(st)})", hint="raise --time-limit")
    obj = s.objective_value
    bound = s.best_objective_bound
    status = "OPTIMAL" if st == cp_model.OPTIMAL else "FEASIBLE"
    s, at_once = _most_compute(m, prob, s, pats, x, y, z, n_inst, budget, opts, first_cost)
    if not complete:
        # The restricted pattern set makes CP-SAT's bound a bound of the restricted model only;
        # an honest bound comes from the aggregated relaxation.
        bound = max(obj, _throughput_relaxation_bound(prob, budget))
        status = "OPTIMAL" if bound <= obj + 1e-9 else "FEASIBLE"
        notes.append(f"more than {MAX_PATTERNS} sharing patterns: used a restricted set; bound from the memory/slot relaxation")
    counts = {key: [int(s.value(v)) for v in vs] for key, vs in x.items()}
    used = {ti: [(pats[ti][pi], int(s.value(y[(ti, pi)]))) for pi in range(len(pats[ti])) if s.value(y[(ti, pi)])] for ti in pats}
    return counts, used, at_once, status, obj, bound, notes


def _most_compute(
    m: cp_model.CpModel,
    prob: PlanningProblem,
    first: cp_model.CpSolver,
    pats: dict[int, list[tuple[tuple[int, int], ...]]],
    x: dict[str, list[Any]],
    y: dict[tuple[int, int], Any],
    z: list[Any],
    n_inst: dict[int, Any],
    budget: Budget,
    opts: SolveOptions,
    first_cost: float,
) -> tuple[cp_model.CpSolver, AtOnce | None]:
    """The second and third objectives, lexicographically under the first: with at least the runs at
    once found, maximise the compute share of the instances that hold a run at once, then use the
    fewest instances. Per pattern, r[c] runs of class c start at once (at most its count times the
    pattern's instances) and h of its instances hold one (h <= instances, h <= sum r: spreading each
    class's runs round-robin over the pattern's instances realises it). Starts from the first
    solution (a hint), so it never does worse; returns the first solver and None when the budget left
    nothing, the model is too large, or nothing came back."""
    pairs = sum(len(pat) for plist in pats.values() for pat in plist)
    if budget.expired() or not z or pairs > MAX_SECOND_VARS or not opts.most_compute:
        return first, None
    m.add(sum(z) >= int(round(first.objective_value)))
    r: dict[tuple[int, int, int], Any] = {}
    h: dict[tuple[int, int], Any] = {}
    given = []
    for ti, plist in pats.items():
        t = prob.types[ti]
        weight = max(1, round(t.capacity * COMPUTE_SCALE))
        for pi, pat in enumerate(plist):
            yv = y[(ti, pi)]
            ub = len(prob.gpus_of[t.model]) * t.profile.max_count
            mine = []
            for ci, k in pat:
                v = m.new_int_var(0, min(prob.classes[ci].n, k * ub), f"r[{ci},{ti},{pi}]")
                m.add(v <= k * yv)
                r[(ci, ti, pi)] = v
                mine.append(v)
            hv = m.new_int_var(0, ub, f"h[{ti},{pi}]")
            m.add(hv <= yv)
            m.add(hv <= sum(mine))
            h[(ti, pi)] = hv
            given.append(weight * hv)
    for ci, zv in enumerate(z):
        mine = [v for (cj, _, _), v in r.items() if cj == ci]
        m.add(zv == sum(mine)) if mine else m.add(zv == 0)
    for v in [*(v for vs in x.values() for v in vs), *y.values(), *z]:
        m.add_hint(v, first.value(v))
    max_inst = sum(len(prob.gpus_of[t.model]) * t.profile.max_count for t in prob.types)
    m.maximize((max_inst + 1) * sum(given) - sum(n_inst.values()))
    # A refinement: at most twice what the first objective cost (and half the budget left), so a
    # sweep of thousands of runs does not spend its limit on it.
    s = budget.solver(min(budget.share(0.5), max(SECOND_MIN_S, 2 * first_cost)))
    st = s.solve(m)
    budget.solved(s, st)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return first, None
    runs: dict[tuple[int, tuple[tuple[int, int], ...]], dict[int, int]] = {}
    for (ci, ti, pi), v in r.items():
        if s.value(v):
            runs.setdefault((ti, pats[ti][pi]), {})[ci] = int(s.value(v))
    return s, AtOnce(runs)


def _throughput_relaxation_bound(prob: PlanningProblem, budget: Budget) -> float:
    m = cp_model.CpModel()
    _, n_inst = add_layout_vars(m, prob)
    caps = sorted({c.cap for c in prob.classes})
    lcm = 1
    for k in caps:
        lcm = lcm * k // math.gcd(lcm, k)
    r: dict[tuple[int, int], Any] = {}
    for ci, c in enumerate(prob.classes):
        for ti in c.types:
            r[(ci, ti)] = m.new_int_var(0, c.n, f"r[{ci},{ti}]")
        m.add(sum(r[(ci, ti)] for ti in c.types) <= c.n)
    for ti, t in enumerate(prob.types):
        terms = [(ci, v) for (ci, tj), v in r.items() if tj == ti]
        if not terms:
            continue
        m.add(sum(prob.classes[ci].memory_mib * v for ci, v in terms) <= t.memory_mib * n_inst[ti])
        m.add(sum((lcm // prob.classes[ci].cap) * v for ci, v in terms) <= lcm * n_inst[ti])
    for c in prob.classes:
        m.add(sum(n_inst[ti] for ti in c.types) >= 1)
    m.maximize(sum(r.values()))
    s = budget.solver(budget.share(1.0))
    st = s.solve(m)
    budget.solved(s, st)
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float(s.best_objective_bound)
    return float(sum(c.n for c in prob.classes))


def _fill(prob: PlanningProblem, conc: Any, used: dict, at_once: AtOnce | None) -> dict[str, str]:
    """The runs that start at once, pinned to instances: each type's instances take the chosen
    patterns in instance order. Without `at_once`, each instance takes its pattern's runs while the
    class has runs left; with it, each pattern's runs of each class go round-robin over its instances,
    one pointer for all classes (so at most the pattern's count each, and as many instances holding a
    run as the runs allow)."""
    pinned: dict[str, str] = {}
    remaining = {ci: list(c.runs) for ci, c in enumerate(prob.classes)}
    for ti in sorted(used):
        inst = [s.key for s in conc.slots if conc.slot_type[s.key] == ti]
        k = 0
        for pat, count in used[ti]:
            mine = inst[k : k + count]
            k += count
            if at_once is not None:
                pos = 0
                for ci, _ in pat:
                    for _ in range(at_once.runs.get((ti, pat), {}).get(ci, 0)):
                        if remaining[ci]:
                            pinned[remaining[ci].pop(0)] = mine[pos % len(mine)]
                            pos += 1
                continue
            for slot in mine:
                for ci, num in pat:
                    for _ in range(num):
                        if remaining[ci]:
                            pinned[remaining[ci].pop(0)] = slot
    return pinned


def plan_throughput(prob: PlanningProblem, opts: SolveOptions, budget: Budget, notes: list[str]) -> Solution:
    counts, used, at_once, status, obj, bound, more = solve_throughput(prob, opts, budget)
    notes += more
    conc = concretize(prob, counts)
    pinned = _fill(prob, conc, used, at_once)
    timed = all(c.duration_s for c in prob.classes)
    jobs = demands_of(prob, unit=not timed)
    cls = class_of(prob)
    allowed = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
    order = [r for r in lpt_order(prob, jobs)]
    res = schedule(conc, jobs, order, allowed, opts, pinned=pinned)
    assigned, capacity = finish(prob, conc, res, jobs, timed)
    gap = 0.0 if bound <= 0 else max(0.0, (bound - obj) / bound)
    return Solution(
        conc.layouts,
        assigned,
        {},
        status,
        "runs_at_once",
        float(obj),
        float(bound),
        gap,
        0.0,
        res.started_at_once,
        res.makespan_s if timed else None,
        notes,
        capacity,
    )
