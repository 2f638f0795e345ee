"""A neighbourhood search over layouts: change one GPU's layout, re-place its runs.

The relaxation chooses layouts from aggregate loads, and a queue search on a fixed layout never
revisits them; so a plan can wait 18 h behind a whole-GPU run while another GPU's small instances go
idle. A move here takes one GPU, gives it another legal layout of its model (the layouts the bound's
solutions use first, then the rest), takes the runs off that GPU and off the latest-finishing
instances, puts them back by best insertion, polishes with a short local search, and keeps the new
plan when its finish profile is better. GPUs are tried most idle first, then the busiest.
"""

from __future__ import annotations

from collections.abc import Sequence

from migbench.duration import Slot
from migbench.planner.improve import Evaluator, InstanceQueues, TypeHeaps, better, insert_best, local_search
from migbench.planner.problem import PlanningProblem
from migbench.types import InstanceRef, Placement

CRITICAL = 3  # a move also re-places the runs of this many latest-finishing instances
POLISH_S = 0.02  # reference seconds of local search after each move (scaled with the problem)


def relayout(st: InstanceQueues, prob: PlanningProblem, gpu: int, lay: tuple[Placement, ...], ev: Evaluator, rank: dict[str, int]) -> InstanceQueues | None:
    """`st` with GPU `gpu` cut as `lay`: its runs and those of the latest-finishing instances are put
    back by best insertion, in priority order (`rank`). None when some run finds no instance."""
    new = st.copy()
    model = next(g.model.key for g in prob.fleet if g.index == gpu)
    old = [k for k in new.slots if new.slot_place[k][0] == gpu]
    crit = [k for k in sorted(new.fin, key=lambda k: (-new.fin[k], k)) if k not in old][:CRITICAL]
    loose = [r for k in old + crit for r in new.q[k]]
    for k in old:
        del new.slots[k], new.slot_type[k], new.slot_place[k], new.q[k], new.fin[k]
    for k in crit:
        new.q[k], new.fin[k] = [], 0.0
    added: dict[str, tuple[Slot, int, tuple[int, Placement]]] = {}
    for pl in lay:
        ti = prob.type_index[(model, pl.profile)]
        t = prob.types[ti]
        key = str(InstanceRef(gpu, pl))
        added[key] = (Slot(key, t.memory_mib, t.capacity, type_key=str(ti)), ti, (gpu, pl))
    new.layouts[gpu] = lay
    for key, (s, ti, place) in added.items():
        new.slots[key], new.slot_type[key], new.slot_place[key] = s, ti, place
        new.q[key], new.fin[key] = [], 0.0

    def pos(k: str) -> tuple[int, int]:
        g, pl = new.slot_place[k]
        return g, new.layouts[g].index(pl)

    order = sorted(new.slots, key=pos)
    new.slots = {k: new.slots[k] for k in order}
    new.slot_type = {k: new.slot_type[k] for k in order}
    new.slot_place = {k: new.slot_place[k] for k in order}
    new.q = {k: new.q[k] for k in order}
    new.fin = {k: new.fin[k] for k in order}
    heaps = TypeHeaps(new)
    for rid in sorted(loose, key=rank.__getitem__):
        if not insert_best(new, ev, heaps, rid, extra=list(added)):
            return None
    return new


def layout_search(
    st: InstanceQueues,
    prob: PlanningProblem,
    ev: Evaluator,
    allowance: float,
    preferred: Sequence[tuple[str, int]],
    rank: dict[str, int],
) -> InstanceQueues:
    """Improve `st` by one-GPU layout moves until none helps or `allowance` reference seconds are
    spent. `preferred`: (model, layout index) pairs the bound's solutions use, tried first."""
    budget = ev.budget
    stop_at = budget.spent + allowance
    polish = POLISH_S * max(1.0, len(ev.jobs) / 50)
    lays_of: dict[str, list[tuple[Placement, ...]]] = {}
    for key, lays in prob.layouts.items():
        first = [i for m, i in preferred if m == key]
        idx = list(dict.fromkeys(first + list(range(len(lays)))))
        lays_of[key] = [lays[i][1] for i in idx]
    model_of = {g.index: g.model.key for g in prob.fleet}
    while budget.spent < stop_at and not budget.expired():
        improved = False
        for gpu in _gpu_order(st):
            for lay in lays_of[model_of[gpu]]:
                if budget.spent >= stop_at or budget.expired():
                    return st
                if lay == st.layouts[gpu]:
                    continue
                cand = relayout(st, prob, gpu, lay, ev, rank)
                if cand is None:
                    continue
                if not better(cand.profile(), st.profile()):
                    if cand.makespan() > st.makespan() + 1e-6:
                        continue  # worse at the top already: not worth polishing
                    local_search(cand, ev, min(polish, max(0.0, stop_at - budget.spent)))
                if better(cand.profile(), st.profile()):
                    st = cand
                    improved = True
                    break
            if improved:
                break
        if not improved:
            break
    return st


def _gpu_order(st: InstanceQueues) -> list[int]:
    """GPUs by their latest finish: the most idle first, then the busiest, alternating."""
    last: dict[int, float] = {}
    for k, f in st.fin.items():
        g = st.slot_place[k][0]
        last[g] = max(last.get(g, 0.0), f)
    for g in st.layouts:
        last.setdefault(g, 0.0)
    asc = sorted(last, key=lambda g: (last[g], g))
    out: list[int] = []
    lo, hi = 0, len(asc) - 1
    while lo <= hi:
        out.append(asc[lo])
        if hi != lo:
            out.append(asc[hi])
        lo += 1
        hi -= 1
    return out
