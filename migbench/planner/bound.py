"""The makespan lower bound: an aggregated relaxation (compute work, memory-time, sharing slots and
time-point cuts per instance type) solved by GLOP and CP-SAT. A T for which it is infeasible is a
proven lower bound for every plan with one fixed layout per GPU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ortools.sat.python import cp_model

from migbench.planner.budget import Budget
from migbench.planner.problem import (
    LAZY_MAX_PAIRS,
    LAZY_PER_TYPE,
    LAZY_ROUNDS,
    MAX_POINTS,
    SCALE,
    PlanningProblem,
    RunClass,
    add_layout_vars,
)


def class_solo(prob: PlanningProblem, c: RunClass, ti: int) -> float:
    t = prob.types[ti]
    return float(c.duration_s or 1.0) * max(1.0, c.compute / t.capacity)


Cut = tuple[int, tuple[tuple[int, int], ...]]  # (K points, ((class index, weight), ...))


def point_cuts(prob: PlanningProblem, T: float, ti: int, cis: Sequence[int], lazy: bool) -> list[Cut]:
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
    solos = {ci: class_solo(prob, prob.classes[ci], ti) for ci in cis}
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


def lazy_ok(prob: PlanningProblem) -> bool:
    """Separating lazy cuts costs about (class, type) pairs x spacings per round; past
    LAZY_MAX_PAIRS it costs more planning time than its tighter bound is worth."""
    return sum(len(c.types) for c in prob.classes) <= LAZY_MAX_PAIRS


def violated_cuts(prob: PlanningProblem, T: float, values: dict[int, dict[int, float]], n_inst: dict[int, float]) -> dict[int, list[Cut]]:
    """The lazy time-point cuts that a (relaxed or integer) solution violates, the worst few per
    type. `values[ti][ci]` = runs of class ci on type ti, `n_inst[ti]` = instances of type ti."""
    out: dict[int, list[Cut]] = {}
    for ti, vals in values.items():
        t = prob.types[ti]
        N = n_inst.get(ti, 0.0)
        scored = []
        for cut in point_cuts(prob, T, ti, sorted(vals), lazy=True):
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


def lp_infeasible(prob: PlanningProblem, T: float) -> bool:
    """True when the linear relaxation of `makespan_feasible` at time T is infeasible (GLOP), which
    proves that no fixed-layout plan finishes within T. Cheap at any scale; weaker than CP-SAT."""
    return lp_relaxation(prob, T)[0]


def glop_layouts(prob: PlanningProblem) -> tuple[Any, dict[str, list[Any]], dict[int, Any]]:
    """A GLOP model with what every layout relaxation shares: per model, a variable per layout
    (how many of its GPUs take it, summing to the GPUs), and per instance type a variable for its
    count (what the layouts give). Returns (solver, layout vars by model, count var by type)."""
    from ortools.linear_solver import pywraplp

    lp = pywraplp.Solver.CreateSolver("GLOP")
    x: dict[str, list[Any]] = {}
    for key, lays in prob.layouts.items():
        g = len(prob.gpus_of[key])
        x[key] = [lp.NumVar(0, g, "") for _ in lays]
        row = lp.Constraint(g, g)
        for v in x[key]:
            row.SetCoefficient(v, 1)
    n_inst: dict[int, Any] = {}
    for ti, t in enumerate(prob.types):
        N = n_inst[ti] = lp.NumVar(0, lp.infinity(), "")
        row = lp.Constraint(0, 0)
        row.SetCoefficient(N, -1)
        for i, (ms, _) in enumerate(prob.layouts[t.model]):
            k = ms.get(t.profile.name, 0)
            if k:
                row.SetCoefficient(x[t.model][i], k)
    return lp, x, n_inst


def _lp_load_rows(lp: Any, prob: PlanningProblem, T: float, ti: int, N: Any, terms: list[tuple[int, Any]]) -> None:
    """Instance type `ti`'s compute-work, memory-time and sharing-slot rows at T (`N`: its count)."""
    inf = lp.infinity()
    t = prob.types[ti]
    work, memt, slot = lp.Constraint(-inf, 0), lp.Constraint(-inf, 0), lp.Constraint(-inf, 0)
    work.SetCoefficient(N, -t.capacity)
    memt.SetCoefficient(N, -1)
    slot.SetCoefficient(N, -1)
    for ci, v in terms:
        c = prob.classes[ci]
        a = class_solo(prob, c, ti)
        work.SetCoefficient(v, float(c.duration_s or 1.0) * c.compute / T)
        memt.SetCoefficient(v, (c.memory_mib / t.memory_mib) * (a / T))
        slot.SetCoefficient(v, a / (c.cap * T))


def lp_relaxation(prob: PlanningProblem, T: float) -> tuple[bool, dict[str, list[int]] | None, dict[int, list[Cut]]]:
    """The linear relaxation at T, with lazy time-point cuts separated until none is violated:
    (infeasible?, layout counts rounded from its solution, the lazy cuts it added). Built row by row
    through GLOP's own API (one call per nonzero), with a variable per instance type for its count,
    so building costs the nonzeros and nothing more."""
    from ortools.linear_solver import pywraplp

    lp, x, n_inst = glop_layouts(prob)
    inf = lp.infinity()
    by_type: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for ci, c in enumerate(prob.classes):
        ok = [ti for ti in c.types if class_solo(prob, c, ti) <= T * (1 + 1e-9)]
        if not ok:
            return True, None, {}
        cover = lp.Constraint(c.n, c.n)
        for ti in ok:  # (runs only go to a type the layout has: implied by the sharing-slot row)
            v = lp.NumVar(0, c.n, "")
            cover.SetCoefficient(v, 1)
            by_type[ti].append((ci, v))
    for ti, terms in by_type.items():
        _lp_load_rows(lp, prob, T, ti, n_inst[ti], terms)
    var_of = {(ti, ci): v for ti, terms in by_type.items() for ci, v in terms}

    def add_cuts(ti: int, cuts: list[Cut]) -> None:
        t, N = prob.types[ti], n_inst[ti]
        for k, weighted in cuts:
            by_slot, by_mem = lp.Constraint(-inf, 0), lp.Constraint(-inf, 0)
            by_slot.SetCoefficient(N, -k)
            by_mem.SetCoefficient(N, -k)
            for ci, w in weighted:
                by_slot.SetCoefficient(var_of[(ti, ci)], w / prob.classes[ci].cap)
                by_mem.SetCoefficient(var_of[(ti, ci)], w * prob.classes[ci].memory_mib / t.memory_mib)

    for ti, terms in by_type.items():
        add_cuts(ti, point_cuts(prob, T, ti, [ci for ci, _ in terms], lazy=False))
    added: dict[int, list[Cut]] = defaultdict(list)
    for rnd in range(LAZY_ROUNDS + 1):
        st = lp.Solve()
        if st == pywraplp.Solver.INFEASIBLE:
            return True, None, dict(added)
        if st not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return False, None, dict(added)
        if rnd == LAZY_ROUNDS or not lazy_ok(prob):
            break
        values = {ti: {ci: v.solution_value() for ci, v in terms} for ti, terms in by_type.items()}
        violated = violated_cuts(prob, T, values, {ti: n_inst[ti].solution_value() for ti in by_type})
        if not violated:
            break
        for ti, cuts in violated.items():
            add_cuts(ti, cuts)
            added[ti].extend(cuts)
    return False, _rounded_counts(prob, x), dict(added)


def _rounded_counts(prob: PlanningProblem, x: dict[str, list[Any]]) -> dict[str, list[int]]:
    """The LP's layout counts rounded to whole GPUs: each rounded down, then the GPUs left over go
    to the largest fractions (ties: the first layout)."""
    counts: dict[str, list[int]] = {}
    for key, vs in x.items():
        vals = [v.solution_value() for v in vs]
        g = len(prob.gpus_of[key])
        base = [int(v + 1e-6) for v in vals]
        rest = sorted(range(len(vals)), key=lambda i: (-(vals[i] - base[i]), i))
        for i in rest[: g - sum(base)]:
            base[i] += 1
        counts[key] = base
    return counts


def _cp_load_rows(m: cp_model.CpModel, prob: PlanningProblem, T: float, ti: int, N: Any, terms: list[tuple[int, Any]]) -> None:
    """Instance type `ti`'s rows at T in CP-SAT (`N`: its count): runs only where the layout has
    the type, and its compute work, memory-time and sharing slots, scaled and rounded to stay a
    relaxation."""
    t = prob.types[ti]
    for ci, v in terms:
        m.add(v <= prob.classes[ci].n * N)  # runs only go to a type the layout has
    work, memt, slot = [], [], []
    for ci, v in terms:
        c = prob.classes[ci]
        a = class_solo(prob, c, ti)
        d = float(c.duration_s or 1.0)
        work.append(int(math.floor(SCALE * d * c.compute / T)) * v)
        memt.append(int(math.floor(SCALE * (c.memory_mib / t.memory_mib) * (a / T))) * v)
        slot.append(int(math.floor(SCALE * a / (c.cap * T))) * v)
    m.add(sum(work) <= int(math.ceil(SCALE * t.capacity)) * N)
    m.add(sum(memt) <= SCALE * N)
    m.add(sum(slot) <= SCALE * N)


def makespan_feasible(
    prob: PlanningProblem, T: float, budget: Budget, seconds: float, cuts: dict[int, list[Cut]] | None = None
) -> tuple[str, dict[str, list[int]] | None, dict[tuple[int, int], int] | None]:
    """Is there a layout and class->type split whose aggregate load fits in time T?

    Necessary conditions per instance type (all valid for any schedule of length T, so
    INFEASIBLE proves that no plan on a fixed layout finishes within T):
      compute work   sum n*d*u            <= capacity * N * T
      memory-time    sum n*m*solo         <= M * N * T
      sharing slots  sum n*solo/cap       <= N * T
      time points    see `point_cuts`: at K time points spaced L apart, a run of solo time a
                     is running at ceil(a/L) - 1 of them at least, so
                     sum n*w/cap <= K*N and sum n*w*m <= K*M*N
      and a run only goes where its solo time is <= T.
    Coefficients are rounded down (right-hand sides up) so the model stays a relaxation. `cuts`
    are lazy time-point cuts to start from (the LP's at the same T); one more round is separated
    from CP-SAT's own solution.
    """
    m = cp_model.CpModel()
    x, n_inst = add_layout_vars(m, prob)
    n: dict[tuple[int, int], Any] = {}
    for ci, c in enumerate(prob.classes):
        ok = [ti for ti in c.types if class_solo(prob, c, ti) <= T * (1 + 1e-9)]
        if not ok:
            return "INFEASIBLE", None, None
        for ti in ok:
            n[(ci, ti)] = m.new_int_var(0, c.n, f"n[{ci},{ti}]")
        m.add(sum(n[(ci, ti)] for ti in ok) == c.n)
    by_type: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for (ci, ti), v in n.items():
        by_type[ti].append((ci, v))
    for ti, terms in by_type.items():
        _cp_load_rows(m, prob, T, ti, n_inst[ti], terms)

    def add_cuts(ti: int, cuts: list[Cut]) -> None:
        t, N = prob.types[ti], n_inst[ti]
        for k, weighted in cuts:
            m.add(sum((w * SCALE // prob.classes[ci].cap) * n[(ci, ti)] for ci, w in weighted) <= k * SCALE * N)
            m.add(sum(int(math.floor(w * SCALE * prob.classes[ci].memory_mib / t.memory_mib)) * n[(ci, ti)] for ci, w in weighted) <= k * SCALE * N)

    for ti, terms in by_type.items():
        add_cuts(ti, point_cuts(prob, T, ti, [ci for ci, _ in terms], lazy=False) + (cuts or {}).get(ti, []))
    # Prefer, among feasible splits, sending runs to their fastest instance (a mild tie-break).
    m.minimize(sum(int(round(100 * class_solo(prob, prob.classes[ci], ti) / (prob.classes[ci].duration_s or 1.0))) * v for (ci, ti), v in n.items()))
    for rnd in range(2):
        s = budget.solver(seconds)
        st = s.solve(m)
        budget.solved(s, st)
        if st == cp_model.INFEASIBLE:
            return "INFEASIBLE", None, None
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return "UNKNOWN", None, None
        if rnd == 1 or not lazy_ok(prob):
            break
        values = {ti: {ci: float(s.value(v)) for ci, v in terms} for ti, terms in by_type.items()}
        violated = violated_cuts(prob, T, values, {ti: float(s.value(n_inst[ti])) for ti in by_type})
        if not violated:
            break
        for ti, new in violated.items():
            add_cuts(ti, new)
    counts = {key: [int(s.value(v)) for v in vs] for key, vs in x.items()}
    split = {k: int(s.value(v)) for k, v in n.items() if s.value(v)}
    return "FEASIBLE", counts, split


# ---------------------------------------------------------------------------------------------
