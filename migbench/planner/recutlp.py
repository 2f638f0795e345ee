"""A makespan lower bound for a host re-cut freely while runs arrive: a time-indexed configuration
LP, by column generation (issue 21's re-cut bound, tightened by the catalogue's integrality).

Runs are taken in classes of identical runs c (arrival r_c, count n_c, work w_c, compute u_c,
memory, sharing cap, allowed profiles). The arrival times a_0 < ... < a_K cut the time line into
intervals I_i = [a_i, a_{i+1}) and the last one I_K = [a_K, T], T the makespan; len_i their lengths
(len_K = T - a_K). An instance *type* is a (GPU model, usable profile) pair, of memory M_p and
capacity kappa_p (`duration.instance_capacity`); a *pattern* S on it is a multiset of classes that
fits M_p and everyone's sharing cap, and each run of S progresses at the duration model's rate
rate_p(S) = min(1, kappa_p / sum u) / (1 + interference * (|S| - 1)) (`configlp._rate`).

Take any schedule that ends by T, re-cutting any GPU at any time for free, no run started before
its arrival, runs even moved or paused at will. At each moment every GPU of model g holds a legal
layout of usable profiles, a subset of a maximal one (legality is kept when instances are removed,
and `maximal_layouts` holds every maximal one), and each instance runs one pattern (maybe empty).
Let x[g,i,L] be the GPU-time in interval i of model g's GPUs whose layout lies in the maximal
layout L (one chosen per moment), and y[g,i,p,S] the instance-time of type (g,p) running S in I_i.
Then:

    sum_L x[g,i,L] <= G_g * len_i                                  GPUs of the model, all along I_i
    sum_S y[g,i,p,S] <= sum_L count_L(p) * x[g,i,L]                instances the layouts give
    sum_{i >= i(c)} sum_{g,p,S} count_S(c) * rate_p(S) * y >= n_c * w_c      each run's work is done,
                                                                   after its arrival only
    sum_{g,p,S} count_S(c) * y[g,i,p,S] <= n_c * len_i             a run is in one place at a time
    T >= r_c + s_c                                                 s_c: its best solo time, w_c *
                                                                   max(1, u_c / kappa) on the best type

so (T, x, y) is feasible and the LP's least T is at most the schedule's makespan. The LP is solved
by column generation (patterns priced per type and interval by a bounded depth-first search). At
every round whose pricing was complete (no pattern left out for want of effort), the restricted
LP's optimum z and each type's best reduced gain s_{g,i,p} >= 0 give the Lagrangian bound
z - sum s_{g,i,p} * Ymax_{g,i,p}, Ymax the most instance-time the type can have in I_i
(G_g * len_i * the most instances of p a layout holds, len_K taken at T = z, above the LP's
optimum): every column's reduced cost is at least -s, so the LP's optimum is at least that. When
no pattern prices out, s = 0 and the bound is z. The answer is the best such bound, less a
relative 1e-6 for the solver's tolerances; None when no round's pricing was complete (pricing
that runs out of effort proves nothing) or the problem is too large to try.

What it does not see: a real run stays on one instance from its start to its end, the instance
kept all along; here runs may pause and move, so the memory freed when a run ends is re-packed at
once. On bench/living.py's workloads the LP is about 1 % above the volume bound
(`forecast.living.volume_bound`): the sizes of instances, the legal layouts and the sharing caps
cost little there; whatever separates the bound from a played schedule is elsewhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migbench.duration import Demand, instance_capacity
from migbench.duration.model import ComputeBasis
from migbench.planner.configlp import _rate
from migbench.planner.fleet import FleetGpu
from migbench.planner.recut import maximal_layouts, usable_profiles

MAX_ROUNDS = 80
PRICE_NODES = 60000  # search nodes per type, interval and round
TOTAL_NODES = 1_500_000  # search nodes per bound, all rounds together (seconds)
MAX_COLUMNS_PER_PRICE = 50
MAX_PAIRS = 4000  # (class, type, interval) triples past which the LP is not tried
MARGIN = 1e-6  # relative: the solver's tolerances
STOP_GAP = 1e-4  # relative gap between the restricted LP and its Lagrangian bound that ends the rounds


@dataclass(frozen=True)
class RunClass:
    """Identical runs: arrival, count and what the duration model needs of them."""

    arrival_s: float
    n: int
    work_s: float
    compute: float
    memory_mib: int
    cap: int
    profiles: tuple[str, ...] | None


@dataclass(frozen=True)
class _Type:
    model: str
    profile: str
    memory_mib: int
    capacity: float
    most: int  # the most instances of it one layout holds


def run_classes(runs: Sequence[tuple[float, Demand]]) -> list[RunClass]:
    """(arrival, demand) pairs grouped into classes of identical runs, in a deterministic order."""
    counts: dict[tuple, int] = {}
    for at, d in runs:
        key = (at, d.work_s, d.compute, d.memory_mib, d.cap, d.profiles)
        counts[key] = counts.get(key, 0) + 1
    out = [RunClass(k[0], n, k[1], k[2], k[3], k[4], k[5]) for k, n in counts.items()]
    return sorted(out, key=lambda c: (c.arrival_s, -c.work_s, -c.memory_mib, -c.compute, c.cap, c.profiles or ()))


def _types_and_layouts(fleet: Sequence[FleetGpu], basis: ComputeBasis) -> tuple[list[_Type], dict[str, tuple[int, list[dict[int, int]]]]]:
    """Instance types per model, and per model its GPU count and its maximal layouts as counts per
    type (layouts with equal counts once)."""
    types: list[_Type] = []
    layouts: dict[str, tuple[int, list[dict[int, int]]]] = {}
    for g in sorted(fleet, key=lambda g: g.index):
        m = g.model
        if m.key in layouts:
            layouts[m.key] = (layouts[m.key][0] + 1, layouts[m.key][1])
            continue
        vectors: list[dict[str, int]] = []
        for lay in maximal_layouts(m):
            vec: dict[str, int] = {}
            for pl in lay:
                vec[pl.profile] = vec.get(pl.profile, 0) + 1
            if vec not in vectors:
                vectors.append(vec)
        index: dict[str, int] = {}
        for p in usable_profiles(m):
            most = max((v.get(p.name, 0) for v in vectors), default=0)
            if most:
                index[p.name] = len(types)
                types.append(_Type(m.key, p.name, int(p.memory_mib or 0), instance_capacity(m, p, basis), most))
        layouts[m.key] = (1, [{index[name]: n for name, n in v.items() if name in index} for v in vectors])
    return types, layouts


def _fits(c: RunClass, t: _Type) -> bool:
    return c.memory_mib <= t.memory_mib and (c.profiles is None or t.profile in c.profiles)


def _solo(c: RunClass, t: _Type) -> float:
    return c.work_s * max(1.0, c.compute / t.capacity) if t.capacity > 0 else float("inf")


Pattern = tuple[tuple[int, int], ...]  # (class index, how many), sorted
Prices = tuple[float, dict[int, float], dict[int, float]]  # an instance-time dual, work duals, occupancy duals


class _Master:
    """The restricted LP: T, the layout-time variables, the rows above and the patterns so far.
    Times are in `unit` seconds (the longest solo time), so the LP's numbers stay near 1."""

    def __init__(self, classes: list[RunClass], types: list[_Type], layouts: dict[str, tuple[int, list[dict[int, int]]]], starts: list[float], t_lo: float):
        from ortools.linear_solver import pywraplp

        self.classes, self.types, self.starts = classes, types, starts
        self.lp = lp = pywraplp.Solver.CreateSolver("GLOP")
        inf = lp.infinity()
        last = len(starts) - 1
        self.T = lp.NumVar(t_lo, inf, "T")
        obj = lp.Objective()
        obj.SetCoefficient(self.T, 1)
        obj.SetMinimization()
        self.gpus = {key: n for key, (n, _) in layouts.items()}
        self.inst_row: dict[tuple[int, int], Any] = {}
        for i in range(len(starts)):
            for ti in range(len(types)):
                self.inst_row[(ti, i)] = lp.Constraint(-inf, 0)
            for n, vectors in layouts.values():
                row = self._timed_row(i, n)
                for vec in vectors:
                    x = lp.NumVar(0, inf, "")
                    row.SetCoefficient(x, 1)
                    for ti, k in vec.items():
                        self.inst_row[(ti, i)].SetCoefficient(x, -k)
        self.first = {ci: starts.index(c.arrival_s) for ci, c in enumerate(classes)}
        self.work_row = {ci: lp.Constraint(c.n * c.work_s, inf) for ci, c in enumerate(classes)}
        self.occ_row = {(ci, i): self._timed_row(i, c.n) for ci, c in enumerate(classes) for i in range(self.first[ci], last + 1)}
        self.eligible = {
            (ti, i): [ci for ci, c in enumerate(classes) if self.first[ci] <= i and _fits(c, t)] for ti, t in enumerate(types) for i in range(last + 1)
        }
        self.seen: set[tuple[int, int, Pattern]] = set()

    def length(self, i: int, T: float) -> float:
        return (self.starts[i + 1] if i + 1 < len(self.starts) else T) - self.starts[i]

    def _timed_row(self, i: int, n: int) -> Any:
        """A row `... <= n * len_i`: a constant for the earlier intervals, n * (T - a_K) for the last."""
        if i + 1 < len(self.starts):
            return self.lp.Constraint(-self.lp.infinity(), n * (self.starts[i + 1] - self.starts[i]))
        row = self.lp.Constraint(-self.lp.infinity(), -n * self.starts[i])
        row.SetCoefficient(self.T, -n)
        return row

    def add(self, ti: int, i: int, pat: Pattern, interference: float) -> bool:
        if (ti, i, pat) in self.seen:
            return False
        self.seen.add((ti, i, pat))
        t = self.types[ti]
        k = sum(n for _, n in pat)
        r = _rate(sum(self.classes[ci].compute * n for ci, n in pat), k, t.capacity, interference)
        y = self.lp.NumVar(0, self.lp.infinity(), "")
        self.inst_row[(ti, i)].SetCoefficient(y, 1)
        for ci, n in pat:
            self.work_row[ci].SetCoefficient(y, n * r)
            self.occ_row[(ci, i)].SetCoefficient(y, n)
        return True

    def solve(self) -> float | None:
        from ortools.linear_solver import pywraplp

        if self.lp.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        return float(self.T.solution_value())

    def prices(self, ti: int, i: int) -> Prices:
        """At the last solve: the type's instance-time dual, and per eligible class its work dual
        and its occupancy dual in the interval. A pattern's reduced gain is lam + sum n (rate pi + sigma)."""
        cis = self.eligible[(ti, i)]
        return (
            self.inst_row[(ti, i)].dual_value(),
            {ci: self.work_row[ci].dual_value() for ci in cis},
            {ci: self.occ_row[(ci, i)].dual_value() for ci in cis},
        )


def _first_patterns(m: _Master) -> list[tuple[int, int, Pattern]]:
    """Every class alone, and as many of it as may share, on every type it fits, in every interval from its arrival."""
    out: list[tuple[int, int, Pattern]] = []
    for (ti, i), cis in m.eligible.items():
        t = m.types[ti]
        for ci in cis:
            c = m.classes[ci]
            out.append((ti, i, ((ci, 1),)))
            most = min(c.cap, c.n, t.memory_mib // max(1, c.memory_mib))
            if most > 1:
                out.append((ti, i, ((ci, most),)))
    return out


def _price(m: _Master, ti: int, i: int, prices: Prices, interference: float, tol: float, limit: int) -> tuple[list[Pattern], float, int]:
    """The best few patterns of type `ti` in interval `i` by reduced gain, by a depth-first search
    over the classes with a positive work dual (the others only lose), pruned by a bound on what any
    extension can reach: rate <= min(1, kappa / U) caps the gain at min(P + room * best pi,
    kappa * max(P / U, best pi / u)) (a mediant). Returns (patterns, the best gain, the nodes searched:
    past `limit`, the search was cut short)."""
    t = m.types[ti]
    lam, pi, sig = prices
    cls = sorted((ci for ci, p in pi.items() if p > 1e-12), key=lambda ci: (-pi[ci], ci))
    if not cls:
        return [], lam, 0
    classes = m.classes
    ratio = [pi[ci] / classes[ci].compute if classes[ci].compute > 0 else float("inf") for ci in cls]
    best_ratio = ratio[:]
    for j in range(len(cls) - 2, -1, -1):
        best_ratio[j] = max(best_ratio[j], best_ratio[j + 1])
    least_mem = [classes[ci].memory_mib for ci in cls] + [0]
    for j in range(len(cls) - 1, -1, -1):
        least_mem[j] = min(least_mem[j], least_mem[j + 1]) if j + 1 < len(cls) else least_mem[j]
    heap: list[tuple[float, Pattern]] = []
    chosen: list[tuple[int, int]] = []
    nodes = 0
    best = lam  # the empty pattern's gain
    floor = tol  # what a pattern must beat to enter the heap: tol, then the heap's least once full
    kappa, memory = t.capacity, t.memory_mib

    def rec(j0: int, mem: int, k: int, mincap: int, u: float, p: float, q: float) -> None:
        nonlocal nodes, best, floor
        if k >= mincap or mem + least_mem[j0] > memory:
            return
        ratio_now = p / u if u > 0 else 0.0
        for j in range(j0, len(cls)):
            c = classes[cls[j]]
            if mem + c.memory_mib > memory or k >= c.cap:
                continue
            # what any pattern adding classes from j on can reach (pi and the best ratio only fall with j)
            reach = min(p + (mincap - k) * pi[cls[j]], kappa * max(ratio_now, best_ratio[j]))
            if lam + q + reach / (1.0 + interference * k) <= floor or nodes > limit:
                return
            for n in range(min(c.n, (memory - mem) // max(1, c.memory_mib), min(mincap, c.cap) - k), 0, -1):
                nodes += 1
                chosen.append((cls[j], n))
                uu, pp, qq = u + n * c.compute, p + n * pi[cls[j]], q + n * sig[cls[j]]
                score = lam + _rate(uu, k + n, kappa, interference) * pp + qq
                best = max(best, score)
                if score > floor:
                    heapq.heappush(heap, (score, tuple(chosen)))
                    if len(heap) > MAX_COLUMNS_PER_PRICE:
                        heapq.heappop(heap)
                    if len(heap) == MAX_COLUMNS_PER_PRICE:
                        floor = max(tol, heap[0][0])
                rec(j + 1, mem + n * c.memory_mib, k + n, min(mincap, c.cap), uu, pp, qq)
                chosen.pop()

    rec(0, 0, 0, 10**9, 0.0, 0.0, 0.0)
    return [pat for _, pat in sorted(heap, reverse=True)], best, nodes


def recut_lp_bound(
    fleet: Sequence[FleetGpu],
    runs: Sequence[tuple[float, Demand]],
    compute_basis: ComputeBasis = ComputeBasis.SM,
    interference: float = 0.0,
    at_least: float = 0.0,
) -> float | None:
    """The time-indexed configuration LP's bound on the makespan (seconds) of any schedule of
    `runs` ((arrival, demand) pairs) on `fleet`, re-cuts free and at any time (the module's
    docstring proves it); None when nothing was proven or the LP cannot beat `at_least` (a bound
    known already). Runs that fit no usable profile are left out."""
    types, layouts = _types_and_layouts(fleet, compute_basis)
    fitting = [c for c in run_classes(runs) if any(_fits(c, t) for t in types)]
    if not fitting:
        return None
    solo = {c: min(_solo(c, t) for t in types if _fits(c, t)) for c in fitting}
    unit = max(solo.values())
    scaled = [RunClass(c.arrival_s / unit, c.n, c.work_s / unit, c.compute, c.memory_mib, c.cap, c.profiles) for c in fitting]
    starts = sorted({c.arrival_s for c in scaled})
    if sum(len(m_) for m_ in ([ci for ci, c in enumerate(scaled) if _fits(c, t)] for t in types)) * len(starts) > MAX_PAIRS:
        return None
    t_lo = max(c.arrival_s + solo[f] / unit for c, f in zip(scaled, fitting))
    m = _Master(scaled, types, layouts, starts, t_lo)
    for ti, i, pat in _first_patterns(m):
        m.add(ti, i, pat, interference)
    proven = _rounds(m, interference, at_least / unit)
    return None if proven is None else proven * unit * (1 - MARGIN)


def _rounds(m: _Master, interference: float, at_least: float) -> float | None:
    """Column generation: the best Lagrangian bound over the rounds whose pricing was complete,
    within `TOTAL_NODES` of pricing search. Stops (None) once the restricted LP's optimum, above
    the LP's, is at most `at_least`."""
    proven: float | None = None
    tol = 1e-9
    spent = 0
    for _ in range(MAX_ROUNDS):
        z = m.solve()
        if z is None:
            return proven
        if z <= at_least:
            return None
        complete, loss = True, 0.0
        # Every dual first: adding a column changes the model, and its duals with it.
        prices = {key: m.prices(*key) for key in sorted(m.eligible)}
        found = []
        for (ti, i), pr in prices.items():
            limit = min(PRICE_NODES, TOTAL_NODES - spent)
            pats, best, nodes = _price(m, ti, i, pr, interference, tol, limit)
            spent += nodes
            complete = complete and nodes <= limit
            t = m.types[ti]
            loss += max(best, tol) * t.most * m.gpus[t.model] * m.length(i, z)
            found += [(ti, i, pat) for pat in pats]
        added = sum(m.add(ti, i, pat, interference) for ti, i, pat in found)
        if complete:
            lb = z - loss if added else z
            proven = lb if proven is None else max(proven, lb)
        if not added or spent >= TOTAL_NODES or (proven is not None and proven >= z * (1 - STOP_GAP)):
            break
    return proven
