"""The re-plan step of a living bench: what to start, re-cut and drain now (issue 21).

A pure, deterministic function of the host's state at one event (an arrival, a finish): the time
now, per GPU its instances with the runs on them (and when each is expected to end under the
duration model), and the runs waiting. `replan` answers with a `Decision`:

- `starts`: waiting runs started now, each on an instance that exists after the decision's re-cuts;
- `recuts`: per GPU, idle instances destroyed and new ones created (`profile@start`); an instance
  with a live run is never destroyed, moved or re-cut;
- `draining`: GPUs kept free of new small runs so that a run needing a large instance can start
  when they drain (a small run may still backfill there when it ends before the GPU drains and
  slows nothing that runs there).

How (kept simple on purpose: for a batch known in advance one re-cut per GPU is never beaten by
more, and gains there are a few percent; the value is in sweeps that arrive over time):

1. Waiting runs are taken in priority order: longest first (whatever their arrival: the run that
   would end latest if started now goes first, which is what shortens a makespan), then arrival,
   most memory, id.
2. A run is *big* on a model when the smallest profile it fits covers more than half the GPU's
   memory slices (a whole A100-80GB for 60 GiB). Big runs are held for draining GPUs: at most
   `max_draining` GPUs (default half the fleet) host or await big runs at once, so the swarm of
   small runs keeps the rest. The GPUs that drain first (latest expected end of their live runs,
   then index) are chosen; a drained one is cut for the big runs first, the rest of it for small runs.
3. Every other GPU, in index order, takes the layout that serves the most waiting work now: among
   its current layout and every maximal legal layout that keeps all its busy instances where they
   are, the one whose greedy packing (each run, in priority order, onto the instance it fits most
   tightly under the sharing rule) maximises the memory of the runs progressing, weighted by their
   rate under the duration model; ties go to fewer destroyed and created instances, so a GPU is
   re-cut only when the new layout is strictly better for what waits. A fully idle GPU is re-cut
   whole; a busy one only in its idle slices.

4. A bounded look-ahead: a few variations of that greedy decision (`VARIATIONS`: no GPU newly
   drained for big runs now, or at most one; at most 3 GPUs hosting or awaiting big runs, now
   and at every later decision) are played forward with the plain decision (`rollout`: the runs
   known now, live and waiting, nothing that may arrive later, on the host as the decision leaves
   it, re-planned at every finish by the greedy step, varied as the candidate says). A variation
   replaces the plain decision only when its play starts more runs, or as many and ends strictly
   sooner, or as soon with a strictly smaller summed end time; the first in `VARIATIONS` order wins
   ties. So the look-ahead never keeps a decision its own play says is worse than the plain one,
   and it is deterministic. Bounded: at most `len(VARIATIONS) + 1` plays per event, and none where
   GPUs x (runs known)^2 exceed `BUDGET` (the greedy decision stands; an event then costs what it did).

This greedy fit is chosen over calling the static planner per event: it is a few thousand
arithmetic steps per GPU and event, with no budget, so a bench that re-plans at every finish stays
deterministic and instant; the static planner (`planner.solve`) remains the tool for one batch known
in advance (`bench/living.py` compares the two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from migbench.catalog.model import GpuModel, Profile
from migbench.duration import Demand, Slot, instance_capacity, rate
from migbench.duration.model import ComputeBasis
from migbench.types import Layout, Placement, layout_key

EPS = 1e-6


@dataclass(frozen=True)
class LiveRun:
    """A run on an instance: when it started and when the duration model expects it to end."""

    demand: Demand
    start_s: float
    end_s: float


@dataclass(frozen=True)
class LiveInstance:
    placement: Placement
    runs: tuple[LiveRun, ...] = ()

    @property
    def busy(self) -> bool:
        return bool(self.runs)


@dataclass(frozen=True)
class GpuNow:
    """One GPU as it is now: its model and its instances (idle ones included)."""

    index: int
    model: GpuModel
    instances: tuple[LiveInstance, ...] = ()

    @property
    def layout(self) -> Layout:
        return layout_key(i.placement for i in self.instances)

    @property
    def busy_placements(self) -> frozenset[Placement]:
        return frozenset(i.placement for i in self.instances if i.busy)


@dataclass(frozen=True)
class Waiting:
    """A submitted run not started yet."""

    demand: Demand
    arrival_s: float


@dataclass(frozen=True)
class Start:
    run: str
    gpu: int
    placement: Placement


@dataclass(frozen=True)
class Recut:
    gpu: int
    destroy: tuple[Placement, ...]
    create: tuple[Placement, ...]


@dataclass(frozen=True)
class Decision:
    starts: tuple[Start, ...] = ()
    recuts: tuple[Recut, ...] = ()
    draining: tuple[int, ...] = ()


@dataclass(frozen=True)
class RecutSettings:
    """`max_draining`: GPUs that may host or await big runs at once (None: half the fleet, at least
    one). `compute_basis` and `interference` as in the sweep's duration model."""

    max_draining: int | None = None
    compute_basis: ComputeBasis = ComputeBasis.SM
    interference: float = 0.0
    lookahead: bool = True


def priority(w: Waiting) -> tuple:
    """Longest first, then arrival, most memory, most compute, id (longest first across sweeps: a
    long run arriving late is the one that sets the makespan; arrival-first cost 2 h of 58 on the
    two-pipelines bench)."""
    d = w.demand
    return (-d.work_s, w.arrival_s, -d.memory_mib, -d.compute, d.id)


class _ModelFacts:
    """What the re-plan step asks of one GPU model, computed once: hashing a `GpuModel` (a deep
    frozen dataclass) for every run and event costs more than the decision itself."""

    def __init__(self, model: GpuModel):
        self.model = model
        ps = [p for p in model.plain_profiles() if p.memory_mib]
        self.profiles = tuple(sorted(ps, key=lambda p: (p.memory_mib or 0, p.compute_slices, p.name)))
        self._layouts: tuple[Layout, ...] | None = None
        self.big: dict[tuple[int, tuple[str, ...] | None], bool] = {}
        self.slots: dict[tuple[int, Placement, ComputeBasis], Slot] = {}
        self.candidates: dict[tuple[Layout, frozenset[Placement]], list[Layout]] = {}

    @property
    def layouts(self) -> tuple[Layout, ...]:
        if self._layouts is None:
            self._layouts = tuple(self.model.layouts([p.name for p in self.profiles]))
        return self._layouts


_FACTS: dict[int, _ModelFacts] = {}


def _facts(model: GpuModel) -> _ModelFacts:
    f = _FACTS.get(id(model))
    if f is None or f.model is not model:
        if len(_FACTS) > 64:
            _FACTS.clear()
        f = _FACTS[id(model)] = _ModelFacts(model)
    return f


def usable_profiles(model: GpuModel) -> tuple[Profile, ...]:
    """The plain profiles the catalogue gives a memory size for, smallest first."""
    return _facts(model).profiles


def maximal_layouts(model: GpuModel) -> tuple[Layout, ...]:
    """Every maximal legal layout of the usable profiles (the catalogue's rules), in its order."""
    return _facts(model).layouts


def smallest_fit(d: Demand, model: GpuModel) -> Profile | None:
    for p in usable_profiles(model):
        if d.memory_mib <= (p.memory_mib or 0) and (d.profiles is None or p.name in d.profiles):
            return p
    return None


def is_big(d: Demand, model: GpuModel) -> bool:
    """The run's smallest fitting profile covers more than half the GPU's memory slices."""
    f = _facts(model)
    key = (d.memory_mib, d.profiles)
    hit = f.big.get(key)
    if hit is None:
        p = smallest_fit(d, model)
        hit = f.big[key] = p is not None and 2 * p.memory_slices > model.memory_slices
    return hit


class _Inst:
    """An instance while a decision is packed: its slot and the runs on it (live, then new), with
    their memory, compute and least sharing cap kept as runs join."""

    def __init__(self, gpu: int, pl: Placement, slot: Slot, running: list[Demand]):
        self.gpu, self.placement, self.slot = gpu, pl, slot
        self.running: list[Demand] = []
        self.free_mib = slot.memory_mib
        self.compute = 0.0
        self.cap = 1 << 30
        for d in running:
            self.add(d)

    def add(self, d: Demand) -> None:
        self.running.append(d)
        self.free_mib -= d.memory_mib
        self.compute += d.compute
        self.cap = min(self.cap, d.max_runs_per_instance)

    def takes(self, d: Demand) -> bool:
        """The sharing rule (`fits_alongside`), and no compute oversubscribed by sharing: the memory
        of runs slowed by sharing would progress no faster."""
        n = len(self.running) + 1
        if d.memory_mib > self.free_mib or n > self.cap or n > d.max_runs_per_instance:
            return False
        return not self.running or self.compute + d.compute <= self.slot.capacity + EPS

    def open(self, least_mib: int) -> bool:
        return self.free_mib >= least_mib and len(self.running) < self.cap


Accept = Callable[[Demand, _Inst], bool]


def slot_of(g: GpuNow, pl: Placement, basis: ComputeBasis = ComputeBasis.SM) -> Slot:
    """The instance `pl` of GPU `g` as the duration model sees it."""
    cache = _facts(g.model).slots
    hit = cache.get((g.index, pl, basis))
    if hit is None:
        prof = g.model.profile(pl.profile)
        hit = cache[(g.index, pl, basis)] = Slot(f"{g.index}:{pl}", int(prof.memory_mib or 0), instance_capacity(g.model, prof, basis), pl.profile)
    return hit


def _insts(g: GpuNow, lay: Layout, basis: ComputeBasis) -> list[_Inst]:
    live = {i.placement: [r.demand for r in i.runs] for i in g.instances}
    return [_Inst(g.index, pl, slot_of(g, pl, basis), list(live.get(pl, []))) for pl in lay]


def pack(insts: list[_Inst], queue: Sequence[Waiting], accept: Accept | None = None) -> list[tuple[str, _Inst]]:
    """Greedy: each run in queue order onto the instance it fits most tightly (least memory left,
    then least compute, then placement order), under the sharing rule, and beside other runs only
    while their compute stays within the instance's (no run slowed by sharing). Mutates `insts`;
    returns (run id, instance) pairs."""
    out: list[tuple[str, _Inst]] = []
    if not queue or not insts:
        return out
    least = min(w.demand.memory_mib for w in queue)
    room = max(i.free_mib for i in insts if i.open(least)) if any(i.open(least) for i in insts) else -1
    for w in queue:
        d = w.demand
        if room < least:
            break
        if d.memory_mib > room:
            continue
        best: _Inst | None = None
        for i in insts:
            if not i.takes(d) or (d.profiles is not None and i.placement.profile not in d.profiles):
                continue
            if accept is not None and not accept(d, i):
                continue
            if best is None or (i.free_mib, i.slot.capacity) < (best.free_mib, best.slot.capacity):
                best = i
        if best is not None:
            was = best.free_mib
            best.add(d)
            out.append((d.id, best))
            if was >= room:  # the roomiest instance changed: the room left may have shrunk
                room = max((i.free_mib for i in insts if i.open(least)), default=-1)
    return out


def fill_in_place(g: GpuNow, queue: Sequence[Waiting], st: RecutSettings = RecutSettings()) -> list[Start]:
    """The greedy packing of `queue` onto GPU `g`'s instances as they are (no re-cut): what a fixed
    layout's dispatcher starts."""
    return [Start(rid, i.gpu, i.placement) for rid, i in pack(_insts(g, g.layout, st.compute_basis), queue)]


def score(insts: Sequence[_Inst], interference: float) -> float:
    """Memory of the runs progressing, each weighted by its rate (the greedy fit's objective)."""
    total = 0.0
    for i in insts:
        if i.running:
            total += sum(d.memory_mib for d in i.running) * rate(i.running, i.slot.capacity, interference)
    return round(total, 6)


def _candidates(g: GpuNow) -> list[Layout]:
    """The current layout, then every maximal legal layout keeping the busy instances, one per
    multiset of new instances (the one changing least), in catalogue order."""
    busy = g.busy_placements
    cur = g.layout
    cache = _facts(g.model).candidates
    hit = cache.get((cur, busy))
    if hit is not None:
        return hit
    if len(cache) > 4096:
        cache.clear()
    out: dict[tuple, tuple[int, int, Layout]] = {}
    for pos, lay in enumerate((cur, *maximal_layouts(g.model))):
        if not busy <= set(lay):
            continue
        key = tuple(sorted(p.profile for p in lay if p not in busy))
        ch = _changes(cur, lay)
        if key not in out or (ch, pos) < out[key][:2]:
            out[key] = (ch, pos, lay)
    hit = cache[(cur, busy)] = [lay for _, _, lay in sorted(out.values(), key=lambda v: (v[0], v[1]))]
    return hit


def _changes(cur: Layout, new: Layout) -> int:
    return len(set(cur) ^ set(new))


def choose_layout(
    g: GpuNow, queues: Sequence[Sequence[Waiting]], st: RecutSettings, layouts: Sequence[Layout] | None = None
) -> tuple[Layout, list[tuple[str, _Inst]]]:
    """The candidate layout whose packing of `queues` (one after the other, each scored in turn)
    scores best; fewer changes and catalogue order break ties. Returns it with its packing."""
    best: tuple | None = None
    for lay in layouts if layouts is not None else _candidates(g):
        insts = _insts(g, lay, st.compute_basis)
        placed: list[tuple[str, _Inst]] = []
        key: list[float] = []
        for q in queues:
            placed += pack(insts, q)
            key.append(-score(insts, st.interference))
        k = (*key, _changes(g.layout, lay))
        if best is None or k < best[0]:
            best = (k, lay, placed)
    assert best is not None
    return best[1], best[2]


def _recut(g: GpuNow, lay: Layout) -> Recut | None:
    cur = set(g.layout)
    destroy = layout_key(p for p in cur if p not in lay)
    create = layout_key(p for p in lay if p not in cur)
    if not destroy and not create:
        return None
    assert not set(destroy) & g.busy_placements, "a busy instance would be re-cut"
    return Recut(g.index, destroy, create)


def _drain_at(g: GpuNow, now: float) -> float:
    return max((r.end_s for i in g.instances for r in i.runs), default=now)


def _hosts_big(g: GpuNow) -> bool:
    """The GPU runs a big run of the bench's own (an instance another launch holds is none)."""
    return any(is_big(r.demand, g.model) and not _held(r) for i in g.instances for r in i.runs)


def _held(r: LiveRun) -> bool:
    return r.end_s >= HELD_END_S / 2


def choose_draining(now: float, gpus: Sequence[GpuNow], big: Sequence[Waiting], st: RecutSettings, extra: int | None = None) -> list[GpuNow]:
    """The GPUs to drain for the waiting big runs: those that drain first, within `max_draining`
    (and at most `extra` of them when it is given). Instances another launch holds count neither
    as hosting a big run nor as draining."""
    if not big:
        return []
    limit = st.max_draining if st.max_draining is not None else max(1, len(gpus) // 2)
    hosting = [g for g in gpus if _hosts_big(g)]
    k = min(len(big), max(0, limit - len(hosting)), len(big) if extra is None else extra)
    # a GPU with an instance another launch holds never drains: draining it would only take a place
    cands = [g for g in gpus if g not in hosting and _drain_at(g, now) < HELD_END_S / 2 and any(is_big(w.demand, g.model) for w in big)]
    return sorted(cands, key=lambda g: (_drain_at(g, now), g.index))[:k]


def _backfill(g: GpuNow, now: float, st: RecutSettings) -> Accept:
    """On a draining GPU, a small run may join only if it ends before the GPU drains and slows no
    run already there."""
    until = _drain_at(g, now)

    def ok(d: Demand, i: _Inst) -> bool:
        before = rate(i.running, i.slot.capacity, st.interference)
        after = rate([*i.running, d], i.slot.capacity, st.interference)
        return after >= before - EPS and now + d.work_s / after <= until + EPS

    return ok


@dataclass
class _Plan:
    starts: list[Start] = field(default_factory=list)
    recuts: list[Recut] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)

    def take(self, placed: list[tuple[str, _Inst]]) -> None:
        for rid, inst in placed:
            self.starts.append(Start(rid, inst.gpu, inst.placement))
            self.taken.add(rid)


@dataclass(frozen=True)
class Knobs:
    """One event's variation of the greedy decision: the look-ahead's candidates (below).
    `drain`: GPUs that may start draining for big runs now, beyond those already hosting them (None:
    as `max_draining` allows); `limit`: `max_draining` for this decision (None: the settings')."""

    drain: int | None = None
    limit: int | None = None


PLAIN = Knobs()


def replan(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], st: RecutSettings = RecutSettings()) -> Decision:
    """The decision at time `now` (see the module's docstring): the greedy decision, or with
    `st.lookahead` the best of a few variations of it played forward (the look-ahead, below).
    Deterministic: the same state gives the same decision."""
    if not st.lookahead:
        return greedy(now, gpus, waiting, st)
    return best_decision(now, gpus, waiting, st)


def greedy(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], st: RecutSettings = RecutSettings(), knobs: Knobs = PLAIN) -> Decision:
    """The greedy decision (steps 1-3 of the module's docstring), varied by `knobs`."""
    gpus = sorted(gpus, key=lambda g: g.index)
    queue = sorted(waiting, key=priority)
    big_any = [w for w in queue if any(is_big(w.demand, g.model) for g in gpus)]
    if knobs.limit is not None:
        st = replace(st, max_draining=knobs.limit)
    draining = choose_draining(now, gpus, big_any, st, knobs.drain)
    drain_ix = {g.index for g in draining}
    plan = _Plan()

    def left(pred: Callable[[Waiting], bool]) -> list[Waiting]:
        return [w for w in queue if w.demand.id not in plan.taken and pred(w)]

    for g in gpus:

        def small(w: Waiting, g: GpuNow = g) -> bool:
            return not is_big(w.demand, g.model)

        def big(w: Waiting, g: GpuNow = g) -> bool:
            return is_big(w.demand, g.model)

        if g.index in drain_ix and not g.busy_placements:
            bigs = left(big)
            lay, placed = choose_layout(g, [bigs, left(small)], st, maximal_layouts(g.model) + (g.layout,))
        elif g.index in drain_ix:
            lay = g.layout
            placed = pack(_insts(g, lay, st.compute_basis), left(small), _backfill(g, now, st))
        else:
            lay, placed = choose_layout(g, [left(small)], st)
        rc = _recut(g, lay)
        if rc is not None:
            plan.recuts.append(rc)
        plan.take(placed)
    return Decision(tuple(plan.starts), tuple(plan.recuts), tuple(sorted(drain_ix)))


def instances_now(g: GpuNow, st: RecutSettings = RecutSettings()) -> list[_Inst]:
    """GPU `g`'s instances as they are, holding their live runs, ready for `pack`: lists of several
    GPUs joined let `pack` fit each run where it is tightest across them (no re-cut)."""
    return _insts(g, g.layout, st.compute_basis)


# -- the bounded look-ahead (step 4 of the module's docstring) ------------------------------------

VARIATIONS: tuple[tuple[Knobs, Knobs], ...] = (
    (Knobs(drain=0), PLAIN),
    (Knobs(drain=1), PLAIN),
    (Knobs(limit=3), Knobs(limit=3)),
)
"""The candidates tried beside the plain decision, in the order that breaks ties: the knobs of the
decision now, and those of the decisions its play takes after it."""

HELD_END_S = 1e12
"""When an instance another launch holds is expected to be free: not within any plan's horizon. A
play ends before it: a run ending then is no run of the sweeps (its end would be every play's
makespan, and the look-ahead could never find a play that ends sooner)."""

BUDGET = 150_000
"""GPUs x (runs known, live and waiting)^2 above which no play is made (the plain decision stands).
A play re-plans at every finish, each time over the runs left on every GPU, so it costs about that
product (not GPUs x runs: 1 GPU with 1000 runs waiting took seconds per event); every case of
bench/living.py (up to 8 GPUs x 84 runs) is played."""

TOL = 1e-6


class _Sim:
    """The host as a decision leaves it, played forward: per GPU its instances, each with its runs
    (demand, start, work left)."""

    def __init__(self, now: float, gpus: Sequence[GpuNow], st: RecutSettings):
        self.st = st
        self.gpus = {g.index: g for g in gpus}
        self.inst: dict[int, dict[Placement, list[list]]] = {}
        for g in gpus:
            per: dict[Placement, list[list]] = {}
            for i in g.instances:
                r = rate([x.demand for x in i.runs], _capacity(g, i.placement, st), st.interference)
                per[i.placement] = [[x.demand, x.start_s, max(0.0, x.end_s - now) * r] for x in i.runs]
            self.inst[g.index] = per

    def apply(self, dec: Decision, waiting: dict[str, Waiting], now: float) -> None:
        for rc in dec.recuts:
            per = self.inst[rc.gpu]
            for pl in rc.destroy:
                per.pop(pl, None)
            for pl in rc.create:
                per[pl] = []
        for s in dec.starts:
            w = waiting.pop(s.run)
            self.inst[s.gpu][s.placement].append([w.demand, now, w.demand.work_s])

    def snapshot(self, now: float) -> list[GpuNow]:
        out = []
        for gi, g in self.gpus.items():
            insts = []
            for pl in layout_key(self.inst[gi]):
                runs = self.inst[gi][pl]
                r = self._rate(g, pl, runs)
                insts.append(LiveInstance(pl, tuple(LiveRun(d, s, now + left / r) for d, s, left in sorted(runs, key=lambda x: x[0].id))))
            out.append(GpuNow(gi, g.model, tuple(insts)))
        return out

    def _rate(self, g: GpuNow, pl: Placement, runs: list[list]) -> float:
        return rate([x[0] for x in runs], _capacity(g, pl, self.st), self.st.interference)

    def next_finish(self, now: float) -> float | None:
        best = None
        for gi, per in self.inst.items():
            for pl, runs in per.items():
                if runs:
                    t = now + min(x[2] for x in runs) / self._rate(self.gpus[gi], pl, runs)
                    best = t if best is None else min(best, t)
        return best

    def advance(self, now: float, until: float) -> tuple[int, float]:
        """Progress to `until`: (runs ended, their summed end time)."""
        ended, total = 0, 0.0
        for gi, per in self.inst.items():
            for pl, runs in per.items():
                if not runs:
                    continue
                r = self._rate(self.gpus[gi], pl, runs)
                # ended: its work done, or its end (as `next_finish` computes it) reached; the second
                # holds where times are too large for TOL (an instance held until HELD_END_S)
                keep = [x for x in runs if x[2] - (until - now) * r > TOL and now + x[2] / r > until]
                for x in keep:
                    x[2] -= (until - now) * r
                ended += len(runs) - len(keep)
                total += until * (len(runs) - len(keep))
                runs[:] = keep
        return ended, total


def _capacity(g: GpuNow, pl: Placement, st: RecutSettings) -> float:
    return slot_of(g, pl, st.compute_basis).capacity


def rollout(
    now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], first: Decision, st: RecutSettings, then: Knobs = PLAIN
) -> tuple[int, float, float]:
    """Play `first` now, then the greedy decision (varied by `then`) at every finish, until nothing
    more starts: (runs never started, makespan, summed end time) of the runs known now."""
    sim = _Sim(now, gpus, st)
    queue = {w.demand.id: w for w in waiting}
    sim.apply(first, queue, now)
    makespan, total = now, 0.0
    for g in gpus:
        for i in g.instances:
            for r in i.runs:
                if r.end_s < HELD_END_S / 2:
                    makespan = max(makespan, r.end_s)
    while True:
        nxt = sim.next_finish(now)
        if nxt is None or nxt >= HELD_END_S / 2:  # only instances another launch holds are busy (their end, recomputed, may round below HELD_END_S)
            break
        _, t = sim.advance(now, nxt)
        total += t
        now, makespan = nxt, max(makespan, nxt)
        if queue:
            sim.apply(greedy(now, sim.snapshot(now), sorted(queue.values(), key=priority), st, then), queue, now)
    return len(queue), makespan, total


def _known(gpus: Sequence[GpuNow], waiting: Sequence[Waiting]) -> int:
    return len(waiting) + sum(len(i.runs) for g in gpus for i in g.instances)


@dataclass(frozen=True)
class Choice:
    """What the look-ahead chose: the decision, the knobs its play re-planned with after it, and
    (runs never started, makespan, summed end time) of its play and of the plain decision's (None
    where nothing was played: no variation differed, or the host was past `BUDGET`)."""

    decision: Decision
    then: Knobs = PLAIN
    played: tuple[int, float, float] | None = None
    plain: tuple[int, float, float] | None = None


def best_decision(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], st: RecutSettings) -> Decision:
    """The plain greedy decision, or a variation whose play forward is strictly better (see the
    module's docstring)."""
    return choose(now, gpus, waiting, st).decision


def choose(now: float, gpus: Sequence[GpuNow], waiting: Sequence[Waiting], st: RecutSettings) -> Choice:
    """`best_decision`, with the plays that chose it."""
    plain = greedy(now, gpus, waiting, st, PLAIN)
    if not waiting or len(gpus) * _known(gpus, waiting) ** 2 > BUDGET:
        return Choice(plain)
    tried = {(plain, PLAIN)}
    cands: list[tuple[Decision, Knobs]] = []
    for knobs, then in VARIATIONS:
        if then.limit is not None and then.limit == _limit(gpus, st):
            then = PLAIN  # the settings' own limit: the plain play
        d = greedy(now, gpus, waiting, st, knobs)
        if (d, then) not in tried:
            tried.add((d, then))
            cands.append((d, then))
    if not cands:
        return Choice(plain)
    base = _key(rollout(now, gpus, waiting, plain, st))
    best = Choice(plain, PLAIN, base, base)
    for d, then in cands:
        k = _key(rollout(now, gpus, waiting, d, st, then))
        if best.played is not None and k < best.played:
            best = Choice(d, then, k, base)
    return best


def _limit(gpus: Sequence[GpuNow], st: RecutSettings) -> int:
    return st.max_draining if st.max_draining is not None else max(1, len(gpus) // 2)


def _key(played: tuple[int, float, float]) -> tuple[int, float, float]:
    unrun, makespan, total = played
    return unrun, round(makespan, 3), round(total, 3)
