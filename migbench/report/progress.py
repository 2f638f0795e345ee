"""A sweep's progress as it runs: each instance's runs and how far along they are, the counts, and
an ETA from the duration model corrected by what has finished. `migbench status --watch` draws it.

The plan is read once (`SweepProgress.for_plan`); each refresh takes the runs from the launch state's
status document (`launch.status.status_doc`) and nothing else.

The ETA: a finished run took `actual` where the plan expected `expected` (its planned start to its
planned end, under the duration model); the correction factor is sum(actual) / sum(expected) over
the runs that succeeded. The runs still to go are played forward by the one event player
(`duration.replay.replay`) on the plan's instances: each running run with the work it has left
(its corrected duration less what its elapsed time covered), then each instance's queue in the
plan's order, every duration multiplied by the factor. The replay runs again only when a run
changed state; between changes the ETA keeps its time of day.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from migbench.duration import Demand, Slot, solo_time
from migbench.duration.replay import replay
from migbench.forecast.simulate import plan_instances
from migbench.launch.status import LauncherDoc, RunStatus, StatusDoc
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES
from migbench.plan import Plan

DETAIL_MAX_INSTANCES = 64  # above this many instances the live view summarises per GPU
DETAIL_MAX_RUNS = 600  # ... or above this many runs


@dataclass
class RunProgress:
    id: str
    state: str
    fraction: float | None  # of its expected (corrected) time, for running runs; 1.0 when done
    elapsed_s: float | None


@dataclass
class InstanceProgress:
    key: str
    gpu: int
    label: str
    runs: list[RunProgress] = field(default_factory=list)  # running, then queued, then finished

    def count(self, *states: str) -> int:
        return sum(1 for r in self.runs if r.state in states)

    @property
    def state(self) -> str:
        if self.count(*ACTIVE_STATES):
            return "running"
        if self.count("queued", "interrupted"):
            return "queued"
        return "done" if self.runs else "idle"


@dataclass
class GpuProgress:
    gpu: int
    title: str
    instances: list[InstanceProgress]


@dataclass
class Snapshot:
    sweep: str
    total: int
    done: int
    running: int
    queued: int
    failed: int
    counts: dict[str, int]
    gpus: list[GpuProgress]
    eta_s: float | None  # seconds from now until every run has finished (None: unknown)
    factor: float | None  # actual / expected over the finished runs
    finished_sample: int
    summarised: bool
    launcher: LauncherDoc
    notes: list[str]


class SweepProgress:
    """The plan's side of the live view, computed once; `snapshot(doc)` per refresh."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.demand = {r.id: r.demand() for r in plan.placed_runs()}
        self.home = {r.id: r.instance_key for r in plan.placed_runs()}
        self.order = {rid: n for i in plan.instances for n, rid in enumerate(i.runs)}
        instances, _ = plan_instances(plan)
        self.slots = [Slot(str(i.ref), i.memory_mib, i.capacity) for i in instances]
        cap = {s.key: s.capacity for s in self.slots}
        self.expected: dict[str, float] = {}
        self.timed = all(r.duration_s for r in plan.placed_runs())
        for r in plan.placed_runs():
            if r.est_start_s is not None and r.est_end_s is not None and r.est_end_s > r.est_start_s:
                self.expected[r.id] = float(r.est_end_s) - float(r.est_start_s)
            elif r.duration_s:
                self.expected[r.id] = solo_time(self.demand[r.id], cap.get(r.instance_key or "", 1.0))
        self.summarised = len(plan.instances) > DETAIL_MAX_INSTANCES or len(plan.runs) > DETAIL_MAX_RUNS
        self._eta_key: tuple | None = None
        self._eta_at: float | None = None  # Unix time the sweep is expected to end

    @classmethod
    def for_plan(cls, plan: Plan) -> SweepProgress:
        return cls(plan)

    def factor(self, runs: Sequence[RunStatus]) -> tuple[float | None, int]:
        act = exp = 0.0
        n = 0
        for r in runs:
            e, took = self.expected.get(r["id"]), r.get("elapsed_s")
            if r["state"] == "succeeded" and e and took:
                act += float(took)
                exp += e
                n += 1
        return (act / exp if exp > 0 else None), n

    def snapshot(self, doc: StatusDoc, now: float | None = None) -> Snapshot:
        """The progress in `doc` (`status_doc`'s output)."""
        now = time.time() if now is None else now
        runs = list(doc.get("runs") or [])
        factor, sample = self.factor(runs)
        f = factor or 1.0
        per: dict[str, list[RunProgress]] = {}
        for r in runs:
            where = r.get("instance") if r["state"] in ACTIVE_STATES or r["state"] in FINAL_STATES else r.get("queue")
            where = where or self.home.get(r["id"])
            frac = None
            if r["state"] in ACTIVE_STATES:
                e, took = self.expected.get(r["id"]), r.get("elapsed_s")
                if e and took is not None:
                    frac = min(0.99, float(took) / (e * f))
            elif r["state"] == "succeeded":
                frac = 1.0
            if where:
                per.setdefault(where, []).append(RunProgress(r["id"], r["state"], frac, r.get("elapsed_s")))
        rank = {"starting": 0, "running": 0, "queued": 1, "interrupted": 1}
        gpus = []
        for g in self.plan.fleet:
            insts = []
            for i in sorted(self.plan.instances_of(g.gpu), key=lambda i: i.start):
                rs = sorted(per.get(i.key, []), key=lambda p: (rank.get(p.state, 2), self.order.get(p.id, 0), p.id))
                insts.append(InstanceProgress(i.key, i.gpu, f"{i.profile}@{i.start}", rs))
            node = g.node
            gpus.append(GpuProgress(g.gpu, f"GPU {g.gpu} ({node + ', ' if node else ''}{g.model})", insts))
        counts = dict(doc.get("counts") or {})
        done = sum(counts.get(s, 0) for s in FINAL_STATES)
        running = sum(counts.get(s, 0) for s in ACTIVE_STATES)
        queued = counts.get("queued", 0) + counts.get("interrupted", 0)
        failed = counts.get("failed", 0) + counts.get("oom", 0) + counts.get("abandoned", 0)
        notes: list[str] = []
        eta = self._eta(runs, f, now, notes)
        return Snapshot(
            str(doc.get("sweep") or self.plan.name),
            int(doc.get("total") or len(runs)),
            done,
            running,
            queued,
            failed,
            counts,
            gpus,
            eta,
            factor,
            sample,
            self.summarised,
            doc.get("launcher") or {"alive": False, "pid": None, "state": None},
            notes,
        )

    def _eta(self, runs: Sequence[RunStatus], f: float, now: float, notes: list[str]) -> float | None:
        if not self.timed:
            notes.append("no ETA: the plan has runs without a duration")
            return None
        left = [r for r in runs if r["state"] not in FINAL_STATES]
        if not left:
            return 0.0
        key = tuple(sorted((r["id"], r["state"], r.get("attempt")) for r in left))
        if key == self._eta_key and self._eta_at is not None:
            return max(0.0, self._eta_at - now)
        remaining = remaining_s(self, left, f)
        if remaining is None:
            notes.append("no ETA: the runs left do not fit their instances as planned")
            self._eta_key, self._eta_at = key, None
            return None
        self._eta_key, self._eta_at = key, now + remaining
        return remaining


def remaining_s(p: SweepProgress, left: Sequence[RunStatus], factor: float) -> float | None:
    """Seconds until the runs in `left` (status rows not finished) are done: the one event player on
    the plan's instances, running runs first with the work they have left, every duration x factor."""
    jobs: list[Demand] = []
    queues: dict[str, list[tuple[int, int, str]]] = {s.key: [] for s in p.slots}
    for r in left:
        d = p.demand.get(r["id"])
        if d is None:
            continue
        work = float(d.duration_s or 0.0) * factor
        if r["state"] in ACTIVE_STATES:
            e = p.expected.get(r["id"]) or work
            done = min(0.95, float(r.get("elapsed_s") or 0.0) / (e * factor)) if e else 0.0
            work *= 1.0 - done
            where, first = r.get("instance") or p.home.get(r["id"]), 0
        else:
            where, first = r.get("queue") or p.home.get(r["id"]), 1
        if where not in queues:
            continue
        jobs.append(replace(d, duration_s=max(work, 1e-3)))
        queues[where].append((first, p.order.get(r["id"], 0), r["id"]))
    try:
        res = replay(jobs, p.slots, {k: [rid for _, _, rid in sorted(v)] for k, v in queues.items()}, interference=p.plan.duration_model.interference)
    except ValueError:
        return None
    return res.makespan_s
