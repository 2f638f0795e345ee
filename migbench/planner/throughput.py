"""Objective 1, runs at once (no durations): CP-SAT maximises the runs that start immediately over
layout counts and per-type pattern counts, and proves the bound. Runs that do not fit wait in
queues on the same layout, in waves.
"""

from __future__ import annotations

import math
from collections import defaultdict
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


def solve_throughput(prob: PlanningProblem, opts: SolveOptions, budget: Budget) -> tuple[dict, dict, str, float, float, list[str]]:
    """CP-SAT: maximise runs started at once. Returns (layout counts, per-type pattern counts,
    status, objective, bound, notes)."""
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
    s = budget.solver(budget.share(0.8))
    st = s.solve(m)
    budget.solved(s, st)
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
    if not complete:
        # The restricted pattern set makes CP-SAT's bound a bound of the restricted model only;
        # an honest bound comes from the aggregated relaxation.
        bound = max(obj, _throughput_relaxation_bound(prob, budget))
        status = "OPTIMAL" if bound <= obj + 1e-9 else "FEASIBLE"
        notes.append(
            f"more than {MAX_PATTERNS} sharing patterns: used a restricted set; bound from the "
            "memory/slot relaxation"
        )
    counts = {key: [int(s.value(v)) for v in vs] for key, vs in x.items()}
    used = {
        ti: [(pats[ti][pi], int(s.value(y[(ti, pi)]))) for pi in range(len(pats[ti])) if s.value(y[(ti, pi)])]
        for ti in pats
    }
    return counts, used, status, obj, bound, notes


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


def plan_throughput(prob: PlanningProblem, opts: SolveOptions, budget: Budget, notes: list[str]) -> Solution:
    counts, used, status, obj, bound, more = solve_throughput(prob, opts, budget)
    notes += more
    conc = concretize(prob, counts)
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
    jobs = demands_of(prob, unit=not timed)
    cls = class_of(prob)
    allowed = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
    order = [r for r in lpt_order(prob, jobs)]
    res = schedule(conc, jobs, order, allowed, opts, pinned=pinned)
    assigned, capacity = finish(prob, conc, res, jobs, timed)
    gap = 0.0 if bound <= 0 else max(0.0, (bound - obj) / bound)
    return Solution(
        conc.layouts, assigned, {}, status, "runs_at_once", float(obj), float(bound), gap, 0.0,
        res.started_at_once, res.makespan_s if timed else None, notes, capacity,
    )
