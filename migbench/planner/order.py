"""The best queue order of a few runs on one instance, by dynamic programming over the player's
states (after bench/exact.py, where the exact optima of the small benchmark cases come from).

`InstanceDP` computes, for a multiset of run classes on one instance, the earliest finish over every
queue order, with the arithmetic of `migbench.duration.replay` (processor sharing, completion within
DONE_SLACK, FIFO starts). Its effort is counted in states (`limit`), never timed; past the limit
it raises `OutOfEffort`. The planner replays the order it returns through `play_queue`, so the
value it keeps is exactly what a replay shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EPS = 1e-9
DONE_SLACK = 1e-6  # `_State.pop_finish`: a run is done when its target is within this
TIE = 1e-6  # seconds: a queue order must beat the best found by more than this to count


class OutOfEffort(Exception):
    """The search reached its deterministic effort limit."""


@dataclass(frozen=True)
class OrderClass:
    """What the order search needs of a run class."""

    memory_mib: int
    duration_s: float
    compute: float
    cap: int


class InstanceDP:
    """Best finish time of a multiset of classes on one instance (memory, capacity), over all queue
    orders, played with the arithmetic of ``migbench.duration.replay`` (processor sharing, completion within
    DONE_SLACK, FIFO starts).

    Without lending the future of one instance depends only on what runs there (each run's
    remaining full-speed work and the attributes that enter the rules) and on the runs still queued
    (a multiset): the next queued run starts at the first event at which it fits, never earlier
    than the run before it. So V(state) = min over the next run k of (wait until k fits) +
    V(state after k starts), memoised. One memo serves every configuration of the instance type.

    Classes are merged into groups that behave identically on this instance: same cap and
    duration, and the same memory / compute where these can matter (memory when some sharing-legal
    set of runs could overflow the instance; compute when some set could exceed its capacity, or
    with interference). A running run is keyed by (cap, memory or 0, compute or 0, remaining work
    rounded to 1e-6 s).

    Searches are cut at a budget with exact lower bounds: remaining solo times; each queued run's
    earliest possible start (the time it would fit if nothing else started, since other starts
    only delay it) plus its solo time; compute work / capacity; presence time / sharing cap from
    now and from the earliest possible next start; memory x time / memory. The memo keeps exact
    values and failed bounds apart; ties with the best order found are cut (TIE)."""

    def __init__(self, classes: Sequence[OrderClass], memory_mib: int, capacity: float, interference: float, available: Sequence[int] | None = None):
        """`available`: runs per class (how many copies of a class one set can hold); unbounded
        when None."""
        self.cls = list(classes)
        self.mem = memory_mib
        self.cap = capacity
        self.intf = interference
        ok = [ci for ci, c in enumerate(self.cls) if c.memory_mib <= memory_mib]
        top_cap = max((self.cls[ci].cap for ci in ok), default=1)
        mem_binds = comp_binds = interference > 0
        for n in range(1, top_cap + 1):
            # the largest memory / compute any n runs allowed to share could add up to
            copies = [ci for ci in ok if self.cls[ci].cap >= n for _ in range(n if available is None else min(n, available[ci]))]
            if len(copies) < n:
                break
            if sum(sorted((self.cls[ci].memory_mib for ci in copies), reverse=True)[:n]) > memory_mib:
                mem_binds = True
            if sum(sorted((self.cls[ci].compute for ci in copies), reverse=True)[:n]) > capacity:
                comp_binds = True
        fitting = [self.cls[ci] for ci in ok]
        self.mem_binds, self.comp_binds = mem_binds, comp_binds
        kmem = max(1, memory_mib // min(c.memory_mib for c in fitting)) if fitting else 1
        # groups: (cap, memory or 0, compute or 0, duration)
        gkey: dict[tuple, int] = {}
        self.group_of: list[int] = []
        g_attrs: list[tuple] = []
        self.members: list[list[int]] = []
        for ci, c in enumerate(self.cls):
            k = (c.cap, c.memory_mib if mem_binds else 0, c.compute if comp_binds else 0.0, c.duration_s)
            if k not in gkey:
                gkey[k] = len(g_attrs)
                g_attrs.append(k)
                self.members.append([])
            self.group_of.append(gkey[k])
            self.members[gkey[k]].append(ci)
        G = len(g_attrs)
        self.G = G
        self.g_cap = [a[0] for a in g_attrs]
        self.g_mem = [a[1] for a in g_attrs]
        self.g_comp = [a[2] for a in g_attrs]
        self.g_dur = [a[3] for a in g_attrs]
        self.g_tag = [a[:3] for a in g_attrs]
        # for the bounds: the least over a group's members (exact when they agree)
        self.g_solo = [min(self.cls[ci].duration_s * max(1.0, self.cls[ci].compute / capacity) for ci in m) for m in self.members]
        self.g_u = [min(self.cls[ci].compute for ci in m) for m in self.members]
        self.g_m = [min(self.cls[ci].memory_mib for ci in m) for m in self.members]
        self.g_capeff = [max(1, min(self.g_cap[g], kmem)) for g in range(G)]
        # children are tried longest first (good orders early, so the cuts bite sooner)
        self.child_order = sorted(range(G), key=lambda g: (-self.g_solo[g], -self.g_mem[g], g))
        self.memo: dict[tuple, tuple[float, bool, int]] = {}  # key -> (value or bound, exact, next group)
        self.states = 0
        self.limit = math.inf  # states; past it the search raises OutOfEffort

    def _tick(self) -> None:
        """Called once per state searched: past `limit` states the search stops (OutOfEffort)."""
        if self.states > self.limit:
            raise OutOfEffort

    # -- the engine's arithmetic, relative to the last event ----------------------------------
    def rate(self, running: tuple) -> float:
        if not running:
            return 1.0
        demand = 0.0
        for g, _ in running:
            demand += self.g_comp[g]
        share = min(1.0, self.cap / demand) if demand > 0 else 1.0
        return share / (1.0 + self.intf * (len(running) - 1))

    def fits(self, g: int, running: tuple) -> bool:
        n = len(running) + 1
        if n > self.g_cap[g]:
            return False
        used = self.g_mem[g]
        for h, _ in running:
            if n > self.g_cap[h]:
                return False
            used += self.g_mem[h]
        return used <= self.mem

    def pop(self, running: tuple) -> tuple[float, tuple]:
        """(time to the next completion, running after it)."""
        r = self.rate(running)
        nxt = min(rem for _, rem in running)
        dt = max(0.0, nxt) / r
        p = dt * r
        rest = tuple((g, rem - p) for g, rem in running if not (rem - p <= DONE_SLACK))
        if len(rest) == len(running):  # numerical slack: finish the closest one
            k = min(range(len(running)), key=lambda i: running[i][1])
            rest = tuple((g, rem - p) for i, (g, rem) in enumerate(running) if i != k)
        return dt, rest

    def drain(self, running: tuple) -> float:
        t = 0.0
        while running:
            dt, running = self.pop(running)
            t += dt
        return t

    def lower_bound(self, running: tuple, counts: tuple) -> float:
        solo = work = pres = memt = 0.0
        for g, rem in running:
            rem = max(0.0, rem)
            if rem > solo:
                solo = rem
            work += self.g_u[g] * rem
            pres += rem / self.g_capeff[g]
            memt += self.g_m[g] * rem
        for g, n in enumerate(counts):
            if n:
                if self.g_solo[g] > solo:
                    solo = self.g_solo[g]
                d = self.g_dur[g]
                work += n * self.g_u[g] * d
                pres += n * d / self.g_capeff[g]
                memt += n * self.g_m[g] * d
        return max(solo, work / self.cap, pres, memt / self.mem)

    # -- the search ----------------------------------------------------------------------------
    def _key(self, running: tuple, counts: tuple) -> tuple:
        tag = self.g_tag
        return (tuple(sorted((tag[g], round(rem, 6)) for g, rem in running)), counts)

    def _children(self, running: tuple, counts: tuple, lb: float) -> tuple[list[tuple[int, float, tuple]], float, float]:
        """Each queued group's earliest start and the state it starts into ((group, start, state)),
        the earliest of those starts, and `lb` raised to every group's start plus its solo time."""
        kids = []
        first = math.inf
        waits: dict[tuple, tuple[float, tuple]] = {}  # groups with the same tag wait alike
        for g in self.child_order:
            if not counts[g]:
                continue
            tg = self.g_tag[g]
            w = waits.get(tg)
            if w is None:
                t, run2 = 0.0, running
                while not self.fits(g, run2):
                    dt, run2 = self.pop(run2)
                    t += dt
                waits[tg] = w = (t, run2)
            t, run2 = w
            kids.append((g, t, run2))
            if t + self.g_solo[g] > lb:
                lb = t + self.g_solo[g]
            if t < first:
                first = t
        return kids, first, lb

    def _presence_after(self, running: tuple, counts: tuple, first: float) -> float:
        """The sharing-slot time still needed after `first`: what the running jobs have left then,
        and every queued job."""
        pres = 0.0
        for g, rem in running:
            if rem - first > 0:
                pres += (rem - first) / self.g_capeff[g]
        for g, n in enumerate(counts):
            if n:
                pres += n * self.g_dur[g] / self.g_capeff[g]
        return pres

    def value(self, running: tuple, counts: tuple, budget: float) -> tuple[float, bool]:
        """(V, True) when V <= budget, else (a lower bound > budget, False) -- or an exact V that
        exceeds the budget, also flagged True. `counts` per group."""
        if not any(counts):
            return self.drain(running), True
        key = self._key(running, counts)
        hit = self.memo.get(key)
        if hit is not None:
            val, exact, _ = hit
            if exact or val > budget:
                return val, exact
        lb = self.lower_bound(running, counts)
        if lb > budget:
            self.memo[key] = (lb, False, -1)
            return lb, False
        # each queued group's earliest start, and the state it starts into
        kids, first, lb = self._children(running, counts, lb)
        pres = self._presence_after(running, counts, first)
        lb = max(lb, first + pres)
        if lb > budget:
            self.memo[key] = (lb, False, -1)
            return lb, False
        self.states += 1
        self._tick()
        best, best_k, fail = math.inf, -1, math.inf
        for g, t, run2 in kids:
            run3 = run2 + ((g, self.g_dur[g]),)
            c2 = counts[:g] + (counts[g] - 1,) + counts[g + 1 :]
            # only a strictly better order is worth finding: ties are cut
            cut = budget if best_k < 0 else min(budget, best - TIE)
            v, ex = self.value(run3, c2, cut - t)
            if ex and t + v <= cut:
                best, best_k = t + v, g
            elif t + v < fail:
                fail = t + v
        if best_k >= 0:
            self.memo[key] = (best, True, best_k)
            return best, True
        self.memo[key] = (fail, False, -1)
        return fail, False

    def group_counts(self, counts: Sequence[int]) -> tuple:
        out = [0] * self.G
        for ci, n in enumerate(counts):
            if n:
                out[self.group_of[ci]] += n
        return tuple(out)

    def order(self, counts: Sequence[int]) -> list[int]:
        """The queue (class indices) of a multiset (counts per class) whose value was found exact."""
        left = list(counts)
        gc = self.group_counts(counts)
        running: tuple = ()
        seq: list[int] = []
        while any(gc):
            g = self.memo[self._key(running, gc)][2]
            while not self.fits(g, running):
                _, running = self.pop(running)
            running = running + ((g, self.g_dur[g]),)
            gc = gc[:g] + (gc[g] - 1,) + gc[g + 1 :]
            ci = next(c for c in self.members[g] if left[c] > 0)
            left[ci] -= 1
            seq.append(ci)
        return seq

    def best(self, counts: Sequence[int], bound: float = math.inf) -> tuple[float, list[int]] | None:
        """(best finish, queue of class indices) for counts per class; None when above `bound`."""
        if any(n and self.cls[ci].memory_mib > self.mem for ci, n in enumerate(counts)):
            return None
        gc = self.group_counts(counts)
        v, ex = self.value((), gc, bound * (1 + EPS))
        if not ex or v > bound * (1 + EPS):
            return None
        return v, self.order(counts)
