"""How sweeps run without migbench's planner, for `migbench simulate --compare` and `bench/`.

The planner never uses these. Each lays out the same fleet the way a tool in use today does and
plays the same runs through the same duration model and queue engine (`migbench.duration.replay`), so the
differences come from the layout and the assignment alone:

1. `one_per_gpu`: no MIG, one run per whole GPU at a time (how the seed team worked before). The
   whole GPU counts as the 7g profile's compute and the GPU's memory (or the 7g profile's where the
   catalogue lacks the total).
2. `fixed_layout("all-1g" | "all-balanced")`: the layouts NVIDIA's mig-parted ships
   (deployments/systemd/config-default.yaml; all-balanced = 2 x 1g + 1 x 2g + 1 x 3g on 7-slice GPUs,
   2 x 1g + 1 x 2g on A30), on every GPU, with first-fit list scheduling in sweep order.
3. `greedy_ffd`: runs by decreasing memory, each into the first instance with room, else a new
   instance of the smallest fitting profile on the first GPU with a free legal placement, one GPU at
   a time, as dynamic MIG schedulers allocate; queued runs then wait on those instances.

Runs may share an instance under their own `max_runs_per_instance` in every baseline, as in plans.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migbench.catalog import GpuModel, Profile
from migbench.duration import Demand, DurationModel, Slot, fits_alongside, instance_capacity
from migbench.duration.replay import list_schedule
from migbench.forecast.simulate import SimReport, figures
from migbench.planner.fleet import FleetGpu
from migbench.types import InstanceRef, Placement


@dataclass
class BaselineResult:
    report: SimReport
    seconds: float
    layouts: dict[int, tuple[Placement, ...]]


def _whole_memory(model: GpuModel) -> int:
    return int(model.memory_total_mib or model.max_memory_mib())


def _play(
    label: str,
    fleet: Sequence[FleetGpu],
    slots: list[Slot],
    slot_slices: dict[str, int],
    slot_profile: Mapping[str, str | None],
    order: Sequence[Demand],
    interference: float,
    t0: float,
    layouts: dict[int, tuple[Placement, ...]],
    pinned: dict[str, str] | None = None,
) -> BaselineResult:
    total = sum(g.model.compute_slices for g in fleet)

    def allowed(job: Demand, slot: Slot) -> bool:
        return job.memory_mib <= slot.memory_mib and (job.profiles is None or slot_profile.get(slot.key) is None or slot_profile[slot.key] in job.profiles)

    runnable = [r for r in order if any(allowed(r, s) for s in slots)]
    stuck = len(order) - len(runnable)
    # Instances of the same size and profile are interchangeable for the scheduler.
    slots = [Slot(s.key, s.memory_mib, s.capacity, f"{s.memory_mib}/{s.capacity}/{slot_profile.get(s.key)}") for s in slots]
    res = list_schedule(runnable, slots, allowed, interference=interference, pinned=pinned)
    seconds = time.perf_counter() - t0
    rep = figures(label, res, slots, slot_slices, runnable, total, len(fleet))
    rep.unrunnable = stuck
    if stuck:
        rep.notes.append(f"{stuck} run(s) fit no instance of this layout and never run")
    return BaselineResult(rep, seconds, layouts)


def one_per_gpu(runs: Sequence[Demand], fleet: Sequence[FleetGpu], dm: DurationModel = DurationModel()) -> BaselineResult:
    t0 = time.perf_counter()
    slots: list[Slot] = []
    slices: dict[str, int] = {}
    prof: dict[str, str | None] = {}
    for g in fleet:
        key = f"{g.index}:whole"
        slots.append(Slot(key, _whole_memory(g.model), 1.0, key))
        slices[key] = g.model.compute_slices
        prof[key] = None  # no MIG profile: any run may use it
    solo = [Demand(r.id, r.memory_mib, r.duration_s, r.compute, 1, None) for r in runs]
    order = sorted(solo, key=lambda r: -r.work_s)
    return _play("one run per GPU (no MIG)", fleet, slots, slices, prof, order, dm.interference, t0, {})


def _fixed(model: GpuModel, name: str) -> tuple[Placement, ...]:
    plain = [p for p in model.plain_profiles() if p.memory_mib]
    one = sorted((p for p in plain if p.compute_slices == 1), key=lambda p: (p.memory_slices, p.memory_mib))
    if not one:
        return ()
    small = one[0]
    if name == "all-1g":
        want = {small.name: small.max_count}
    else:
        two = [p for p in plain if p.compute_slices == 2]
        three = [p for p in plain if p.compute_slices == 3]
        want = {small.name: 2}
        if two:
            want[two[0].name] = 1
        if three and model.compute_slices >= 7:
            want[three[0].name] = 1
    for lay in model.layouts(list(want), maximal=False):
        counts: dict[str, int] = {}
        for p in lay:
            counts[p.profile] = counts.get(p.profile, 0) + 1
        if counts == want:
            return lay
    return ()


def fixed_layout(runs: Sequence[Demand], fleet: Sequence[FleetGpu], layout: str, dm: DurationModel = DurationModel()) -> BaselineResult:
    t0 = time.perf_counter()
    slots, slices, prof, layouts = [], {}, {}, {}
    for g in fleet:
        lay = _fixed(g.model, layout)
        layouts[g.index] = lay
        for pl in lay:
            p = g.model.profile(pl.profile)
            key = str(InstanceRef(g.index, pl))
            slots.append(Slot(key, int(p.memory_mib or 0), instance_capacity(g.model, p, dm.compute_basis), key))
            slices[key] = p.compute_slices
            prof[key] = p.name
    return _play(f"mig-parted {layout} + first-fit", fleet, slots, slices, prof, list(runs), dm.interference, t0, layouts)


def greedy_ffd(runs: Sequence[Demand], fleet: Sequence[FleetGpu], dm: DurationModel = DurationModel()) -> BaselineResult:
    t0 = time.perf_counter()
    placed: dict[int, list[Placement]] = {g.index: [] for g in fleet}
    slots: list[Slot] = []
    slices: dict[str, int] = {}
    prof: dict[str, str] = {}
    running: dict[str, list[Demand]] = {}
    pinned: dict[str, str] = {}
    open_slots: list[Slot] = []  # instances that may still take another run
    full: set[tuple[int, str]] = set()  # (gpu, profile) that can no longer be placed: layouts only grow
    ordered = sorted(runs, key=lambda r: (-r.memory_mib, r.id))
    suffix_min = [0] * len(ordered)
    low = 1 << 60
    for i in range(len(ordered) - 1, -1, -1):
        low = min(low, ordered[i].memory_mib)
        suffix_min[i] = low
    for idx, r in enumerate(ordered):
        if idx % 256 == 0:  # drop instances too full for any run still to come
            open_slots = [s for s in open_slots if s.memory_mib - sum(j.memory_mib for j in running[s.key]) >= suffix_min[idx]]
        home = None
        for s in open_slots:
            if (r.profiles is None or prof[s.key] in r.profiles) and fits_alongside(r, running[s.key], s):
                home = s
                break
        if home is None:
            for g in fleet:
                cands = sorted(
                    (p for p in g.model.plain_profiles() if p.memory_mib and p.memory_mib >= r.memory_mib and (r.profiles is None or p.name in r.profiles)),
                    key=lambda p: (p.memory_mib, p.compute_slices),
                )
                for p in cands:
                    if (g.index, p.name) in full:
                        continue
                    start = _first_free(g.model, placed[g.index], p)
                    if start is None:
                        full.add((g.index, p.name))
                    else:
                        pl = Placement(p.name, start)
                        placed[g.index].append(pl)
                        key = str(InstanceRef(g.index, pl))
                        home = Slot(key, int(p.memory_mib or 0), instance_capacity(g.model, p, dm.compute_basis), key)
                        slots.append(home)
                        open_slots.append(home)
                        slices[key], prof[key], running[key] = p.compute_slices, p.name, []
                        break
                if home is not None:
                    break
        if home is not None:
            running[home.key].append(r)
            pinned[r.id] = home.key
            if len(running[home.key]) >= min(j.cap for j in running[home.key]):
                open_slots.remove(home)
    layouts = {g: tuple(sorted(ps, key=lambda p: (p.start, p.profile))) for g, ps in placed.items()}
    order = sorted(runs, key=lambda r: (-r.work_s, r.id))
    return _play("greedy first-fit-decreasing", fleet, slots, slices, prof, order, dm.interference, t0, layouts, pinned=pinned)


def _first_free(model: GpuModel, placed: list[Placement], prof: Profile) -> int | None:
    for s in prof.starts:
        if model.is_legal(placed + [Placement(prof.name, s)]):
            return s
    return None


Baseline = Callable[[Sequence[Demand], Sequence[FleetGpu], DurationModel], BaselineResult]

BASELINES: dict[str, Baseline] = {
    "one-per-gpu": one_per_gpu,
    "all-1g": lambda runs, fleet, dm: fixed_layout(runs, fleet, "all-1g", dm),
    "all-balanced": lambda runs, fleet, dm: fixed_layout(runs, fleet, "all-balanced", dm),
    "greedy-ffd": greedy_ffd,
}
