"""A living bench played forward under the duration model: sweeps arrive over time, runs start and
finish, and a policy re-plans at every arrival and every finish (issue 21).

`play(fleet, submissions, policy)` is an event simulation: the policy (by default the re-plan step,
`migbench.planner.recut.replan`) sees the host as it is (`GpuNow`: instances, the runs on them and
their expected ends) and the runs waiting, and answers with re-cuts and starts, which are checked
against the catalogue's rules before they are applied (an instance with a live run is never
destroyed, every layout is legal at every moment, a run starts once, on an instance where the sharing
rule lets it). The runs on an instance share its compute as the duration model says
(`migbench.duration.model.rate`), so ends move when the set on an instance changes.

The result holds each run's start, end and instance, each GPU's layouts over time (the re-cut
times), the event log, the makespan and the compute use over time: compute served (per instance
min(capacity, the compute of its runs), as `migbench simulate` counts it) over the fleet's compute,
and slice use (compute slices of instances with a live run over the fleet's). `swarm_use` averages
them over the time some run was waiting (the swarm larger than the host).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from migbench.duration import Demand, Slot, fits_alongside, instance_capacity, rate
from migbench.duration.model import ComputeBasis
from migbench.plan import Plan
from migbench.planner.fleet import FleetGpu
from migbench.planner.recut import (
    Decision,
    GpuNow,
    LiveInstance,
    LiveRun,
    RecutSettings,
    Start,
    Waiting,
    fill_in_place,
    maximal_layouts,
    priority,
    replan,
    slot_of,
    usable_profiles,
)
from migbench.planner.recutlp import recut_lp_bound
from migbench.types import Layout, Placement, layout_key

Policy = Callable[[float, Sequence[GpuNow], Sequence[Waiting]], Decision]
TOL = 1e-6  # seconds of work: a run this close to its end has ended


class LivingError(RuntimeError):
    """A policy asked for something the host cannot do (a bug in the policy, never a user's input)."""


@dataclass(frozen=True)
class Submission:
    """A sweep's runs submitted at `at_s`."""

    at_s: float
    runs: tuple[Demand, ...]
    name: str = ""


@dataclass(frozen=True)
class RunRecord:
    arrival_s: float
    start_s: float
    end_s: float
    gpu: int
    placement: Placement


@dataclass(frozen=True)
class LogEvent:
    time_s: float
    kind: str  # arrive | destroy | create | start | finish
    gpu: int | None = None
    placement: Placement | None = None
    run: str | None = None


@dataclass(frozen=True)
class Usage:
    """From `from_s` until the next entry: compute use, slice use, runs waiting."""

    from_s: float
    compute: float
    slices: float
    waiting: int


@dataclass
class LivingResult:
    runs: dict[str, RunRecord]
    layouts: dict[int, list[tuple[float, Layout]]]  # per GPU: (from time, layout)
    log: list[LogEvent]
    usage: list[Usage]
    makespan_s: float
    unrunnable: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def recut_times(self) -> dict[int, list[float]]:
        return {g: [t for t, _ in lays[1:]] for g, lays in self.layouts.items()}

    def average(self, what: str = "compute", while_waiting: bool = False) -> float:
        """Average compute (or slice) use over the makespan, or over the time some run waited."""
        num = den = 0.0
        for u, nxt in zip(self.usage, [*self.usage[1:], None]):
            end = nxt.from_s if nxt is not None else self.makespan_s
            if end <= u.from_s or (while_waiting and not u.waiting):
                continue
            num += getattr(u, what) * (end - u.from_s)
            den += end - u.from_s
        return num / den if den > 0 else 0.0


class _Instance:
    def __init__(self, slot: Slot, slices: int):
        self.slot = slot
        self.slices = slices
        self.running: dict[str, tuple[Demand, float, float]] = {}  # id -> (demand, start, work left)

    def rate(self, interference: float) -> float:
        return rate([d for d, _, _ in self.running.values()], self.slot.capacity, interference)


class _Host:
    """The simulated host: instances per GPU, runs in progress, the checks on every change."""

    def __init__(self, fleet: Sequence[FleetGpu], basis: ComputeBasis, interference: float):
        self.fleet = sorted(fleet, key=lambda g: g.index)
        self.basis, self.interference = basis, interference
        self.inst: dict[int, dict[Placement, _Instance]] = {g.index: {} for g in self.fleet}
        self.model = {g.index: g.model for g in self.fleet}
        self.total_slices = sum(g.model.compute_slices for g in self.fleet)

    def snapshot(self, now: float) -> list[GpuNow]:
        out = []
        for g in self.fleet:
            insts = []
            for pl in layout_key(self.inst[g.index]):
                i = self.inst[g.index][pl]
                r = i.rate(self.interference)
                runs = tuple(LiveRun(d, s, now + left / r) for _, (d, s, left) in sorted(i.running.items()))
                insts.append(LiveInstance(pl, runs))
            out.append(GpuNow(g.index, g.model, tuple(insts)))
        return out

    def recut(self, gpu: int, destroy: Sequence[Placement], create: Sequence[Placement]) -> None:
        cur = self.inst.get(gpu)
        if cur is None:
            raise LivingError(f"re-cut of GPU {gpu}, which the fleet does not have")
        for pl in destroy:
            if pl not in cur:
                raise LivingError(f"GPU {gpu}: destroy {pl}, which does not exist")
            if cur[pl].running:
                raise LivingError(f"GPU {gpu}: destroy {pl}, which runs {sorted(cur[pl].running)}")
        model = self.model[gpu]
        new = [p for p in cur if p not in destroy] + list(create)
        problems = model.check(new)
        if problems or len(set(new)) != len(new):
            raise LivingError(f"GPU {gpu}: layout {[str(p) for p in new]} is not legal: {problems or 'duplicate'}")
        for pl in destroy:
            del cur[pl]
        for pl in create:
            prof = model.profile(pl.profile)
            slot = Slot(f"{gpu}:{pl}", int(prof.memory_mib or 0), instance_capacity(model, prof, self.basis), pl.profile)
            cur[pl] = _Instance(slot, prof.compute_slices)

    def start(self, s: Start, d: Demand, now: float) -> None:
        i = self.inst.get(s.gpu, {}).get(s.placement)
        if i is None:
            raise LivingError(f"run {d.id} started on {s.gpu}:{s.placement}, which does not exist")
        if d.profiles is not None and s.placement.profile not in d.profiles:
            raise LivingError(f"run {d.id} may not run on {s.placement.profile}")
        if not fits_alongside(d, [x for x, _, _ in i.running.values()], i.slot):
            raise LivingError(f"run {d.id} does not fit beside the runs on {s.gpu}:{s.placement}")
        i.running[d.id] = (d, now, d.work_s)

    def next_finish(self, now: float) -> float | None:
        best = None
        for insts in self.inst.values():
            for i in insts.values():
                if i.running:
                    r = i.rate(self.interference)
                    t = now + min(left for _, _, left in i.running.values()) / r
                    best = t if best is None else min(best, t)
        return best

    def advance(self, now: float, until: float) -> list[tuple[str, int, Placement]]:
        """Progress every run to `until`; returns the runs that ended then (sorted)."""
        done = []
        for gpu, insts in self.inst.items():
            for pl, i in insts.items():
                if not i.running:
                    continue
                r = i.rate(self.interference)
                for rid, (d, s, left) in list(i.running.items()):
                    left -= (until - now) * r
                    if left <= TOL:
                        done.append((rid, gpu, pl))
                        del i.running[rid]
                    else:
                        i.running[rid] = (d, s, left)
        return sorted(done)

    def usage(self, waiting: int, now: float) -> Usage:
        served = slices = 0.0
        for insts in self.inst.values():
            for i in insts.values():
                if i.running:
                    served += min(i.slot.capacity, sum(d.compute for d, _, _ in i.running.values()))
                    slices += i.slices
        return Usage(now, served / len(self.fleet), slices / self.total_slices, waiting)

    def layout(self, gpu: int) -> Layout:
        return layout_key(self.inst[gpu])

    def idle(self) -> bool:
        return not any(i.running for insts in self.inst.values() for i in insts.values())


def play(
    fleet: Sequence[FleetGpu],
    submissions: Sequence[Submission],
    policy: Policy | None = None,
    *,
    compute_basis: ComputeBasis = ComputeBasis.SM,
    interference: float = 0.0,
    initial: Mapping[int, Layout] | None = None,
) -> LivingResult:
    """Play the submissions on the fleet under `policy` (default: `replan`). `initial`: each GPU's
    layout at time 0 (default: no instances). Runs that no decision ever starts once the host is
    idle and nothing more arrives are returned as `unrunnable`."""
    if policy is None:
        settings = RecutSettings(compute_basis=compute_basis, interference=interference)

        def policy(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
            return replan(now, gpus, waiting, settings)

    host = _Host(fleet, compute_basis, interference)
    log: list[LogEvent] = []
    layouts: dict[int, list[tuple[float, Layout]]] = {g.index: [] for g in host.fleet}
    for gi, lay in sorted((initial or {}).items()):
        host.recut(gi, (), lay)
        log += [LogEvent(0.0, "create", gi, p) for p in layout_key(lay)]
    for g in host.fleet:
        layouts[g.index].append((0.0, host.layout(g.index)))
    subs = sorted(submissions, key=lambda s: s.at_s)
    seen: set[str] = set()
    waiting: dict[str, Waiting] = {}
    runs: dict[str, RunRecord] = {}
    usage: list[Usage] = []
    now, si = 0.0, 0
    while True:
        while si < len(subs) and subs[si].at_s <= now + TOL:
            for d in subs[si].runs:
                if d.id in seen:
                    raise LivingError(f"run {d.id} submitted twice")
                seen.add(d.id)
                waiting[d.id] = Waiting(d, subs[si].at_s)
                log.append(LogEvent(now, "arrive", run=d.id))
            si += 1
        _apply(host, policy(now, host.snapshot(now), sorted(waiting.values(), key=priority)), now, waiting, runs, log, layouts)
        usage.append(host.usage(len(waiting), now))
        nxt = host.next_finish(now)
        if si < len(subs):
            nxt = subs[si].at_s if nxt is None else min(nxt, subs[si].at_s)
        if nxt is None:
            break
        for rid, gpu, pl in host.advance(now, nxt):
            r = runs[rid]
            runs[rid] = RunRecord(r.arrival_s, r.start_s, nxt, gpu, pl)
            log.append(LogEvent(nxt, "finish", gpu, pl, rid))
        now = nxt
    makespan = max((r.end_s for r in runs.values()), default=0.0)
    return LivingResult(runs, layouts, log, usage, makespan, tuple(sorted(waiting)))


def _apply(
    host: _Host,
    dec: Decision,
    now: float,
    waiting: dict[str, Waiting],
    runs: dict[str, RunRecord],
    log: list[LogEvent],
    layouts: dict[int, list[tuple[float, Layout]]],
) -> None:
    """Apply one decision: re-cuts first (checked), then starts (checked)."""
    for rc in dec.recuts:
        host.recut(rc.gpu, rc.destroy, rc.create)
        log += [LogEvent(now, "destroy", rc.gpu, p) for p in rc.destroy]
        log += [LogEvent(now, "create", rc.gpu, p) for p in rc.create]
        lay = host.layout(rc.gpu)
        hist = layouts[rc.gpu]
        if hist and hist[-1][0] == now:
            hist[-1] = (now, lay)
        else:
            hist.append((now, lay))
    for s in dec.starts:
        w = waiting.pop(s.run, None)
        if w is None:
            raise LivingError(f"run {s.run} started at {now} but it is not waiting (started before, or never submitted)")
        host.start(s, w.demand, now)
        runs[s.run] = RunRecord(w.arrival_s, now, float("nan"), s.gpu, s.placement)
        log.append(LogEvent(now, "start", s.gpu, s.placement, s.run))


# -- fixed layouts, for comparison -----------------------------------------------------------------


def fixed_policy(queues: Mapping[tuple[int, Placement], Sequence[str]] | None = None, compute_basis: ComputeBasis = ComputeBasis.SM) -> Policy:
    """A policy that never re-cuts (play it with `initial=` the layouts). Without `queues`, waiting
    runs go greedily onto the instances as they are (`recut.fill_in_place`). With `queues` (a plan's
    runs per instance, in order), each instance starts its arrived runs in queue order while they fit
    (runs not arrived yet are passed over), and an instance with nothing of its own to start lends
    itself to arrived runs that cannot start at home, in priority order (as the launcher lends)."""
    settings = RecutSettings(compute_basis=compute_basis)

    def greedy(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
        starts: list[Start] = []
        taken: set[str] = set()
        for g in gpus:
            got = fill_in_place(g, [w for w in waiting if w.demand.id not in taken], settings)
            starts += got
            taken |= {s.run for s in got}
        return Decision(tuple(starts))

    if queues is None:
        return greedy
    home = {rid: key for key, q in queues.items() for rid in q}

    def planned(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> Decision:
        arrived = {w.demand.id: w.demand for w in waiting}
        state = {(g.index, i.placement): (slot_of(g, i.placement, compute_basis), [r.demand for r in i.runs]) for g in gpus for i in g.instances}
        starts: list[Start] = []

        def try_start(rid: str, key: tuple[int, Placement]) -> bool:
            slot, running = state[key]
            d = arrived[rid]
            if not fits_alongside(d, running, slot) or (d.profiles is not None and key[1].profile not in d.profiles):
                return False
            running.append(d)
            starts.append(Start(rid, key[0], key[1]))
            del arrived[rid]
            return True

        for key in sorted(state, key=lambda k: (k[0], k[1].start, k[1].profile)):
            for rid in queues.get(key, ()):
                if rid in arrived and not try_start(rid, key):
                    break
        for key in sorted(state, key=lambda k: (k[0], k[1].start, k[1].profile)):
            if any(r in arrived for r in queues.get(key, ())):
                continue
            for w in waiting:
                if w.demand.id in arrived and home.get(w.demand.id) != key:
                    try_start(w.demand.id, key)
        return Decision(tuple(starts))

    return planned


def recut_bound(
    fleet: Sequence[FleetGpu], submissions: Sequence[Submission], compute_basis: ComputeBasis = ComputeBasis.SM, interference: float = 0.0
) -> float:
    """A lower bound on the makespan of any schedule, re-cuts free and at any time: the larger of
    `volume_bound` and the time-indexed configuration LP's bound (`planner.recutlp.recut_lp_bound`,
    which sees the instance sizes, the legal layouts and which runs may share an instance; it
    proves nothing when its pricing runs out of effort, and then `volume_bound` stands alone).
    Both hold for every schedule, so their maximum does."""
    volume = volume_bound(fleet, submissions, compute_basis)
    runs = [(s.at_s, d) for s in submissions for d in s.runs]
    lp = recut_lp_bound(fleet, runs, compute_basis, interference, at_least=volume)
    return volume if lp is None else max(volume, lp)


def volume_bound(fleet: Sequence[FleetGpu], submissions: Sequence[Submission], compute_basis: ComputeBasis = ComputeBasis.SM) -> float:
    """A lower bound on the makespan of any schedule, re-cuts free and at any time, from volumes.

    Each run j has its arrival r_j, its best solo time s_j (the fastest instance it fits, alone),
    the memory h_j it holds while it runs (its own when it may share, else the smallest instance it
    fits) and its compute-work c_j * w_j. Under the duration model its progress rate is at most
    min(1, capacity / c_j) on the fastest instance it fits, that is w_j / s_j, whatever shares with
    it; so at any time a >= r_j it still needs at least (s_j - (a - r_j))+ of wall time, holding
    h_j all along, and consumes at least c_j * (w_j - (a - r_j) * w_j / s_j)+ of compute. Runs hold
    disjoint memory (instances are disjoint, runs on one share its memory), a GPU offers at most
    its largest layout's memory and its largest layout's compute (sum of c_j * rate_j on an
    instance <= its capacity), so for every a, with M and C the fleet's:

    - T >= r_j + s_j for every run;
    - T >= a + (sum over runs of h_j * (s_j - (a - r_j)+)+) / M (memory still to be held after a);
    - T >= a + (sum over runs of c_j * (w_j - (a - r_j)+ * w_j / s_j)+) / C (compute still to serve).

    Runs arriving after a count whole (the bound of a run known only at its arrival); runs arrived
    before count what they must still do even had they started at once on their fastest instance,
    the remainder the former bound (runs arriving at or after a only) left out. Both sums are
    piecewise linear in a, with breaks at the arrivals and at each r_j + s_j, so their maximum is
    at one of those times, where they are evaluated.
    """
    models = {g.model.key: g.model for g in fleet}
    mem_cap = comp_cap = 0.0
    for g in fleet:
        lays = maximal_layouts(g.model)
        mem_cap += max(sum(g.model.profile(p.profile).memory_mib or 0 for p in lay) for lay in lays)
        comp_cap += max(sum(instance_capacity(g.model, g.model.profile(p.profile), compute_basis) for p in lay) for lay in lays)
    bound = 0.0
    items: list[tuple[float, float, float, float]] = []  # (arrival, solo time, memory held, compute)
    for sub in submissions:
        for d in sub.runs:
            fits = [
                (p, m)
                for m in models.values()
                for p in usable_profiles(m)
                if d.memory_mib <= (p.memory_mib or 0) and (d.profiles is None or p.name in d.profiles)
            ]
            if not fits:
                continue
            solo = min(d.work_s * max(1.0, d.compute / instance_capacity(m, p, compute_basis)) for p, m in fits)
            held = d.memory_mib if d.max_runs_per_instance > 1 else min(p.memory_mib or 0 for p, _ in fits)
            bound = max(bound, sub.at_s + solo)
            items.append((sub.at_s, solo, float(held), d.compute * d.work_s))
    for a in sorted({it[0] for it in items} | {it[0] + it[1] for it in items}):
        mem = comp = 0.0
        for r, s, h, cw in items:
            left = 1.0 - max(0.0, a - r) / s  # the share of its solo time still ahead at a, at best
            if left > 0:
                mem += h * s * left
                comp += cw * left
        bound = max(bound, a + mem / mem_cap, a + comp / comp_cap)
    return bound


def play_bench(plan: Plan, fleet: Sequence[FleetGpu], skip: set[str] | frozenset[str] = frozenset()) -> LivingResult:
    """A bench plan's runs (but `skip`: those that finished) played from now as one submission,
    under the bench's scheduler, from the bench plan's layouts (the host as the bench last cut it):
    what `migbench simulate` says of a bench. Runs that have started are played from their start
    again (the forecast of the work left is at most this)."""
    subs = [Submission(0.0, tuple(r.demand() for r in plan.runs if r.id not in skip), "bench")]
    initial = {g.gpu: tuple(plan.layout(g.gpu)) for g in plan.fleet}
    dm = plan.duration_model
    return play(fleet, subs, compute_basis=dm.compute_basis, interference=dm.interference, initial=initial)
