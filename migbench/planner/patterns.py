"""Patterns: maximal multisets of run classes that fit one instance's memory and sharing cap."""

from __future__ import annotations

from migbench.planner.problem import PlanningProblem


def patterns(prob: PlanningProblem, ti: int, limit: int) -> tuple[list[tuple[tuple[int, int], ...]], bool]:
    """Maximal patterns for instance type `ti` as tuples of (class index, count). Returns
    (patterns, complete): complete is False when the enumeration hit `limit`."""
    t = prob.types[ti]
    cls = [ci for ci, c in enumerate(prob.classes) if ti in c.types]
    cls.sort(key=lambda ci: (-prob.classes[ci].memory_mib, ci))
    mem = t.memory_mib
    out: list[tuple[tuple[int, int], ...]] = []
    chosen: list[tuple[int, int]] = []
    complete = True

    def can_add(ci: int, used: int, count: int, mincap: int, cnt: dict[int, int]) -> bool:
        c = prob.classes[ci]
        if cnt.get(ci, 0) >= c.n:
            return False
        if used + c.memory_mib > mem:
            return False
        return count + 1 <= min(mincap, c.cap)

    def rec(i: int, used: int, count: int, mincap: int) -> None:
        nonlocal complete
        if len(out) >= limit:
            complete = False
            return
        if i == len(cls):
            if not chosen:
                return
            cnt = dict(chosen)
            if any(can_add(ci, used, count, mincap, cnt) for ci in cls):
                return
            out.append(tuple(chosen))
            return
        ci = cls[i]
        c = prob.classes[ci]
        room_cap = min(mincap, c.cap) - count
        hi = min(c.n, (mem - used) // c.memory_mib if c.memory_mib else c.n, max(room_cap, 0))
        for k in range(hi, -1, -1):
            if k:
                chosen.append((ci, k))
                rec(i + 1, used + k * c.memory_mib, count + k, min(mincap, c.cap))
                chosen.pop()
            else:
                rec(i + 1, used, count, mincap)

    rec(0, 0, 0, 10**9)
    return out, complete


def greedy_patterns(prob: PlanningProblem, ti: int) -> list[tuple[tuple[int, int], ...]]:
    """A restricted pattern set when full enumeration is too large: for every class, fill an
    instance with it first, then first-fit the other classes by decreasing memory."""
    t = prob.types[ti]
    cls = [ci for ci, c in enumerate(prob.classes) if ti in c.types]
    cls.sort(key=lambda ci: (-prob.classes[ci].memory_mib, ci))
    out = set()
    for first in cls:
        cnt: dict[int, int] = {}
        used, count, mincap = 0, 0, 10**9
        for ci in [first] + cls:
            c = prob.classes[ci]
            while cnt.get(ci, 0) < c.n and used + c.memory_mib <= t.memory_mib and count + 1 <= min(mincap, c.cap):
                cnt[ci] = cnt.get(ci, 0) + 1
                used += c.memory_mib
                count += 1
                mincap = min(mincap, c.cap)
        out.add(tuple(sorted(cnt.items())))
    return sorted(out)
