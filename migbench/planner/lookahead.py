"""The re-plan step's bounded look-ahead (issue 21): a few variations of the greedy decision, each
played forward under the duration model with the plain greedy policy, the best kept.

At an event, `best_decision` builds the candidate decisions (`recut.greedy` under a handful of
`Knobs`: no new GPU drained for big runs now, or one; each idle GPU cut to its second or third best
layout for the small runs), drops those equal to the plain greedy decision, and plays each, and the
plain one, forward (`rollout`): the runs known now (live and waiting; nothing that may arrive later)
on the host as the decision leaves it, re-planned at every finish by the plain greedy policy. A
candidate replaces the plain decision only when its play runs more runs, or as many and ends
strictly sooner (then strictly less summed end time breaks a tie of makespans); among equals the
first in a fixed order wins. So the look-ahead never picks a decision its own play says is worse
than the plain one, and it is deterministic (the same state gives the same plays).

Bounded: at most `len(VARIATIONS)` plays per event, each a greedy re-plan per finish; where the
host and its queue are large (`BUDGET`: GPUs x runs known), the plain decision is taken with no
play (the greedy alone is then the cost of an event).
"""

from __future__ import annotations

from collections.abc import Sequence

from migbench.duration import rate
from migbench.planner.recut import (
    PLAIN,
    Decision,
    GpuNow,
    Knobs,
    LiveInstance,
    LiveRun,
    RecutSettings,
    Waiting,
    greedy,
    priority,
    slot_of,
)
from migbench.types import Placement, layout_key

VARIATIONS: tuple[Knobs, ...] = (Knobs(drain=0), Knobs(drain=1), Knobs(rank=1), Knobs(rank=2))
"""The candidates tried beside the plain decision, in the order that breaks ties."""

BUDGET = 4000
"""GPUs x runs known (live and waiting) above which no play is made (the plain decision stands)."""

TOL = 1e-6


class _Sim:
    """The host as a decision leaves it, played forward: per GPU its instances, each with its runs
    (demand, start, work left)."""

    def __init__(self, now: float, gpus: Sequence[GpuNow], st: RecutSettings):
        self.st = st
        self.gpus = {g.index: g for g in gpus}
        self.inst: dict[int, dict[Placement, list[list]]] = {}
        for g in gpus:
            per: dict[Placement, list[list]] = {}
            for i in g.instances:
                r = rate([x.demand for x in i.runs], _capacity(g, i.placement, st), st.interference)
                per[i.placement] = [[x.demand, x.start_s, max(0.0, x.end_s - now) * r] for x in i.runs]
            self.inst[g.index] = per

    def apply(self, dec: Decision, waiting: dict[str, Waiting], now: float) -> None:
        for rc in dec.recuts:
            per = self.inst[rc.gpu]
            for pl in rc.destroy:
                per.pop(pl, None)
            for pl in rc.create:
                per[pl] = []
        for s in dec.starts:
            w = waiting.pop(s.run)
            self.inst[s.gpu][s.placement].append([w.demand, now, w.demand.work_s])

    def snapshot(self, now: float) -> list[GpuNow]:
        out = []
        for gi, g in self.gpus.items():
            insts = []
            for pl in layout_key(self.inst[gi]):
                runs = self.inst[gi][pl]
                r = self._rate(g, pl, runs)
                insts.append(LiveInstance(pl, tuple(LiveRun(d, s, now + left / r) for d, s, left in sorted(runs, key=lambda x: x[0].id))))
            out.append(GpuNow(gi, g.model, tuple(insts)))
        return out

    def _rate(self, g: GpuNow, pl: Placement, runs: list[list]) -> float:
        return rate([x[0] for x in runs], _capacity(g, pl, self.st), self.st.interference)

    def next_finish(self, now: float) -> float | None:
        best = None
        for gi, per in self.inst.items():
            for pl, runs in per.items():
                if runs:
                    t = now + min(x[2] for x in runs) / self._rate(self.gpus[gi], pl, runs)
                    best = t if best is None else min(best, t)
        return best

    def advance(self, now: float, until: float) -> tuple[int, float]:
        """Progress to `until`: (runs ended, their summed end time)."""
        ended, total = 0, 0.0
        for gi, per in self.inst.items():
            for pl, runs in per.items():
                if not runs:
                    continue
                r = self._rate(self.gpus[gi], pl, runs)
                for x in runs:
                    x[2] -= (until - now) * r
                keep = [x for x in runs if x[2] > TOL]
                ended += len(runs) - len(keep)
                total += until * (len(runs) - len(keep))
                runs[:] = keep
        return ended, total


def _capacity(g: GpuNow, pl: Placement, st: RecutSettings) -> float:
    return slot_of(g, pl, st.compute_basis).capacity


def rollout(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], first: Decision, st: RecutSettings) -> tuple[int, float, float]:
    """Play `first` now, then the plain greedy decision at every finish, until nothing more starts:
    (runs never started, makespan, summed end time) of the runs known now."""
    sim = _Sim(now, gpus, st)
    queue = {w.demand.id: w for w in waiting}
    sim.apply(first, queue, now)
    makespan, total = now, 0.0
    for g in gpus:
        for i in g.instances:
            for r in i.runs:
                makespan = max(makespan, r.end_s)
    while True:
        nxt = sim.next_finish(now)
        if nxt is None:
            break
        _, t = sim.advance(now, nxt)
        total += t
        now = makespan = max(makespan, nxt)
        if queue:
            sim.apply(greedy(now, sim.snapshot(now), sorted(queue.values(), key=priority), st), queue, now)
    return len(queue), makespan, total


def _known(gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> int:
    return len(waiting) + sum(len(i.runs) for g in gpus for i in g.instances)


def best_decision(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], st: RecutSettings) -> Decision:
    """The plain greedy decision, or a variation whose play forward is strictly better (see the
    module's docstring)."""
    plain = greedy(now, gpus, waiting, st, PLAIN)
    if not waiting or len(gpus) * _known(gpus, waiting) > BUDGET:
        return plain
    tried = {plain}
    cands: list[Decision] = []
    for knobs in VARIATIONS:
        d = greedy(now, gpus, waiting, st, knobs)
        if d not in tried:
            tried.add(d)
            cands.append(d)
    if not cands:
        return plain
    best, best_key = plain, _key(rollout(now, gpus, waiting, plain, st))
    for d in cands:
        k = _key(rollout(now, gpus, waiting, d, st))
        if k < best_key:
            best, best_key = d, k
    return best


def _key(played: tuple[int, float, float]) -> tuple[int, float, float]:
    unrun, makespan, total = played
    return unrun, round(makespan, 3), round(total, 3)

