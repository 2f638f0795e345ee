"""Improving a schedule on a fixed layout: earliest-completion queues and a replaying local search.
"""

from __future__ import annotations

from migbench.duration import Demand, Slot
from migbench.duration.replay import Result, replay
from migbench.planner.problem import IMPROVE_SOURCES, PlanningProblem, SolveOptions
from migbench.planner.schedule import Concrete, class_of


def finish_profile(res: Result) -> list[float]:
    """Per-slot finish times, latest first: the improvement order (makespan, then the runner-up...)."""
    ends: dict[str, float] = {}
    for jid, slot in res.slot_of.items():
        ends[slot] = max(ends.get(slot, 0.0), res.end_s[jid])
    return sorted(ends.values(), reverse=True)


def improve(
    prob: PlanningProblem, conc: Concrete, jobs: dict[str, Demand], res: Result, opts: SolveOptions, max_evals: int
) -> Result:
    """Local search on the queues: move a run from one of the instances that finish last to another
    instance it may use (to either end of its queue), or swap it with a shorter run there; keep a
    change when the finish profile (makespan, then the next latest instance...) improves, so
    unloading a runner-up instance counts too and makes room for the next move off the latest. Each candidate is
    replayed through the engine, so the result is exactly what `simulate` will show."""
    cls = class_of(prob)
    types_of = {rid: set(prob.classes[cls[rid]].types) for rid in jobs}
    job_list = [jobs[r] for r in res.slot_of]
    queues = {s.key: list(res.order.get(s.key, [])) for s in conc.slots}
    best = res
    best_prof = finish_profile(res)
    evals = 0

    def play(q: dict[str, list[str]]) -> Result:
        return replay(job_list, conc.slots, q, interference=opts.interference)

    def attempt(cand: dict[str, list[str]]) -> bool:
        nonlocal best, best_prof, queues, evals
        evals += 1
        try:
            r2 = play(cand)
        except ValueError:
            return False
        prof = finish_profile(r2)
        if prof < best_prof:
            best, best_prof, queues = r2, prof, cand
            return True
        return False

    improved = True
    while improved and evals < max_evals:
        improved = False
        ends: dict[str, float] = {}
        for jid, slot in best.slot_of.items():
            ends[slot] = max(ends.get(slot, 0.0), best.end_s[jid])
        # Sources: the instances that finish last; targets: the earliest-finishing ones first.
        sources = sorted(ends, key=lambda k: (-ends[k], k))[:IMPROVE_SOURCES]
        for src in sources:
            if improved or evals >= max_evals:
                break
            others = sorted((x for x in conc.slots if x.key != src), key=lambda x: (ends.get(x.key, 0.0), x.key))
            for rid in reversed(queues[src]):  # the last started first
                if improved or evals >= max_evals:
                    break
                for target in others:
                    if conc.slot_type[target.key] not in types_of[rid]:
                        continue
                    # move to the end, then to the front of the target's queue
                    for front in (False, True):
                        cand = {k: list(v) for k, v in queues.items()}
                        cand[src].remove(rid)
                        if front:
                            cand[target.key].insert(0, rid)
                        else:
                            cand[target.key].append(rid)
                        if attempt(cand):
                            improved = True
                            break
                    if improved or evals >= max_evals:
                        break
                    # swap with a shorter run of the target
                    for other in reversed(queues[target.key]):
                        if jobs[other].work_s >= jobs[rid].work_s or conc.slot_type[src] not in types_of[other]:
                            continue
                        cand = {k: list(v) for k, v in queues.items()}
                        i, j = cand[src].index(rid), cand[target.key].index(other)
                        cand[src][i], cand[target.key][j] = other, rid
                        improved = attempt(cand)
                        break
                    if improved or evals >= max_evals:
                        break
    return best


def ect_queues(
    prob: PlanningProblem, conc: Concrete, jobs: dict[str, Demand], order: list[str], allowed: dict[str, set[int]]
) -> dict[str, list[str]]:
    """Earliest-completion assignment: runs in priority order, each to the instance where it is
    estimated to finish first. An instance is seen as `k` lanes for a run that can share it `k`-wide
    (its cap and its memory), each run taking its solo time times the slowdown of `k` such runs.
    Instances of one type are interchangeable, so each type keeps a heap of its instances' loads."""
    import heapq

    heaps: dict[int, list[tuple[float, str]]] = {}
    slot_of_type: dict[int, Slot] = {}
    for s in conc.slots:
        ti = conc.slot_type[s.key]
        heaps.setdefault(ti, []).append((0.0, s.key))
        slot_of_type[ti] = s
    for h in heaps.values():
        heapq.heapify(h)
    queues: dict[str, list[str]] = {s.key: [] for s in conc.slots}
    for rid in order:
        j = jobs[rid]
        best: tuple[float, int, float] | None = None
        for ti in sorted(allowed[rid]):
            if ti not in heaps:
                continue
            s = slot_of_type[ti]
            if j.memory_mib > s.memory_mib:
                continue
            load = heaps[ti][0][0]
            k = max(1, min(j.cap, s.memory_mib // max(1, j.memory_mib)))
            t = j.work_s * max(1.0, k * j.compute / s.capacity)
            new_load = load + t / k
            est = new_load + t * (1 - 1 / k)
            if best is None or est < best[0] - 1e-9:
                best = (est, ti, new_load)
        if best is None:
            continue
        _, ti, new_load = best
        _, key = heapq.heappop(heaps[ti])
        heapq.heappush(heaps[ti], (new_load, key))
        queues[key].append(rid)
    return queues
