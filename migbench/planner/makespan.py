"""Objective 2, makespan (every run has a duration).

1. The bound: bisection on the linear relaxation (GLOP), then on its integer version (CP-SAT); an
   infeasible T is a proof that no fixed-layout plan finishes within T.
2. Candidate layouts, from the relaxations' solutions near their thresholds, each turned into queues
   by list scheduling, earliest-completion and best insertion; the best plan is kept.
3. Small problems are solved exactly (`exact`) when the budget allows.
4. A neighbourhood search over layouts (`layouts`): one GPU re-cut, its runs re-placed.
5. A local search on the queues (`improve`).

Every phase's effort comes from the deterministic budget (`budget`), never from the clock.
"""

from __future__ import annotations

from migbench.duration import Demand, Slot
from migbench.duration.replay import Result, list_schedule
from migbench.errors import MigbenchError
from migbench.planner import configlp
from migbench.planner.bound import class_solo, lp_relaxation, makespan_feasible
from migbench.planner.budget import CPSAT_BUILD_S, LP_S, PLAY_S, REPLAY_S_PER_RUN, Budget
from migbench.planner.exact import small_enough, solve_exact
from migbench.planner.improve import (
    TARGETS_PER_TYPE,
    Evaluator,
    InstanceQueues,
    better,
    construct,
    ect_queues,
    iterated_search,
    local_search,
)
from migbench.planner.layouts import layout_search
from migbench.planner.lns import LnsStats, lns_search
from migbench.planner.problem import PlanningProblem, Solution, SolveOptions
from migbench.planner.schedule import Concrete, class_of, concretize, demands_of, finish, lpt_order

LP_TOLERANCE = 0.001  # the LP bisection stops when its interval is this narrow (relative)
CP_TOLERANCE = 0.002  # and the CP-SAT bisection at this
MAX_LP_STEPS = 30
CP_MAX_PAIRS = 1000  # (class, instance type) pairs past which the CP-SAT bisection is skipped
LNS_SHARE = 0.9  # of the budget left after the exact phase, for the large neighbourhoods (the rest: kicks)
LAYOUT_SHARE = 0.4  # of the budget left after the bound, for one-GPU layout moves (small problems: 0.3)
LAST_STATS = LnsStats()  # what the large neighbourhoods of this process kept (bench/run.py reports it)


class _Search:
    """The best plan found so far and the layouts already tried."""

    def __init__(self, prob: PlanningProblem, ev: Evaluator, order: list[str], budget: Budget):
        self.prob = prob
        self.ev = ev
        self.order = order
        self.budget = budget
        self.best: InstanceQueues | None = None
        self.tried: set[tuple] = set()
        self.preferred: list[tuple[str, int]] = []  # (model, layout index) the relaxations used
        self.cls = class_of(prob)
        self.class_types = [set(c.types) for c in prob.classes]

    @property
    def makespan(self) -> float:
        return self.best.makespan() if self.best is not None else float("inf")

    def offer(self, st: InstanceQueues | None) -> None:
        if st is None:
            return
        if self.best is None or better(st.profile(), self.best.profile()):
            self.best = st
            self.budget.report(incumbent=st.makespan())

    def _allowed(self, split: dict[tuple[int, int], int]) -> dict[str, set[int]]:
        """{run id: the instance types it may use}: a class's first runs get the types the split
        sends them to (in the split's order), the rest every type of the class."""
        allowed: dict[str, set[int]] = {}
        quotas: dict[int, list[tuple[int, int]]] = {}
        for (cj, ti), k in sorted(split.items()):
            quotas.setdefault(cj, []).append((ti, k))
        for ci, c in enumerate(self.prob.classes):
            rids = list(c.runs)
            for ti, k in quotas.get(ci, []):
                only = {ti}
                for rid in rids[:k]:
                    allowed[rid] = only
                rids = rids[k:]
            for rid in rids:
                allowed[rid] = self.class_types[ci]
        return allowed

    def evaluate(self, counts: dict[str, list[int]], split: dict[tuple[int, int], int]) -> None:
        """Turn layout counts (and a class -> type split) into queues, several ways; keep the best."""
        for key, cs in sorted(counts.items()):
            for i, k in enumerate(cs):
                if k and (key, i) not in self.preferred:
                    self.preferred.append((key, i))
        tkey = tuple(sorted((k, tuple(v)) for k, v in counts.items())) + tuple(sorted(split.items()))
        if tkey in self.tried or (self.best is not None and self.budget.expired()):
            return  # past the hard stop, only a first plan is still made
        self.tried.add(tkey)
        prob, ev, jobs = self.prob, self.ev, self.ev.jobs
        conc = concretize(prob, counts)
        present = {conc.slot_type[s.key] for s in conc.slots}
        free = {rid: self.class_types[self.cls[rid]] for rid in jobs}  # one set per class, shared
        if any(not (a & present) for a in free.values()):
            return  # some run has no instance of its types in this layout
        allowed = self._allowed(split)
        n = len(jobs)
        variants = ["split"] if split and all(a & present for a in allowed.values()) else []
        variants += ["free", "ect"]
        if _construct_cost(prob, n) <= 0.2 * self.budget.left():
            variants.append("insert")
        for variant in variants:
            if self.best is not None and self.budget.expired():
                return
            if variant == "insert":
                self.offer(construct(conc, self.order, ev))
                continue
            if variant == "ect":
                queues = ect_queues(prob, conc, jobs, self.order, free)
                if sum(len(q) for q in queues.values()) != n:
                    continue
            else:
                res = _list_schedule(conc, ev, self.order, allowed if variant == "split" else free)
                queues = res.order
            self.offer(ev.state(conc, queues))


def _list_schedule(conc: Concrete, ev: Evaluator, order: list[str], allowed: dict[str, set[int]]) -> Result:
    ev.budget.charge(REPLAY_S_PER_RUN * len(order))

    def ok(j: Demand, s: Slot) -> bool:
        return conc.slot_type[s.key] in allowed[j.id]

    keys: dict[int, tuple[str, ...]] = {}

    def types_of(j: Demand) -> tuple[str, ...]:
        a = allowed[j.id]
        k = keys.get(id(a))
        if k is None:
            k = keys[id(a)] = tuple(str(ti) for ti in sorted(a))
        return k

    return list_schedule([ev.jobs[r] for r in order], conc.slots, ok, interference=ev.interference, types_of=types_of)


def _construct_cost(prob: PlanningProblem, n: int) -> float:
    """Reference seconds of a best insertion: per run, a few instances of each type it may use, each
    played with a short queue."""
    pairs = sum(len(c.types) * c.n for c in prob.classes)
    return pairs * TARGETS_PER_TYPE * (PLAY_S[0] + 4 * PLAY_S[1])


def _pairs(prob: PlanningProblem) -> int:
    return sum(len(c.types) for c in prob.classes)


def _lp_bisection(prob: PlanningProblem, budget: Budget, lb0: float, total: float, lp_cost: float) -> tuple[float, float]:
    """Bisection on the linear relaxation (an infeasible LP is a proof): (the proven bound, the
    lowest T found feasible)."""
    steps_allowed = max(3, min(MAX_LP_STEPS, int(budget.share(0.15) / lp_cost)))
    lo, hi = lb0, 2 * max(total, lb0)
    steps = 0
    while lp_relaxation(prob, hi)[0] and steps < 8:  # make sure the top is feasible
        budget.charge(lp_cost)
        lo, hi, steps = hi, 2 * hi, steps + 1
    proven = lo
    while hi - lo > LP_TOLERANCE * hi and steps < steps_allowed and not budget.expired():
        steps += 1
        mid = (lo * hi) ** 0.5 if hi > 2 * lo else (lo + hi) / 2  # geometric while far apart
        budget.charge(lp_cost)
        if lp_relaxation(prob, mid)[0]:
            lo = proven = mid
        else:
            hi = mid
    return proven, hi


def _config_lp_bisection(prob: PlanningProblem, opts: SolveOptions, budget: Budget, search: _Search, proven: float) -> float:
    """The configuration LP (which runs can share an instance, at the exact rate; column
    generation), bisected between the proof and the best plan; its layouts are evaluated. The bound proven."""
    if not (configlp.usable(prob) and search.best is not None):
        return proven
    budget.report("bound")
    cfg_stop = budget.spent + budget.share(0.12)
    lo, hi = proven, search.makespan
    while hi - lo > CP_TOLERANCE * hi and budget.spent < cfg_stop and not budget.expired():
        mid = (lo + hi) / 2
        verdict, counts = configlp.config_lp(prob, mid, budget, opts.interference)
        if verdict is None:
            break
        if verdict:
            lo = proven = mid
            budget.report(bound=proven)
        else:
            hi = mid
            if counts is not None:
                search.evaluate(counts, {})
    return proven


def _cp_bisection(
    prob: PlanningProblem, budget: Budget, search: _Search, proven: float, lp_cost: float, cp_build: float, per_call: float, cp_stop: float
) -> float:
    """Bisection on the integer relaxation (CP-SAT) between the proof and the best plan, then the
    relaxation a little above its threshold (its layouts schedule differently). The bound proven."""
    budget.report("bound")
    lo, hi = proven, search.makespan
    while hi - lo > CP_TOLERANCE * hi and budget.spent < cp_stop and not budget.expired():
        mid = (lo + hi) / 2
        lp_inf, _, cuts = lp_relaxation(prob, mid)
        budget.charge(lp_cost)
        if not lp_inf:
            budget.charge(cp_build)
        st, c2, s2 = ("INFEASIBLE", None, None) if lp_inf else makespan_feasible(prob, mid, budget, per_call, cuts)
        if st == "INFEASIBLE":
            lo = proven = max(proven, mid)
            budget.report(bound=proven)
        elif st == "FEASIBLE" and c2 is not None:
            hi = mid
            search.evaluate(c2, s2 or {})
            hi = min(hi, search.makespan)
        else:
            lo = mid  # unknown: search above, but do not count it as a proof
    # The relaxation a little above its threshold: its layouts schedule differently.
    for f in (1.01, 1.03, 1.06):
        if budget.spent >= cp_stop or budget.expired():
            break
        budget.charge(cp_build + lp_cost)
        st, c2, s2 = makespan_feasible(prob, hi * f, budget, per_call, lp_relaxation(prob, hi * f)[2])
        if st == "FEASIBLE" and c2 is not None:
            search.evaluate(c2, s2 or {})
    return proven


def _improve(
    prob: PlanningProblem, ev: Evaluator, budget: Budget, search: _Search, best: InstanceQueues, proven: float, rank: dict[str, int]
) -> tuple[InstanceQueues, float]:
    """Steps 4 to 6 of plan_makespan, while the best plan is not proven optimal: (the best plan, the bound proven)."""
    # 4. Layouts one GPU at a time, then the queues.
    small = small_enough(prob)
    if proven < best.makespan() * (1 - 1e-9) and not budget.expired():
        budget.report("search")
        best = layout_search(best, prob, ev, budget.share(0.3 if small else LAYOUT_SHARE), search.preferred, rank)
        local_search(best, ev, budget.share(0.3))
        budget.report(incumbent=best.makespan())

    # 5. Small problems: the complete configuration model, exactly (a good incumbent prunes it).
    if small and proven < best.makespan() * (1 - 1e-9) and not budget.expired():
        budget.report("exact")
        exact, exact_lb = solve_exact(prob, ev, best, proven, budget.share(0.8))
        if exact is not None and better(exact.profile(), best.profile()):
            best = exact
            budget.report(incumbent=best.makespan())
        proven = max(proven, min(exact_lb, best.makespan()))
        budget.report(bound=proven)

    # 6. What is left: large neighbourhoods (destroy and repair), then kicks and local search from
    # the best plan (both deterministic pseudo-random).
    if proven < best.makespan() * (1 - 1e-9) and not budget.expired():
        budget.report("search")
        best = lns_search(best, ev, budget.share(LNS_SHARE), proven, LAST_STATS)
        budget.report(incumbent=best.makespan())
    if proven < best.makespan() * (1 - 1e-9) and not budget.expired():
        best = iterated_search(best, ev, budget.left(), proven)
        budget.report(incumbent=best.makespan())
    return best, proven


def plan_makespan(prob: PlanningProblem, opts: SolveOptions, budget: Budget, notes: list[str]) -> Solution:
    LAST_STATS.__init__()  # type: ignore[misc]  # this plan's own counts
    jobs = demands_of(prob, unit=False)
    order = lpt_order(prob, jobs)
    rank = {rid: i for i, rid in enumerate(order)}
    ev = Evaluator(prob, jobs, opts.interference, budget)
    search = _Search(prob, ev, order, budget)
    lb0 = max(min(class_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    total = sum(c.n * min(class_solo(prob, c, ti) for ti in c.types) for c in prob.classes)
    budget.report("bound", bound=lb0)

    # 1. The LP bound: bisection on the linear relaxation (an infeasible LP is a proof).
    pairs = _pairs(prob)
    lp_cost = LP_S[0] + LP_S[1] * pairs
    cp_build = CPSAT_BUILD_S[0] + CPSAT_BUILD_S[1] * pairs
    proven, hi = _lp_bisection(prob, budget, lb0, total, lp_cost)
    budget.report("layouts", bound=proven)

    # 2. Layouts rounded from the LP just above its threshold.
    for f in (1.0, 1.03, 1.08):
        budget.charge(lp_cost)
        _, counts, _ = lp_relaxation(prob, hi * f)
        if counts is not None:
            search.evaluate(counts, {})
    # The configuration LP: which runs can share an instance, at the exact rate (column generation).
    proven = _config_lp_bisection(prob, opts, budget, search, proven)
    # CP-SAT on the integer relaxation pays where a call can afford several times its model's
    # building; past that (thousands of class x type pairs) its budget goes to the search instead.
    cp_allow = budget.share(0.25)
    per_call = max(0.0, cp_allow / 12 - cp_build)
    if pairs > CP_MAX_PAIRS:
        cp_allow = 0.0
    cp_stop = budget.spent + cp_allow
    if search.best is None:  # the LP gave nothing usable: CP-SAT at the serial time
        budget.charge(cp_build)
        status, counts, split = makespan_feasible(prob, max(total, lb0), budget, per_call)
        if counts is not None:
            search.evaluate(counts, split or {})
    if search.best is None:
        raise MigbenchError("the solver found no layout for the sweep", hint="raise --time-limit")

    # 3. Bisection on the integer relaxation between the proof and the best plan.
    proven = _cp_bisection(prob, budget, search, proven, lp_cost, cp_build, per_call, cp_stop)
    best = search.best
    assert best is not None

    # 4.-6. Layouts one GPU at a time, the exact model for small problems, then the queues.
    best, proven = _improve(prob, ev, budget, search, best, proven, rank)
    res = ev.result(best)
    makespan = res.makespan_s
    bound = min(proven, makespan)
    gap = 0.0 if makespan <= 0 else max(0.0, (makespan - bound) / makespan)
    status = "OPTIMAL" if gap <= 1e-9 else "FEASIBLE"
    conc = best.concrete()
    assigned, capacity = finish(prob, conc, res, jobs, True)
    return Solution(
        conc.layouts,
        assigned,
        {},
        status,
        "makespan_s",
        makespan,
        bound,
        gap,
        0.0,
        res.started_at_once,
        makespan,
        notes,
        capacity,
    )
