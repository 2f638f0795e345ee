"""Large-neighbourhood search on a makespan plan's queues: destroy part of the plan, repair it, keep
the result when the finish profile improves (`improve.better`).

Local search moves one run at a time, so it stalls where a whole group of runs must move at once:
three 6 h runs queued behind the whole-GPU runs of a 7g instance all end at 60 h, and moving any one
of them alone changes nothing at the top. The neighbourhoods here take many runs at once:

- **unload**: the runs of a latest-finishing instance leave it, longest first, each for the instance
  where it then finishes first, when that is before the late instance finished (best insertion);
- **pair**: two instances' movable runs (a late one and an earlier one it may share runs with) are
  dealt again between the two, longest first (a little seeded noise on the order after the first
  try), each to the instance where it then finishes first, to the minute, near ties to the one with
  the smaller estimated load (its lanes' work: a run of demand u for d seconds on an instance of
  share c that holds k such runs at once loads it with max(u d / c, d / k));
  two instances that run one run at a time (every run there has a sharing cap of 1) are split
  exactly instead, by dynamic programming over the loads;
- **gpu**: the same for every instance of a late instance's GPU and of an early-finishing GPU (the
  runs are re-balanced over both GPUs' layouts);
- **band**: the same for the `BAND` latest-finishing instances and the `BAND` earliest-finishing
  ones, whatever their GPUs (a flat top of many instances ending together comes down only when
  work flows from all of them at once to where there is room).

A deal moves the runs that every one of its instances may take (the band's: those that at least two
of them may take, each among those it fits); each neighbourhood is dealt `DEALS` times (longest first, then with seeded noise on the order) and the
deal with the best finish profile of its instances is the one repaired.

Each repaired plan gets a short local search: its allowance grows with the sweep up to `POLISH_CAP`
runs and shrinks past it (as `POLISH_CAP`² / runs, at least `POLISH_MIN` runs' worth), since a big
sweep's plan comes down through many repairs, not a few long polishes. Every play is charged
to the deterministic budget and the noise comes from a seeded generator, so the same input gives the
same plan; the clock only stops the search at the hard stop. `LnsStats` counts, per neighbourhood, the tries and the ones kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from migbench.planner.budget import PLAY_S
from migbench.planner.improve import TARGETS_PER_TYPE, Evaluator, InstanceQueues, better, local_search

NEIGHBOURHOODS = ("unload", "pair", "gpu")  # taken in turn ("gpu" alternates with "band")
REPORTED = NEIGHBOURHOODS + ("band",)
LATE = 6  # the destroy step starts from one of this many latest-finishing instances
POLISH_RUNS = 60  # plays of the local search after a repair, per run of the sweep (scaled by PLAY_S)
POLISH_CAP = 90  # ... counting at most this many runs, and POLISH_CAP**2 / runs past it: a big sweep's repairs stay cheap, so it gets many
POLISH_MIN = 5  # ... but at least this many
DEALS = 2  # a pair, gpu or band neighbourhood is dealt this many times (plain, then noisy); the best is kept
BAND = 4  # the band neighbourhood: this many latest-finishing and this many earliest-finishing instances


@dataclass
class LnsStats:
    tried: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0))
    gain_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0.0))

    def describe(self) -> str:
        return ", ".join(f"{n} {self.kept[n]}/{self.tried[n]} kept (-{self.gain_s[n] / 3600:.2f} h)" for n in REPORTED)


def polish_runs(n: int) -> float:
    """How many of a sweep's `n` runs a repair's polish counts (`POLISH_RUNS` plays each): all of a
    small sweep's, then fewer as the sweep grows past `POLISH_CAP`."""
    return max(float(POLISH_MIN), min(float(n), POLISH_CAP * POLISH_CAP / max(1, n)))


def _load(ev: Evaluator, st: InstanceQueues, key: str, rid: str) -> float:
    """A run's share of an instance's work: its lane time, max(u d / c, d / k)."""
    j, s = ev.jobs[rid], st.slots[key]
    k = max(1, min(j.cap, s.memory_mib // max(1, j.memory_mib)))
    return max(j.work_s * j.compute / s.capacity, j.work_s / k) if s.capacity > 0 else float("inf")


def _fits(ev: Evaluator, st: InstanceQueues, key: str, rid: str) -> bool:
    return st.slot_type[key] in ev.types_of[rid] and ev.jobs[rid].memory_mib <= st.slots[key].memory_mib


def _deal(st: InstanceQueues, ev: Evaluator, keys: Sequence[str], rng: random.Random | None, some: bool = False) -> InstanceQueues | None:
    """The runs of `keys` that every one of them may take (with `some`: that at least two of them
    may take), dealt again among those they fit (the others stay where they are): longest first
    (noisy with `rng`), each to the instance of `keys` it fits where it then finishes first (near
    ties: the least-loaded)."""
    need = 2 if some else len(keys)
    pool = [r for k in keys for r in st.q[k] if sum(_fits(ev, st, k2, r) for k2 in keys) >= need]
    if len(pool) < 2:
        return None
    taken = set(pool)
    new = st.copy()
    load = {}
    for k in keys:
        new.q[k] = [r for r in st.q[k] if r not in taken]
        load[k] = sum(_load(ev, st, k, r) for r in new.q[k])

    def size(r: str) -> float:
        w = ev.jobs[r].work_s * max(ev.jobs[r].compute, 0.05)
        return w * (1 + 0.3 * rng.random()) if rng is not None else w

    for r in sorted(pool, key=lambda r: (-size(r), r)):
        # the instance where it then finishes first, its estimated load breaking near ties
        best: tuple[float, float, str] | None = None
        for k in keys:
            if not _fits(ev, st, k, r):
                continue
            f = ev.finish(new.slots[k], new.q[k] + [r])
            cand = (round(f / 60), load[k] + _load(ev, st, k, r), k)  # minutes: near ties go by load
            if f != float("inf") and (best is None or cand < best):
                best = cand
        if best is None:
            return None
        new.q[best[2]].append(r)
        load[best[2]] += _load(ev, st, best[2], r)
    for k in keys:
        new.fin[k] = ev.finish(new.slots[k], new.q[k])
    return new


SPLIT_STATES = 4000  # the exact split of two one-at-a-time queues keeps at most this many partial sums


def _split(st: InstanceQueues, ev: Evaluator, a: str, b: str) -> InstanceQueues | None:
    """Two instances that each run one run at a time (every run there has a sharing cap of 1, so an
    instance finishes at the sum of its runs' solo times): their common runs split between them
    exactly, by dynamic programming over the first instance's load (to the second), minimising the
    later finish; the runs only one of them may take stay. None when a queue shares, or nothing
    changes."""
    if any(ev.jobs[r].cap != 1 for k in (a, b) for r in st.q[k]):
        return None
    pool = [r for k in (a, b) for r in st.q[k] if _fits(ev, st, a, r) and _fits(ev, st, b, r)]
    if len(pool) < 2:
        return None
    taken = set(pool)
    fixed = {k: [r for r in st.q[k] if r not in taken] for k in (a, b)}

    def solo(k: str, r: str) -> float:
        j, c = ev.jobs[r], st.slots[k].capacity
        return j.work_s * max(1.0, j.compute / c) if c > 0 else float("inf")

    base_a = sum(solo(a, r) for r in fixed[a])
    base_b = sum(solo(b, r) for r in fixed[b])
    # states: rounded load of `a` -> (load of a, load of b, runs on a)
    states: dict[int, tuple[float, float, tuple[str, ...]]] = {0: (base_a, base_b, ())}
    for r in sorted(pool, key=lambda r: (-ev.jobs[r].work_s, r)):
        nxt: dict[int, tuple[float, float, tuple[str, ...]]] = {}
        for la, lb, on_a in states.values():
            for cand in ((la + solo(a, r), lb, on_a + (r,)), (la, lb + solo(b, r), on_a)):
                key = round(cand[0])
                old = nxt.get(key)
                if old is None or cand[1] < old[1]:
                    nxt[key] = cand
        if len(nxt) > SPLIT_STATES:  # keep the most promising partial splits
            nxt = dict(sorted(nxt.items(), key=lambda kv: (max(kv[1][0], kv[1][1]), kv[0]))[:SPLIT_STATES])
        states = nxt
    ev.budget.charge(PLAY_S[1] * len(pool) * max(1, len(states)) / 8)
    la, lb, on_a = min(states.values(), key=lambda v: (max(v[0], v[1]), v[0]))
    if max(la, lb) >= max(st.fin[a], st.fin[b]) - 1e-6:
        return None
    chosen = set(on_a)
    new = st.copy()
    by_len = sorted(pool, key=lambda r: (-ev.jobs[r].work_s, r))
    new.q[a] = fixed[a] + [r for r in by_len if r in chosen]
    new.q[b] = fixed[b] + [r for r in by_len if r not in chosen]
    for k in (a, b):
        new.fin[k] = ev.finish(new.slots[k], new.q[k])
    return new


def _unload(st: InstanceQueues, ev: Evaluator, src: str) -> InstanceQueues | None:
    """The runs of `src` another instance may take, longest first, each moved where its new instance
    then finishes first (among each allowed type's earliest-finishing instances) when that is before
    `src` finished; the rest stay in their order."""
    movable = [r for r in st.q[src] if any(k != src and _fits(ev, st, k, r) for k in st.slots)]
    if not movable:
        return None
    moving = set(movable)
    new = st.copy()
    new.q[src] = [r for r in st.q[src] if r not in moving]
    new.fin[src] = ev.finish(new.slots[src], new.q[src])
    of_type: dict[int, list[str]] = {}
    for k in new.slots:
        if k != src:
            of_type.setdefault(new.slot_type[k], []).append(k)
    for r in sorted(movable, key=lambda r: (-ev.jobs[r].work_s, r)):
        best: tuple[float, str, int] | None = None
        for ti in sorted(ev.types_of[r]):
            for k in sorted(of_type.get(ti, []), key=lambda k: (new.fin[k], k))[:TARGETS_PER_TYPE]:
                if ev.jobs[r].memory_mib > new.slots[k].memory_mib:
                    continue
                q = new.q[k]
                for p in sorted({0, len(q) // 2, len(q)}):
                    f = ev.finish(new.slots[k], q[:p] + [r] + q[p:])
                    if f != float("inf") and (best is None or (f, k, p) < best):
                        best = (f, k, p)
        if best is None or best[0] >= st.fin[src] - 1e-6:
            new.q[src].append(r)  # nowhere it would finish before `src` did: it stays
            continue
        f, k, p = best
        new.q[k].insert(p, r)
        new.fin[k] = f
    stay = set(new.q[src])
    if len(stay) == len(st.q[src]):
        return None
    new.q[src] = [r for r in st.q[src] if r in stay]  # those that stay keep their order
    new.fin[src] = ev.finish(new.slots[src], new.q[src])
    return new


def _best_deal(
    st: InstanceQueues, ev: Evaluator, keys: Sequence[str], rng: random.Random, tries: int, noisy: bool, some: bool = False
) -> InstanceQueues | None:
    """The best of `tries` deals of `keys` (the first in plain longest-first order unless `noisy`),
    by the finish profile of those instances."""
    best: InstanceQueues | None = None
    for t in range(tries):
        cand = _deal(st, ev, keys, rng if (noisy or t) else None, some)
        if cand is None:
            return best
        if best is None or better([cand.fin[k] for k in keys], [best.fin[k] for k in keys]):
            best = cand
    return best


def lns_search(best: InstanceQueues, ev: Evaluator, allowance: float, bound: float, stats: LnsStats | None = None) -> InstanceQueues:
    """Destroy-and-repair rounds from the best plan (see the module's docstring) until the allowance
    (reference seconds) is spent, the plan reaches `bound`, or a full round of every neighbourhood on
    every late instance keeps nothing."""
    budget = ev.budget
    stop_at = budget.spent + allowance
    rng = random.Random(0)
    stats = stats if stats is not None else LnsStats()
    gpu_of = {k: best.slot_place[k][0] for k in best.slots}
    polish = PLAY_S[1] * POLISH_RUNS * polish_runs(len(ev.jobs))
    stale = 0
    step = 0
    while budget.spent < stop_at and not budget.expired() and best.makespan() > bound * (1 + 1e-9):
        late = sorted(best.fin, key=lambda k: (-best.fin[k], k))[:LATE]
        name = NEIGHBOURHOODS[step % len(NEIGHBOURHOODS)]
        src = late[(step // len(NEIGHBOURHOODS)) % len(late)]
        step += 1
        if name == "unload":
            cand = _unload(best, ev, src)
        elif name == "pair":
            others = [k for k in best.slots if k != src and best.fin[k] < best.fin[src] and any(_fits(ev, best, k, r) for r in best.q[src])]
            if not others:
                cand = None
            else:
                others.sort(key=lambda k: (best.fin[k], k))
                partner = others[rng.randrange(min(len(others), 8))]
                cand = _split(best, ev, src, partner) or _best_deal(best, ev, [src, partner], rng, DEALS, bool(stale))
        else:
            # the late instance's GPU with the GPU of the same model that finishes first
            mine = [k for k in best.slots if gpu_of[k] == gpu_of[src]]
            fin_gpu: dict[int, float] = {}
            for k in best.slots:
                fin_gpu[gpu_of[k]] = max(fin_gpu.get(gpu_of[k], 0.0), best.fin[k])
            peers = sorted(
                (g for g in fin_gpu if g != gpu_of[src] and any(_fits(ev, best, k, r) for k in best.slots if gpu_of[k] == g for r in best.q[src])),
                key=lambda g: (fin_gpu[g], g),
            )
            keys = mine + ([k for k in best.slots if gpu_of[k] == peers[rng.randrange(min(len(peers), 3))]] if peers else [])
            if BAND and step % 2:  # every other time, the band: the latest-finishing instances and the earliest
                name = "band"
                early = sorted((k for k in best.slots if k not in late), key=lambda k: (best.fin[k], k))
                keys = late[:BAND] + early[:BAND]
            cand = _best_deal(best, ev, keys, rng, DEALS, bool(stale), name == "band") if len(keys) > 1 else None
        if cand is None:
            stale += 1
        else:
            stats.tried[name] += 1
            local_search(cand, ev, min(polish, max(0.0, stop_at - budget.spent)))
            if better(cand.profile(), best.profile()):
                stats.kept[name] += 1
                stats.gain_s[name] += best.makespan() - cand.makespan()
                best = cand
                stale = 0
            else:
                stale += 1
        if stale > 4 * LATE * len(NEIGHBOURHOODS):
            break
    return best
