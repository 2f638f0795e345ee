"""Objective 2, makespan (every run has a duration): bisection on the relaxation for the bound and
candidate layouts, list scheduling and earliest-completion queues on each, then local search.
"""

from __future__ import annotations

from migbench.duration.replay import Result, replay
from migbench.errors import MigbenchError
from migbench.planner.bound import class_solo, lp_infeasible, lp_relaxation, makespan_feasible
from migbench.planner.improve import ect_queues, improve
from migbench.planner.problem import HUGE, LARGE, PlanningProblem, Solution, SolveOptions
from migbench.planner.schedule import Concrete, class_of, concretize, demands_of, finish, lpt_order, schedule


def plan_makespan(prob: PlanningProblem, opts: SolveOptions, budget: float, notes: list[str]) -> Solution:
    jobs = demands_of(prob, unit=False)
    cls = class_of(prob)
    order = lpt_order(prob, jobs)
    lb0 = max(min(class_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    total = sum(c.n * min(class_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    calls = 24  # at most this many relaxation solves: the first, ~20 bisection steps, 3 probes
    # CP-SAT deterministic seconds run about 3x slower than wall seconds here; these calls get
    # roughly half of the budget in wall time.
    per_call = lambda: max(0.02, budget / (6 * calls))  # noqa: E731
    tolerance = 0.002 if len(jobs) <= LARGE else 0.005

    best: tuple[float, Result, Concrete] | None = None
    tried: set[tuple] = set()

    def evaluate(counts: dict[str, list[int]], split: dict[tuple[int, int], int]) -> None:
        nonlocal best
        key = tuple(sorted((k, tuple(v)) for k, v in counts.items())) + tuple(sorted(split.items()))
        if key in tried:
            return
        tried.add(key)
        conc = concretize(prob, counts)
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
                queues = ect_queues(prob, conc, jobs, order, free)
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
                res = schedule(conc, jobs, order, allowed, opts)
            if best is None or res.makespan_s < best[0] - 1e-6:
                best = (res.makespan_s, res, conc)

    status, counts, split = makespan_feasible(prob, max(total, lb0), opts, per_call())
    if counts is not None:
        evaluate(counts, split or {})
    lo, hi = lb0, best[0] if best else 2 * max(total, lb0)
    proven_lb = lb0
    # First a cheap bound: bisection on the linear relaxation (an infeasible LP is a proof too).
    lp_lo, lp_hi = lb0, hi
    while lp_hi - lp_lo > 0.001 * lp_hi:
        mid = (lp_lo + lp_hi) / 2
        if lp_infeasible(prob, mid):
            lp_lo = mid
        else:
            lp_hi = mid
    if lp_lo > lb0 and lp_infeasible(prob, lp_lo):
        proven_lb = lo = lp_lo
    # Layouts rounded from the LP just above its threshold are good starting points too.
    for f in (1.0, 1.03, 1.08):
        _, lp_counts, _ = lp_relaxation(prob, lp_hi * f)
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
        lp_inf, _, cuts = lp_relaxation(prob, mid)
        st, c2, s2 = ("INFEASIBLE", None, None) if lp_inf else makespan_feasible(prob, mid, opts, per_call(), cuts)
        if st == "INFEASIBLE":
            lo = mid
            proven_lb = max(proven_lb, mid)
        elif st == "FEASIBLE" and c2 is not None:
            hi = mid
            evaluate(c2, s2 or {})
            hi = min(hi, best[0])
        else:
            lo = mid  # unknown: search above, but do not count it as a proof
    # Also try the relaxation a little above its threshold: its layouts schedule differently.
    for f in (1.01, 1.03, 1.06):
        st, c2, s2 = makespan_feasible(prob, hi * f, opts, per_call(), lp_relaxation(prob, hi * f)[2])
        if st == "FEASIBLE" and c2 is not None:
            evaluate(c2, s2 or {})
    makespan, res, conc = best
    if proven_lb < makespan * (1 - 1e-9) and len(jobs) <= HUGE:
        res = improve(prob, conc, jobs, res, opts, max_evals=max(20, min(2000, 200000 // max(1, len(jobs)))))
        makespan = res.makespan_s
    bound = min(proven_lb, makespan)
    gap = 0.0 if makespan <= 0 else max(0.0, (makespan - bound) / makespan)
    status = "OPTIMAL" if gap <= 1e-9 else "FEASIBLE"
    assigned, capacity = finish(prob, conc, res, jobs, True)
    return Solution(
        conc.layouts, assigned, {}, status, "makespan_s", makespan, bound, gap, 0.0,
        res.started_at_once, makespan, notes, capacity,
    )
