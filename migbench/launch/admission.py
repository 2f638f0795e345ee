"""Admission: which runs the launcher has, in which queue, and which of them start now.

`Admission` holds what the launcher knows of the plan (its runs and instances), the queues
(`queue.Queues`), and when to decide again: decisions are taken when a run ends, a backoff ends,
or a held-back head falls behind the plan's schedule (`lend_at`); `touched` lists the instances to
reconsider (None: all).

`admit(plan, now)` brings the runs' rows (the journal's) to a plan: a new placed run is queued on
its instance, a stored one keeps its state and takes the plan's queue and rank (unless an OOM moved
it to a larger instance), the plan's unplaced runs and the waiting runs it no longer has are
abandoned. The launcher calls it once when it starts; called again with another plan it adds the
new runs and instances to the queues.

## The queue

`queue.Queues` decides, with `engine.replay`'s rules (FIFO per instance in wave order, memory and
sharing caps through `engine.fits_alongside`, lending of a blocked head that is behind the plan's
schedule to an instance with nothing of its own queued). Decisions are taken when a run ends, a
backoff ends, or a held-back head falls behind schedule. A failed run is retried after
`backoff_s * 2**(failures-1)` in its place; an OOM moves it ahead of the queue of a larger
instance (`Queues.escalation_target`). The flapping guard stops new starts once `flapping_max`
distinct runs fail within `flapping_window_s` of their start.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import replace

from migbench.duration import Demand
from migbench.launch.journal import Journal
from migbench.launch.options import OOM_RANK_SHIFT
from migbench.launch.prepare import start_order
from migbench.launch.queue import Queues, Waiting
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES, Queue, RunRow, key_of
from migbench.plan import Plan, PlanInstance, PlanRun


class Admission:
    """The plan's runs and instances as queues over the journal's rows. `unbound` is the set of
    instances no run may start on now (the device check's, read at each decision)."""

    def __init__(self, journal: Journal, *, lend: bool = True, unbound: Collection[str] = frozenset(), t0: float | None = None):
        self.journal = journal
        self.lend = lend
        self.unbound = unbound
        self.plan_runs: dict[str, PlanRun] = {}
        self.inst: dict[str, PlanInstance] = {}
        self.default_retries = 0
        self.queues = Queues([], lend=lend)
        self.touched: list[str] | None = None  # instances to reconsider; None: all (first pass)
        self.lend_at: float | None = None  # when a held-back head falls behind the plan's schedule (Unix s)
        self.t0 = time.time() if t0 is None else t0  # the sweep's start, for the plan's estimated starts

    # -- the plan --------------------------------------------------------------------------------
    def admit(self, plan: Plan, now: float) -> list[RunRow]:
        """Bring the journal's rows to `plan` (see the module's notes); returns the rows changed,
        the placed ones first in start order. The caller marks and writes them."""
        self.plan_runs = {r.id: r for r in plan.runs}
        self.inst = {i.key: i for i in plan.instances}
        self.default_retries = plan.launch.retries
        self.queues = Queues(plan.instances, lend=self.lend)
        self.touched = None
        rows = self.journal.rows
        order = start_order(plan)
        pos = {rid: n for i in plan.instances for n, rid in enumerate(i.runs)}  # queue rank, as replay
        changed: list[RunRow] = []
        for n, r in enumerate(order):
            row = self._placed_row(r, n, rows.get(r.id), pos.get(r.id, n), now)
            changed.append(row)
            rows[r.id] = row
        n_placed = len(order)
        for n, u in enumerate(plan.unplaced):
            row = rows.get(u.id) or RunRow(id=u.id, ord=n_placed + n, memory_mib=u.memory_mib, need_mib=u.memory_mib)
            if row.state not in (*FINAL_STATES, *ACTIVE_STATES, "unknown"):
                row.state, row.last_error = "abandoned", f"not placed by the plan: {u.reason}"
            changed.append(row)
            rows[u.id] = row
        plan_ids = {r.id for r in order} | {u.id for u in plan.unplaced}
        for rid, row in rows.items():
            if rid not in plan_ids and row.state in ("queued", "interrupted"):
                row.state, row.last_error = "abandoned", "no longer in the plan"
                changed.append(row)
        return changed

    def _placed_row(self, r: PlanRun, n: int, row: RunRow | None, rank: int, now: float) -> RunRow:
        """The row of placed run `r` (`n`-th to start, `rank` in its queue): new and queued, else
        the stored one brought to this plan (its queue kept when it was escalated; an abandoned
        run queued again)."""
        home = r.ref  # placed: it has an instance
        if row is None:
            return RunRow(
                id=r.id,
                ord=n,
                grp=r.group,
                state="queued",
                home=home,
                queue=home,
                rank=rank,
                memory_mib=r.memory_mib,
                need_mib=r.memory_mib,
                queued_at=now,
            )
        escalated = row.queue != row.home and key_of(row.queue) in self.inst
        row.ord, row.grp, row.memory_mib, row.home = n, r.group, r.memory_mib, home
        if not escalated:
            row.queue, row.rank, row.need_mib = home, rank, r.memory_mib
        if row.state == "abandoned":
            row.state, row.last_error = "queued", None
        return row

    def in_plan(self, row: RunRow) -> bool:
        """Whether the run can still be queued: the plan has it, and its queue's instance."""
        return row.id in self.plan_runs and key_of(row.queue) in self.inst

    def retries(self, run_id: str) -> int:
        """How many times the run is retried after a failure (0 when the plan no longer has it)."""
        pr = self.plan_runs.get(run_id)
        if pr is None:
            return 0
        return int(pr.retries) if pr.retries is not None else self.default_retries

    def timeout_s(self, run_id: str) -> float | None:
        pr = self.plan_runs.get(run_id)
        return pr.timeout_s if pr is not None else None

    # -- what changed ----------------------------------------------------------------------------
    def touch(self, key: str | None) -> None:
        """Something changed on instance `key`: the next decision reconsiders it."""
        if key and self.touched is not None and key not in self.touched:
            self.touched.append(key)

    def reconsider_all(self) -> None:
        self.touched = None

    def lending_due(self, now: float) -> bool:
        """A held-back head is now behind schedule: every instance is reconsidered (and True)."""
        if self.lend_at is not None and now >= self.lend_at:
            self.lend_at, self.touched = None, None
            return True
        return False

    def queued(self) -> list[RunRow]:
        """The queued runs the plan has."""
        return [r for r in self.journal.rows.values() if r.state == "queued" and r.id in self.plan_runs]

    def end_backoffs(self, now: float) -> float | None:
        """Runs whose retry backoff is over are ready again, in their place. Returns the earliest
        backoff still running (its end, Unix s), if any."""
        backoffs = []
        for r in self.journal.rows.values():
            if r.state == "queued" and r.not_before is not None:
                if r.not_before > now:
                    backoffs.append(r.not_before)
                else:
                    r.not_before = None  # its backoff is over: it is ready again, in its place
                    self.journal.mark(r.id)
                    self.touch(key_of(r.queue))
        return min(backoffs) if backoffs else None

    # -- deciding --------------------------------------------------------------------------------
    def idle(self) -> bool:
        """Nothing changed since the last decision (a decision now would start nothing)."""
        return self.touched is not None and not self.touched

    def waiting(self, now: float) -> list[Waiting]:
        out = []
        for row in self.journal.rows.values():
            if row.state != "queued":
                continue
            pr = self.plan_runs.get(row.id)
            key = key_of(row.queue)
            if pr is None or key is None or key not in self.inst or key in self.unbound:
                continue
            out.append(
                Waiting(
                    row.id,
                    replace(pr.demand(), memory_mib=row.need_mib),
                    key,
                    row.rank,
                    ready=row.not_before is None or row.not_before <= now,
                    planned_start_s=float(pr.est_start_s or 0.0),
                )
            )
        return out

    def running_jobs(self, running: Iterable[tuple[str, str]]) -> dict[str, list]:
        """The demands of the running runs (run id, instance), by instance."""
        jobs: dict[str, list] = {}
        for rid, key in running:
            row = self.journal.rows[rid]
            pr = self.plan_runs.get(rid)
            demand = replace(pr.demand(), memory_mib=row.need_mib) if pr else Demand(rid, row.need_mib)
            jobs.setdefault(key, []).append(demand)
        return jobs

    def pick(self, now: float, running: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """(run id, instance) pairs the queue policy starts now, given the running runs; the
        instances touched since the last decision are reconsidered."""
        touched, self.touched = self.touched, []
        starts = self.queues.pick(self.waiting(now), self.running_jobs(running), touched, elapsed_s=now - self.t0)
        due = self.queues.deferred_until_s
        self.lend_at = None if due is None else self.t0 + due + 0.001  # a held-back head becomes late
        return starts

    def escalate(self, row: RunRow, need_mib: int, failed_on: str, running: Iterable[tuple[str, str]]) -> Queue | None:
        """After an OOM on `failed_on`: the larger instance to move the run to (`Queues.escalation_target`),
        or None."""
        pr = self.plan_runs.get(row.id)
        if pr is None or row.queue is None:
            return None
        w = Waiting(row.id, replace(pr.demand(), memory_mib=need_mib), row.queue.key, row.rank)
        target = self.queues.escalation_target(w, failed_on, self.waiting(time.time()), self.running_jobs(running))
        return None if target is None else self.inst[target].ref

    def where(self, target: Queue) -> str:
        """An instance a run moves to, in words."""
        return f"{target} ({self.inst[target.key].memory_mib} MiB)"

    def booked(self, rows: Iterable[RunRow]) -> list[RunRow]:
        """The rows whose instances the launch register books (running and queued ones: a queued
        run's queue is its instance)."""
        return list(rows)

    def move(self, row: RunRow, target: Queue, need_mib: int) -> None:
        """Queue the run on `target` ahead of the runs queued there (after an OOM)."""
        row.state = "queued"
        row.queue = target
        row.need_mib = need_mib
        row.rank = row.ord - OOM_RANK_SHIFT
        self.touch(target.key)
        row.not_before = None
