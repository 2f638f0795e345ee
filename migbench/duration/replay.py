"""An event-driven player of schedules on MIG instances, under the duration model.

One engine serves three callers, so what the planner promises is what `migbench simulate` replays
and what the launcher's queue does:

- the planner's list scheduling (`list_schedule`): a pending run starts on the first instance of
  its allowed set that has room, highest priority first;
- `replay` of a plan: each instance starts its queued runs in wave order as room frees (optionally
  lending idle instances to runs queued elsewhere, as the launcher does);
- estimates for the launcher (how long until an instance frees).

The duration model and the sharing rule are in `migbench.duration`.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from migbench.duration.model import Demand, Slot, fits_alongside, rate

PLANNED_SLACK_S = 1e-3  # a plan file's start times are rounded to the millisecond


@dataclass
class Event:
    time_s: float
    kind: str  # start | finish
    job: str
    slot: str


@dataclass
class Result:
    """What a played schedule looks like."""

    start_s: dict[str, float]
    end_s: dict[str, float]
    slot_of: dict[str, str]
    order: dict[str, list[str]]  # slot -> job ids in start order
    makespan_s: float
    started_at_once: int
    events: list[Event] = field(default_factory=list)

    def wave_of(self) -> dict[str, int]:
        """Wave = position in its instance's start order after the runs that start at time 0."""
        waves: dict[str, int] = {}
        for _slot, jobs in self.order.items():
            w = 0
            for jid in jobs:
                if self.start_s[jid] <= 1e-9:
                    waves[jid] = 0
                else:
                    w += 1
                    waves[jid] = w
        return waves


class _State:
    """Processor-sharing progress per slot, with a lazy heap of next completions."""

    def __init__(self, slots: Sequence[Slot], interference: float):
        self.slots = {s.key: s for s in slots}
        self.interference = interference
        self.running: dict[str, list[Demand]] = {s.key: [] for s in slots}
        # virtual progress clock per slot (seconds of full-speed work done by each running job)
        self.vclock: dict[str, float] = {s.key: 0.0 for s in slots}
        self.vtarget: dict[str, float] = {}
        self.last_t: dict[str, float] = {s.key: 0.0 for s in slots}
        self.rate: dict[str, float] = {s.key: 1.0 for s in slots}
        self.version: dict[str, int] = {s.key: 0 for s in slots}
        self.heap: list[tuple[float, int, str, int]] = []
        self.seq = 0

    def _advance(self, key: str, t: float) -> None:
        self.vclock[key] += (t - self.last_t[key]) * self.rate[key]
        self.last_t[key] = t

    def _reschedule(self, key: str) -> None:
        self.version[key] += 1
        run = self.running[key]
        r = rate(run, self.slots[key].capacity, self.interference)
        self.rate[key] = r
        if run:
            nxt = min(self.vtarget[j.id] for j in run)
            t = self.last_t[key] + max(0.0, nxt - self.vclock[key]) / r
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, key, self.version[key]))

    def start(self, key: str, job: Demand, t: float) -> None:
        self._advance(key, t)
        self.running[key].append(job)
        # Work is counted in full-speed seconds; `rate` already slows a run whose demand exceeds
        # the slot's capacity, so the target is simply its duration.
        self.vtarget[job.id] = self.vclock[key] + job.work_s
        self._reschedule(key)

    def pop_finish(self) -> tuple[float, str, list[Demand]] | None:
        while self.heap:
            t, _, key, ver = heapq.heappop(self.heap)
            if ver != self.version[key]:
                continue
            self._advance(key, t)
            done = [j for j in self.running[key] if self.vtarget[j.id] <= self.vclock[key] + 1e-6]
            if not done:  # numerical slack: finish the closest one
                done = [min(self.running[key], key=lambda j: self.vtarget[j.id])]
            self.running[key] = [j for j in self.running[key] if j not in done]
            self._reschedule(key)
            return t, key, done
        return None


def _play_out(st: _State, res: Result, after_finish: Callable[[str, float], None], record_events: bool) -> None:
    """Advance through completions until nothing runs, calling `after_finish(slot, t)` after each."""
    makespan = 0.0
    while True:
        ev = st.pop_finish()
        if ev is None:
            break
        t, key, done = ev
        for j in done:
            res.end_s[j.id] = t
            makespan = max(makespan, t)
            if record_events:
                res.events.append(Event(t, "finish", j.id, key))
        after_finish(key, t)
    res.makespan_s = makespan


def play_queue(queue: Sequence[Demand], slot: Slot, interference: float = 0.0) -> tuple[list[float], list[float]]:
    """One instance's queue played on its own (`replay` without lending plays every instance on its
    own): the start and end time of each run, in queue order. The same arithmetic in the same order
    as `_State`, so the times equal what `replay` gives for this instance, to the last bit; the
    planner's local search evaluates a changed instance with it instead of replaying the fleet."""
    n = len(queue)
    starts = [0.0] * n
    ends = [0.0] * n
    vtarget = [0.0] * n
    running: list[int] = []
    run_d: list[Demand] = []
    vclock = last_t = t = 0.0
    r = 1.0
    nxt_i = 0
    mem_free = slot.memory_mib
    while True:
        while nxt_i < n:  # start queue heads while they fit (the sharing rule, as fits_alongside)
            j = queue[nxt_i]
            k = len(run_d) + 1
            if j.memory_mib > mem_free or k > j.max_runs_per_instance or any(k > x.max_runs_per_instance for x in run_d):
                break
            vclock += (t - last_t) * r
            last_t = t
            running.append(nxt_i)
            run_d.append(j)
            vtarget[nxt_i] = vclock + j.work_s
            starts[nxt_i] = t
            mem_free -= j.memory_mib
            r = rate(run_d, slot.capacity, interference)
            nxt_i += 1
        if not running:
            if nxt_i < n:
                raise ValueError(f"{n - nxt_i} queued runs never fit their instance: {[q.id for q in queue[nxt_i : nxt_i + 5]]}")
            return starts, ends
        nxt = min(vtarget[i] for i in running)
        t = last_t + max(0.0, nxt - vclock) / r
        vclock += (t - last_t) * r
        last_t = t
        done = [i for i in running if vtarget[i] <= vclock + 1e-6]
        if not done:  # numerical slack: finish the closest one
            done = [min(running, key=lambda i: vtarget[i])]
        for i in done:
            ends[i] = t
            mem_free += queue[i].memory_mib
        running = [i for i in running if i not in done]
        run_d = [queue[i] for i in running]
        r = rate(run_d, slot.capacity, interference)


def _type_blocks(
    pending: list[Demand],
    by_type: dict[str, list[Slot]],
    allowed: Callable[[Demand, Slot], bool],
    types_of: Callable[[Demand], tuple[str, ...]] | None,
) -> dict[str, list[list]]:
    """{slot type: its blocks}: `list_schedule`'s per-type pending lists. They keep each scan short:
    a job is listed under every type it may use, in blocks of consecutive jobs with the same memory
    and sharing cap. Jobs of one block fit or do not fit alike, and starting a job only takes room
    away, so a scan skips a block whose head does not fit: a fill costs the blocks it passes, not
    the jobs (nothing quadratic in runs). A block is [jobs, position of its first job not yet
    started]; types share the job lists."""
    type_blocks: dict[str, list[list]] = {t: [] for t in by_type}
    if types_of is not None:
        shared: list[tuple[tuple, list[Demand]]] = []
        for j in pending:
            bkey = (j.memory_mib, j.max_runs_per_instance, types_of(j))
            if shared and shared[-1][0] == bkey:
                shared[-1][1].append(j)
            else:
                shared.append((bkey, [j]))
        for bkey, lst in shared:
            for tkey in bkey[2]:
                if tkey in type_blocks:
                    type_blocks[tkey].append([lst, 0])
    else:
        for tkey, ss in by_type.items():
            rep = ss[0]
            blocks = type_blocks[tkey]
            last: tuple[int, int] | None = None
            for j in pending:
                if allowed(j, rep):
                    k = (j.memory_mib, j.max_runs_per_instance)
                    if blocks and last == k:
                        blocks[-1][0].append(j)
                    else:
                        blocks.append([[j], 0])
                    last = k
    return type_blocks


def list_schedule(
    jobs: Sequence[Demand],
    slots: Sequence[Slot],
    allowed: Callable[[Demand, Slot], bool],
    *,
    interference: float = 0.0,
    pinned: dict[str, str] | None = None,
    record_events: bool = False,
    types_of: Callable[[Demand], tuple[str, ...]] | None = None,
) -> Result:
    """Greedy list scheduling: whenever a slot has room, start the highest-priority pending job
    (order of `jobs`) that is allowed there and fits alongside what runs. `pinned` jobs start at
    time 0 on the given slot before anything else (the planner's optimal first wave). `types_of`,
    when given, names the slot types (`Slot.type_key`) a job may use, the same answer `allowed`
    gives, cheaper: jobs are then sorted into types by block, not one by one."""
    st = _State(slots, interference)
    slot_list = list(slots)
    by_type: dict[str, list[Slot]] = {}
    for s in slot_list:
        by_type.setdefault(s.type_key or s.key, []).append(s)
    res = Result({}, {}, {}, {s.key: [] for s in slot_list}, 0.0, 0)
    pinned = pinned or {}
    jobs_by_id = {j.id: j for j in jobs}

    def do_start(s: Slot, j: Demand, t: float) -> None:
        st.start(s.key, j, t)
        res.start_s[j.id] = t
        res.slot_of[j.id] = s.key
        res.order[s.key].append(j.id)
        if record_events:
            res.events.append(Event(t, "start", j.id, s.key))

    for jid, skey in sorted(pinned.items(), key=lambda kv: (kv[1], kv[0])):
        do_start(st.slots[skey], jobs_by_id[jid], 0.0)
    pending = [j for j in jobs if j.id not in pinned]

    type_blocks = _type_blocks(pending, by_type, allowed, types_of)  # each scan short: see there
    # A stale minimum only grows truer as jobs leave, so it never skips a job that fits.
    type_min_mem = {t: min((b[0][0].memory_mib for b in bl), default=0) for t, bl in type_blocks.items()}
    started: set[str] = set()

    def fill(s: Slot, t: float) -> None:
        tkey = s.type_key or s.key
        blocks = type_blocks[tkey]
        bi = 0
        while bi < len(blocks):
            run = st.running[s.key]
            if run:
                if len(run) >= min(jj.cap for jj in run):
                    return
                if s.memory_mib - sum(jj.memory_mib for jj in run) < type_min_mem[tkey]:
                    return
            b = blocks[bi]
            lst, pos = b
            while pos < len(lst) and lst[pos].id in started:
                pos += 1
            if pos == len(lst):
                blocks.pop(bi)
                continue
            j = lst[pos]
            if fits_alongside(j, run, s):
                do_start(s, j, t)
                started.add(j.id)
                pos += 1
            else:
                bi += 1
            b[1] = pos

    for s in slot_list:
        fill(s, 0.0)
    res.started_at_once = len(res.start_s)
    _play_out(st, res, lambda key, t: fill(st.slots[key], t), record_events)
    missing = [j.id for j in jobs if j.id not in res.start_s]
    if missing:
        raise ValueError(f"{len(missing)} jobs could not be scheduled on any allowed slot: {missing[:5]}")
    return res


def replay(
    jobs: Sequence[Demand],
    slots: Sequence[Slot],
    queues: dict[str, list[str]],
    *,
    interference: float = 0.0,
    lend: Callable[[Demand, Slot], bool] | None = None,
    planned_start: dict[str, float] | None = None,
    record_events: bool = False,
) -> Result:
    """Play a plan: each slot starts its queue in order (a run that does not fit yet waits, and
    those behind it wait too). With `lend`, a slot whose own queue is empty may take the head-most
    waiting run of another slot when `lend(job, slot)` allows it and the run cannot start at home;
    with `planned_start`, only a run already later than its planned start is lent (a run on
    schedule stays where the plan put it, so replaying a plan with exact durations reproduces it)."""
    r = _Replay(jobs, slots, queues, interference, lend, planned_start, record_events)
    for sl in slots:
        r.fill(sl.key, 0.0)
    r.res.started_at_once = len(r.res.start_s)
    _play_out(r.st, r.res, r.after_finish, record_events)
    waiting = [jid for v in r.q.values() for jid in v]
    if waiting:
        raise ValueError(f"{len(waiting)} queued runs never fit their instance: {waiting[:5]}")
    return r.res


class _Replay:
    """`replay`'s state while it plays: the queues, the heads that may be lent, and the result."""

    def __init__(
        self,
        jobs: Sequence[Demand],
        slots: Sequence[Slot],
        queues: dict[str, list[str]],
        interference: float,
        lend: Callable[[Demand, Slot], bool] | None,
        planned_start: dict[str, float] | None,
        record_events: bool,
    ) -> None:
        self.st = _State(slots, interference)
        self.lend = lend
        self.planned_start = planned_start
        self.record_events = record_events
        self.jobs_by_id = {j.id: j for j in jobs}
        self.q = {k: deque(v) for k, v in queues.items()}
        self.popped = {k: 0 for k in self.q}  # how many runs have left each queue: its head's original position
        self.order_of = {sl.key: i for i, sl in enumerate(slots)}
        self.res = Result({}, {}, {}, {sl.key: [] for sl in slots}, 0.0, 0)
        self.idle_empty: set[str] = set()  # slots with nothing running and nothing queued
        # Queue heads that may be lent: all heads without planned starts, else heads already late.
        self.late: set[str] = set()
        # The late heads in their original global order (position in their queue, then slot key), kept
        # sorted as heads change, so lending walks them in order without re-sorting them each time.
        self.late_order: list[tuple[int, str]] = []
        self.not_yet: list[tuple[float, str, str]] = []  # (planned start, slot, head run)
        for k in self.q:
            if self.q[k] and lend is not None:
                if planned_start is None:
                    self.make_late(k)
                else:
                    heapq.heappush(self.not_yet, (planned_start.get(self.q[k][0], 0.0), k, self.q[k][0]))

    def make_late(self, key: str) -> None:
        self.late.add(key)
        bisect.insort(self.late_order, (self.popped[key], key))

    def new_head(self, key: str) -> None:
        if key in self.late:
            self.late.discard(key)
            del self.late_order[bisect.bisect_left(self.late_order, (self.popped[key] - 1, key))]
        v = self.q.get(key)
        if not v or self.lend is None:
            return
        if self.planned_start is None:
            self.make_late(key)
        else:
            heapq.heappush(self.not_yet, (self.planned_start.get(v[0], 0.0), key, v[0]))

    def pop_head(self, key: str) -> str:
        jid = self.q[key].popleft()
        self.popped[key] += 1
        self.new_head(key)
        return jid

    def do_start(self, key: str, jid: str, t: float) -> None:
        self.st.start(key, self.jobs_by_id[jid], t)
        self.res.start_s[jid] = t
        self.res.slot_of[jid] = key
        self.res.order[key].append(jid)
        self.idle_empty.discard(key)
        if self.record_events:
            self.res.events.append(Event(t, "start", jid, key))

    def promote(self, t: float) -> None:
        """Heads whose planned start has passed become lendable (by more than the plan file's
        rounding of start times to the millisecond: a run on schedule is never lent)."""
        q, not_yet = self.q, self.not_yet
        while not_yet and not_yet[0][0] + PLANNED_SLACK_S < t:
            _, k2, jid = heapq.heappop(not_yet)
            if q.get(k2) and q[k2][0] == jid and k2 not in self.late:
                self.make_late(k2)

    def lend_to(self, key: str, t: float) -> None:
        """Heads of other queues, in their original global order (position, then slot key)."""
        self.promote(t)
        if not self.late:
            return
        st, q, jobs_by_id, late_order, lend = self.st, self.q, self.jobs_by_id, self.late_order, self.lend
        s = st.slots[key]
        run = st.running[key]
        free = s.memory_mib - sum(j.memory_mib for j in run)
        n = len(run)
        mincap = min((j.cap for j in run), default=1 << 30)
        i = 0
        while i < len(late_order) and n + 1 <= mincap:
            k2 = late_order[i][1]
            jid = q[k2][0]
            j = jobs_by_id[jid]
            # it fits here (the sharing rule, from this slot's room) and may go here, and it cannot
            # start at home
            if (
                k2 == key
                or j.memory_mib > free
                or n + 1 > j.cap
                or not lend(j, s)  # type: ignore[misc]
                or fits_alongside(j, st.running[k2], st.slots[k2])
            ):
                i += 1
                continue
            self.pop_head(k2)  # its entry leaves the order; the queue's next head goes in later
            self.do_start(key, jid, t)
            free -= j.memory_mib
            n += 1
            mincap = min(mincap, j.cap)

    def fill(self, key: str, t: float) -> None:
        st = self.st
        s = st.slots[key]
        own = self.q.get(key)
        while own:
            j = self.jobs_by_id[own[0]]
            if fits_alongside(j, st.running[key], s):
                self.pop_head(key)
                self.do_start(key, j.id, t)
            else:
                break
        if self.lend is not None and not own:
            self.lend_to(key, t)
        if not st.running[key] and not self.q.get(key):
            self.idle_empty.add(key)

    def smallest_lendable(self, t: float) -> int | None:
        """The least memory among the heads an idle slot could take now (late, and unable to start
        at home), or None when there is none: an idle slot with less memory can take nothing."""
        self.promote(t)
        need = None
        for k2 in self.late:
            v = self.q.get(k2)
            if not v:
                continue
            j = self.jobs_by_id[v[0]]
            if not fits_alongside(j, self.st.running[k2], self.st.slots[k2]) and (need is None or j.memory_mib < need):
                need = j.memory_mib
        return need

    def after_finish(self, key: str, t: float) -> None:
        self.fill(key, t)
        if self.lend is not None and self.idle_empty:
            # Idle slots with nothing of their own may now lend themselves to a blocked queue head,
            # in slot order. Slots too small for every lendable head are skipped: lending there
            # would start nothing (the same decisions, without trying each head on each idle slot).
            need = self.smallest_lendable(t)
            if need is None:
                return
            for k in sorted(self.idle_empty, key=self.order_of.__getitem__):
                if self.st.slots[k].memory_mib < need or self.st.running[k] or self.q.get(k):
                    continue
                before = len(self.res.start_s)
                self.fill(k, t)
                if len(self.res.start_s) != before:  # heads changed: the next run of a queue may be smaller
                    need = self.smallest_lendable(t)
                    if need is None:
                        return
