"""The launcher's queue policy, in real time: the same rules `duration.replay.replay` plays.

- Each instance starts its own queue in order (the plan's wave order) as room frees: the head
  starts when it fits alongside what runs there (`duration.fits_alongside`: memory sum and sharing
  caps); when the head does not fit, those behind it wait too (FIFO per instance). A run waiting
  out a retry backoff steps aside meanwhile, and is again ahead of those behind it once its backoff
  has passed (it keeps its place).
- Lending (on by default): an instance whose own queue is empty may take the head of another
  instance's queue when that run cannot start at home, is already later than the plan's estimated
  start, its profiles allow this instance, and it fits here alongside what runs.
- After an OOM, a run moves to the queue of a larger instance (`escalation_target`), ahead of the
  runs queued there.

Pure: no processes, no clock, no I/O. `pick` returns what to start now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from migbench.duration import Demand, Slot, fits_alongside
from migbench.plan import PlanInstance


@dataclass(frozen=True)
class Waiting:
    """A queued run as the queue sees it: its demand (memory as now known, sharing cap, allowed
    profiles), its queue; `rank` orders its queue (lower first); `ready` is False while a retry
    backoff runs; `planned_start_s` is when the plan expects it to start (seconds after the start)."""

    id: str
    job: Demand
    queue: str
    rank: int
    ready: bool = True
    planned_start_s: float = 0.0


class Queues:
    """The plan's instances as slots, in plan order."""

    def __init__(self, instances: Sequence[PlanInstance], *, lend: bool = True):
        self.order: list[str] = [i.key for i in instances]
        self.slots: dict[str, Slot] = {i.key: Slot(i.key, int(i.memory_mib), float(i.compute or 1.0), f"{i.profile}") for i in instances}
        self.profile: dict[str, str] = {i.key: i.profile for i in instances}
        self.lend = lend
        self.deferred_until_s: float | None = None

    def allowed(self, w: Waiting, key: str) -> bool:
        return w.job.profiles is None or self.profile[key] in w.job.profiles

    def queues(self, waiting: Sequence[Waiting]) -> dict[str, list[Waiting]]:
        qs: dict[str, list[Waiting]] = {k: [] for k in self.order}
        for w in sorted(waiting, key=lambda w: (w.rank, w.id)):
            if w.queue in qs:
                qs[w.queue].append(w)
        return qs

    def pick(
        self,
        waiting: Sequence[Waiting],
        running: Mapping[str, Sequence[Demand]],
        touched: Sequence[str] | None = None,
        elapsed_s: float | None = None,
    ) -> list[tuple[str, str]]:
        """(run id, instance key) pairs to start now, in start order. `running` maps instance keys to
        the jobs running there. `touched` lists the instances where something changed since the last
        call (a run ended there, or a run became ready in its queue), in that order; None means
        everything (the first call).

        The order of decisions is `duration.replay.replay`'s: each touched instance fills its own queue and,
        when that is empty, lends itself; then every idle instance with an empty queue lends itself.
        Given the same events, the launcher therefore starts the same runs where `replay` does.

        With `elapsed_s` (seconds since the sweep started), a blocked head is lent only once it is
        later than its planned start (`replay`'s `planned_start`): a run on schedule stays where the
        plan put it. `deferred_until_s` is then set to the earliest planned start of a head held back
        that way (when lending could next happen without any other event), else None."""
        run: dict[str, list[Demand]] = {k: list(running.get(k, ())) for k in self.order}
        qs = self.queues(waiting)
        starts: list[tuple[str, str]] = []
        deferred: list[float] = []

        def own(k: str) -> None:
            self._own(k, qs, run, starts)

        def lend_to(k: str) -> None:
            self._lend_to(k, qs, run, starts, deferred, elapsed_s)

        first = touched is None
        for k in self.order if touched is None else [k for k in dict.fromkeys(touched) if k in self.slots]:
            own(k)
            lend_to(k)
        if not first:
            for k in self.order:  # nothing else changed, so this starts nothing more unless touched missed a change
                own(k)
            for k in self.order:
                if not run[k]:
                    lend_to(k)
        self.deferred_until_s = min(deferred) if deferred else None
        return starts

    def _own(self, k: str, qs: dict[str, list[Waiting]], run: dict[str, list[Demand]], starts: list[tuple[str, str]]) -> None:
        """Instance `k` starts its own queue's ready runs, in order, while the next one fits."""
        q = qs[k]
        i = 0
        while i < len(q):
            w = q[i]
            if not w.ready:
                i += 1
                continue
            if not fits_alongside(w.job, run[k], self.slots[k]):
                return
            starts.append((w.id, k))
            run[k].append(w.job)
            q.pop(i)

    def _lend_to(
        self,
        k: str,
        qs: dict[str, list[Waiting]],
        run: dict[str, list[Demand]],
        starts: list[tuple[str, str]],
        deferred: list[float],
        elapsed_s: float | None,
    ) -> None:
        """Instance `k`, with nothing of its own queued, takes the blocked ready heads of other
        queues that may use it, by rank (a head on schedule is deferred instead, see `pick`)."""
        if not self.lend or qs[k]:
            return  # only an instance with nothing of its own queued lends itself
        moved = True
        while moved:
            moved = False
            heads = []
            for k2 in self.order:
                head = next((w for w in qs[k2] if w.ready), None) if k2 != k else None
                if head is not None:
                    heads.append((head.rank, k2, head))
            for _, k2, w in sorted(heads, key=lambda h: (h[0], h[1])):
                if fits_alongside(w.job, run[k2], self.slots[k2]):
                    continue  # it can start at home
                if elapsed_s is not None and elapsed_s <= w.planned_start_s + 1e-6:
                    deferred.append(w.planned_start_s)
                    continue  # on schedule: it starts at home as planned
                if self.allowed(w, k) and fits_alongside(w.job, run[k], self.slots[k]):
                    starts.append((w.id, k))
                    run[k].append(w.job)
                    qs[k2].remove(w)
                    moved = True
                    break

    def escalation_target(
        self,
        w: Waiting,
        failed_on: str,
        waiting: Sequence[Waiting],
        running: Mapping[str, Sequence[Demand]],
    ) -> str | None:
        """After an OOM on `failed_on`: the instance to retry on, or None when the plan has no larger
        one that allows the run. Candidates have more memory than `failed_on` and at least the run's
        (raised) need; among them the one that can start it soonest: where it fits now with nothing
        queued, else the shortest queue, then the smallest memory, then plan order."""
        failed_mib = self.slots[failed_on].memory_mib if failed_on in self.slots else 0
        qs = self.queues([x for x in waiting if x.id != w.id])
        cands = [k for k in self.order if self.slots[k].memory_mib > failed_mib and self.slots[k].memory_mib >= w.job.memory_mib and self.allowed(w, k)]

        def score(k: str) -> tuple[int, int, int, int]:
            busy = list(running.get(k, ()))
            now = 0 if not qs[k] and fits_alongside(w.job, busy, self.slots[k]) else 1
            return (now, len(qs[k]) + len(busy), self.slots[k].memory_mib, self.order.index(k))

        return min(cands, key=score) if cands else None
