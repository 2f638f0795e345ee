"""A makespan plan as queues per instance, built by best insertion and improved by local search.

Without lending, `replay` plays every instance on its own, so a plan's makespan is the largest of
its instances' finish times, and a move that changes two queues is evaluated by playing those two
alone (`play_queue`: the same arithmetic, to the last bit). Moves are compared by the *finish
profile* (every instance's finish time, latest first, compared lexicographically): lowering the
makespan counts, and so does unloading a runner-up instance, which makes room for the next move.
Two multisets of the same size compare like the sorted lists of the values where they differ, so a
move compares only the instances it changed.

Effort is counted, never timed: every played queue is charged to the budget (`Evaluator`).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from migbench.duration import Demand, Slot
from migbench.duration.replay import Result, play_queue, replay
from migbench.planner.budget import PLAY_S, REPLAY_S_PER_RUN, Budget
from migbench.planner.problem import PlanningProblem
from migbench.planner.schedule import Concrete, class_of
from migbench.types import Placement

TARGETS_PER_TYPE = 4  # a run is tried on this many of a type's earliest-finishing instances
SOURCES = 8  # the local search takes runs off this many latest-finishing instances


@dataclass
class InstanceQueues:
    """A concrete layout with a queue per instance and each instance's finish time."""

    layouts: dict[int, tuple[Placement, ...]]
    slots: dict[str, Slot]  # in plan order (GPU, then placement)
    slot_type: dict[str, int]
    slot_place: dict[str, tuple[int, Placement]]
    q: dict[str, list[str]]
    fin: dict[str, float] = field(default_factory=dict)

    def makespan(self) -> float:
        return max(self.fin.values(), default=0.0)

    def profile(self) -> list[float]:
        return sorted(self.fin.values(), reverse=True)

    def copy(self) -> InstanceQueues:
        return InstanceQueues(
            dict(self.layouts), dict(self.slots), dict(self.slot_type), dict(self.slot_place), {k: list(v) for k, v in self.q.items()}, dict(self.fin)
        )

    def concrete(self) -> Concrete:
        return Concrete(dict(self.layouts), list(self.slots.values()), dict(self.slot_type), dict(self.slot_place))


def better(new: Iterable[float], old: Iterable[float]) -> bool:
    """Is the profile with `old` finish times replaced by `new` ones lexicographically smaller?
    (Equal counts; pad with zeros otherwise: an instance with nothing finishes at 0.)"""
    a, b = sorted(new, reverse=True), sorted(old, reverse=True)
    n = max(len(a), len(b))
    a += [0.0] * (n - len(a))
    b += [0.0] * (n - len(b))
    for x, y in zip(a, b):
        if x < y - 1e-6:
            return True
        if x > y + 1e-6:
            return False
    return False


class Evaluator:
    """Plays queues for the search and charges each play to the budget."""

    def __init__(self, prob: PlanningProblem, jobs: dict[str, Demand], interference: float, budget: Budget):
        self.prob = prob
        self.jobs = jobs
        self.interference = interference
        self.budget = budget
        cls = class_of(prob)
        self.types_of = {rid: frozenset(prob.classes[cls[rid]].types) for rid in jobs}
        self.plays = 0

    def finish(self, slot: Slot, queue: Sequence[str]) -> float:
        """The instance's finish time with this queue; inf when some run never fits there."""
        if not queue:
            return 0.0
        self.plays += 1
        self.budget.charge(PLAY_S[0] + PLAY_S[1] * len(queue))
        try:
            _, ends = play_queue([self.jobs[r] for r in queue], slot, self.interference)
        except ValueError:
            return float("inf")
        return max(ends)

    def state(self, conc: Concrete, queues: dict[str, list[str]]) -> InstanceQueues:
        slots = {s.key: s for s in conc.slots}
        q = {k: list(queues.get(k, [])) for k in slots}
        st = InstanceQueues(dict(conc.layouts), slots, dict(conc.slot_type), dict(conc.slot_place), q)
        st.fin = {k: self.finish(slots[k], q[k]) for k in slots}
        return st

    def result(self, st: InstanceQueues) -> Result:
        """The plan played through the fleet's replay (what `finish` turns into a Solution)."""
        self.budget.charge(REPLAY_S_PER_RUN * len(self.jobs))
        order = [r for k in st.slots for r in st.q[k]]
        return replay([self.jobs[r] for r in order], list(st.slots.values()), st.q, interference=self.interference)


class TypeHeaps:
    """Per instance type, its instances by finish time (lazy heaps): the earliest few in O(k log n)."""

    def __init__(self, st: InstanceQueues):
        self.st = st
        self.rank = {k: i for i, k in enumerate(st.slots)}
        self.heaps: dict[int, list[tuple[float, int, str]]] = {}
        for k in st.slots:
            self.heaps.setdefault(st.slot_type[k], []).append((st.fin[k], self.rank[k], k))
        for h in self.heaps.values():
            heapq.heapify(h)

    def update(self, key: str) -> None:
        h = self.heaps.setdefault(self.st.slot_type[key], [])
        heapq.heappush(h, (self.st.fin[key], self.rank.setdefault(key, len(self.rank)), key))

    def earliest(self, ti: int, k: int) -> list[str]:
        h = self.heaps.get(ti)
        if not h:
            return []
        out: list[tuple[float, int, str]] = []
        seen: set[str] = set()
        while h and len(out) < k:
            e = heapq.heappop(h)
            if e[2] in seen or e[2] not in self.st.fin or self.st.fin[e[2]] != e[0]:
                continue  # stale
            seen.add(e[2])
            out.append(e)
        for e in out:
            heapq.heappush(h, e)
        return [e[2] for e in out]


def insert_best(st: InstanceQueues, ev: Evaluator, heaps: TypeHeaps, rid: str, extra: Sequence[str] = ()) -> bool:
    """Append `rid` to the queue where that instance then finishes first: among the earliest-finishing
    instances of each type it may use, and `extra` ones. False when no instance can take it."""
    best: tuple[float, int, str] | None = None
    cands: list[str] = []
    for ti in sorted(ev.types_of[rid]):
        cands += heaps.earliest(ti, TARGETS_PER_TYPE)
    cands += [k for k in extra if st.slot_type[k] in ev.types_of[rid]]
    for key in dict.fromkeys(cands):
        if ev.jobs[rid].memory_mib > st.slots[key].memory_mib:
            continue
        f = ev.finish(st.slots[key], st.q[key] + [rid])
        if f == float("inf"):
            continue
        cand = (f, heaps.rank[key], key)
        if best is None or cand < best:
            best = cand
    if best is None:
        return False
    st.q[best[2]].append(rid)
    st.fin[best[2]] = best[0]
    heaps.update(best[2])
    return True


def construct(conc: Concrete, order: Sequence[str], ev: Evaluator) -> InstanceQueues | None:
    """Best insertion: runs in priority order, each appended where its instance then finishes first."""
    st = ev.state(conc, {})
    heaps = TypeHeaps(st)
    for rid in order:
        if not insert_best(st, ev, heaps, rid):
            return None
    return st


def local_search(st: InstanceQueues, ev: Evaluator, allowance: float) -> bool:
    """Move a run off one of the latest-finishing instances (to another position of its own queue or
    to an earliest-finishing instance of a type it may use, at the front, the end or its priority
    place), or swap it with a shorter run there; keep a change when the finish profile improves.
    Stops when no move helps or the allowance (reference seconds) is spent. True if it improved."""
    budget = ev.budget
    stop_at = budget.spent + allowance
    heaps = TypeHeaps(st)
    improved_any = False
    while budget.spent < stop_at and not budget.expired():
        if not _one_move(st, ev, heaps, stop_at):
            break
        improved_any = True
    return improved_any


ALL_POSITIONS = 16  # queues up to this long are tried at every position


def _positions(n: int) -> list[int]:
    """Insertion positions tried in a queue of n runs: every one when short, else ends and middle."""
    return list(range(n + 1)) if n <= ALL_POSITIONS else sorted({0, 1, n // 4, n // 2, 3 * n // 4, n - 1, n})


def _one_move(st: InstanceQueues, ev: Evaluator, heaps: TypeHeaps, stop_at: float) -> bool:
    budget = ev.budget
    rank = heaps.rank
    sources = sorted(st.fin, key=lambda k: (-st.fin[k], rank[k]))[:SOURCES]
    for src in sources:
        if st.fin[src] <= 0:
            break
        sq = st.q[src]
        for i in range(len(sq) - 1, -1, -1):
            if budget.spent >= stop_at or budget.expired():
                return False
            rid = sq[i]
            rest = sq[:i] + sq[i + 1 :]
            f_rest = ev.finish(st.slots[src], rest)
            if _move_within(st, ev, heaps, src, i):
                return True
            targets: list[str] = []
            for ti in sorted(ev.types_of[rid]):
                targets += [k for k in heaps.earliest(ti, TARGETS_PER_TYPE + 1) if k != src]
            targets.sort(key=lambda k: (st.fin[k], rank[k]))
            for tgt in targets:
                if ev.jobs[rid].memory_mib > st.slots[tgt].memory_mib:
                    continue
                if _move_to(st, ev, heaps, src, i, f_rest, tgt) or _swap_with(st, ev, heaps, src, i, tgt):
                    return True
    return False


def _move_within(st: InstanceQueues, ev: Evaluator, heaps: TypeHeaps, src: str, i: int) -> bool:
    """Run `i` of `src`'s queue elsewhere in that queue, or swapped with another run there (every
    pair in short queues); True when a move made the instance finish earlier (and was made)."""
    sq = st.q[src]
    rid = sq[i]
    rest = sq[:i] + sq[i + 1 :]
    for p in _positions(len(rest)):
        if p == i:
            continue
        cand = rest[:p] + [rid] + rest[p:]
        f = ev.finish(st.slots[src], cand)
        if better([f], [st.fin[src]]):
            st.q[src], st.fin[src] = cand, f
            heaps.update(src)
            return True
    if len(sq) <= ALL_POSITIONS:
        for j in range(i):
            if _alike(ev.jobs[sq[j]], ev.jobs[rid]):
                continue
            cand = list(sq)
            cand[i], cand[j] = cand[j], cand[i]
            f = ev.finish(st.slots[src], cand)
            if better([f], [st.fin[src]]):
                st.q[src], st.fin[src] = cand, f
                heaps.update(src)
                return True
    return False


def _move_to(st: InstanceQueues, ev: Evaluator, heaps: TypeHeaps, src: str, i: int, f_rest: float, tgt: str) -> bool:
    """Run `i` of `src`'s queue moved into `tgt`'s queue (`f_rest`: when `src` finishes without it);
    True when the move was better (and was made)."""
    sq = st.q[src]
    rid = sq[i]
    rest = sq[:i] + sq[i + 1 :]
    tq = st.q[tgt]
    for p in _positions(len(tq)):
        cand = tq[:p] + [rid] + tq[p:]
        f = ev.finish(st.slots[tgt], cand)
        if better([f_rest, f], [st.fin[src], st.fin[tgt]]):
            st.q[src], st.fin[src] = rest, f_rest
            st.q[tgt], st.fin[tgt] = cand, f
            heaps.update(src)
            heaps.update(tgt)
            return True
    return False


def _swap_with(st: InstanceQueues, ev: Evaluator, heaps: TypeHeaps, src: str, i: int, tgt: str) -> bool:
    """Run `i` of `src`'s queue swapped with a run of `tgt` that may use `src`'s instance: every
    one in short queues, else the last shorter one; True when the swap was better (and was made)."""
    sq, tq = st.q[src], st.q[tgt]
    rid = sq[i]
    short = len(tq) <= ALL_POSITIONS and len(sq) <= ALL_POSITIONS
    for j in range(len(tq) - 1, -1, -1):
        other = tq[j]
        if st.slot_type[src] not in ev.types_of[other] or _alike(ev.jobs[other], ev.jobs[rid]):
            continue
        if not short and ev.jobs[other].work_s >= ev.jobs[rid].work_s:
            continue
        if ev.jobs[other].memory_mib > st.slots[src].memory_mib or ev.jobs[rid].memory_mib > st.slots[tgt].memory_mib:
            continue
        s2 = sq[:i] + [other] + sq[i + 1 :]
        t2 = tq[:j] + [rid] + tq[j + 1 :]
        fs, ft = ev.finish(st.slots[src], s2), ev.finish(st.slots[tgt], t2)
        if better([fs, ft], [st.fin[src], st.fin[tgt]]):
            st.q[src], st.fin[src] = s2, fs
            st.q[tgt], st.fin[tgt] = t2, ft
            heaps.update(src)
            heaps.update(tgt)
            return True
        if not short:
            break
    return False


KICK = 3  # runs moved by one kick of the iterated search


def iterated_search(best: InstanceQueues, ev: Evaluator, allowance: float, bound: float) -> InstanceQueues:
    """Iterated local search: from the best plan, move a few runs of the latest-finishing instances
    to random instances they may use (at random places), search locally, keep the result when its
    finish profile is better. Seeded, so the same input takes the same kicks; stops when the
    allowance is spent or the plan reaches `bound`."""
    budget = ev.budget
    stop_at = budget.spent + allowance
    rng = random.Random(0)
    keys_of_type: dict[int, list[str]] = {}
    for k in best.slots:
        keys_of_type.setdefault(best.slot_type[k], []).append(k)
    while budget.spent < stop_at and not budget.expired() and best.makespan() > bound * (1 + 1e-9):
        st = best.copy()
        latest = sorted(st.fin, key=lambda k: (-st.fin[k], k))[: max(2, SOURCES // 2)]
        pool = [r for k in latest for r in st.q[k]]
        if not pool:
            break
        changed: set[str] = set()
        for _ in range(min(KICK, len(pool))):
            rid = pool.pop(rng.randrange(len(pool)))
            src = next(k for k in latest if rid in st.q[k])
            targets = [k for ti in sorted(ev.types_of[rid]) for k in keys_of_type.get(ti, []) if ev.jobs[rid].memory_mib <= st.slots[k].memory_mib]
            tgt = targets[rng.randrange(len(targets))]
            st.q[src].remove(rid)
            st.q[tgt].insert(rng.randrange(len(st.q[tgt]) + 1), rid)
            changed |= {src, tgt}
        for k in sorted(changed):
            st.fin[k] = ev.finish(st.slots[k], st.q[k])
        local_search(st, ev, min(max(0.0, stop_at - budget.spent), 0.05 + PLAY_S[1] * 200 * len(ev.jobs)))
        if better(st.profile(), best.profile()):
            best = st
    return best


def _alike(a: Demand, b: Demand) -> bool:
    """Runs the player cannot tell apart (swapping them changes nothing)."""
    return (a.memory_mib, a.duration_s, a.compute, a.max_runs_per_instance) == (b.memory_mib, b.duration_s, b.compute, b.max_runs_per_instance)


def ect_queues(prob: PlanningProblem, conc: Concrete, jobs: dict[str, Demand], order: list[str], allowed: dict[str, set[int]]) -> dict[str, list[str]]:
    """Earliest-completion assignment: runs in priority order, each to the instance where it is
    estimated to finish first. An instance is seen as `k` lanes for a run that can share it `k`-wide
    (its cap and its memory), each run taking its solo time times the slowdown of `k` such runs.
    Instances of one type are interchangeable, so each type keeps a heap of its instances' loads."""
    heaps: dict[int, list[tuple[float, str]]] = {}
    slot_of_type: dict[int, Slot] = {}
    for s in conc.slots:
        ti = conc.slot_type[s.key]
        heaps.setdefault(ti, []).append((0.0, s.key))
        slot_of_type[ti] = s
    for h in heaps.values():
        heapq.heapify(h)
    queues: dict[str, list[str]] = {s.key: [] for s in conc.slots}
    sorted_types: dict[int, list[int]] = {}
    for rid in order:
        j = jobs[rid]
        best: tuple[float, int, float] | None = None
        a = allowed[rid]
        tis = sorted_types.get(id(a))
        if tis is None:
            tis = sorted_types[id(a)] = sorted(a)
        for ti in tis:
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
