"""From a sweep and a fleet to a Plan: call the solver and assemble the plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from migbench.catalog import GpuModel
from migbench.duration import instance_capacity
from migbench.duration.model import ComputeBasis
from migbench.errors import MigbenchError
from migbench.plan import Assignment, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced, model_summary, replay_plan
from migbench.planner.fleet import FleetGpu
from migbench.planner.problem import Assigned, SolveOptions
from migbench.planner.solve import solve
from migbench.sweep.model import Run, Sweep
from migbench.types import InstanceRef


def make_plan(sweep: Sweep, fleet: Sequence[FleetGpu], opts: SolveOptions, *, notes: Sequence[str] = ()) -> Plan:
    """Solve and assemble the plan for `sweep` on `fleet`."""
    unknown = [r.id for r in sweep.runs if r.memory_mib <= 0]
    if unknown:
        raise MigbenchError(
            f"{len(unknown)} run(s) have no memory yet (`memory: measured` without a measurement or a fallback): "
            + ", ".join(unknown[:8])
            + (", ..." if len(unknown) > 8 else ""),
            hint="measure them with `migbench profile SWEEP`, or give the group a fallback: memory: {measured: true, fallback: 8GiB}",
        )
    dm = sweep.duration_model
    opts = replace(opts, interference=dm.interference, compute_basis=dm.compute_basis)
    sweep, default_notes = default_compute(sweep, fleet)
    sol = solve([r.demand() for r in sweep.runs], fleet, opts)
    warnings = list(notes) + default_notes + list(sol.notes)
    models_used: dict[str, GpuModel] = {}
    for g in fleet:
        models_used.setdefault(g.model.key, g.model)
    for key, model in sorted(models_used.items()):
        if model.origin != "nvml" and model.unverified:
            warnings.append(
                f"{key}: planned with the built-in catalogue, which marks as unverified: "
                + "; ".join(model.unverified)
                + ". On the host, migbench reads the live profile table through NVML instead."
            )
        for p in model.profiles:
            if p.memory_mib and "memory" in p.unverified and model.origin != "nvml":
                warnings.append(f"{key} {p.name}: memory {p.memory_mib} MiB is unverified ({p.memory_source})")
    by_instance: dict[InstanceRef, list[tuple[int, float, str]]] = {}
    runs: list[PlanRun] = []
    for r in sweep.runs:
        a = sol.assigned.get(r.id)
        runs.append(_planned(r, a))
        if a is not None:
            by_instance.setdefault(InstanceRef(a.gpu, a.placement), []).append((a.wave, a.start_s or 0.0, r.id))
    instances = []
    model_of = {g.index: g.model for g in fleet}
    for gpu in sorted(sol.layouts):
        model = model_of[gpu]
        for pl in sol.layouts[gpu]:
            prof = model.profile(pl.profile)
            ref = InstanceRef(gpu, pl)
            ordered = tuple(rid for _, _, rid in sorted(by_instance.get(ref, [])))
            instances.append(PlanInstance(gpu, pl.profile, pl.start, int(prof.memory_mib or 0), sol.capacity.get(ref, 0.0), ordered))
    memory_of = {r.id: r.memory_mib for r in sweep.runs}
    unplaced = [Unplaced(rid, memory_of[rid], why) for rid, why in sorted(sol.unplaced.items())]
    used_profiles: dict[str, set[str]] = {}
    for gpu, lay in sol.layouts.items():
        used_profiles.setdefault(model_of[gpu].key, set()).update(p.profile for p in lay)
    models = {key: model_summary(m, sorted(used_profiles.get(key, set()))) for key, m in sorted(models_used.items())}
    sweep_file = os.path.relpath(sweep.path) if sweep.path else None
    plan = Plan(
        name=sweep.name,
        sweep_file=sweep_file,
        sweep_sha256=sweep.sha256,
        fleet=[PlanGpu(g.index, g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver)), g.node) for g in fleet],
        instances=instances,
        runs=runs,
        unplaced=unplaced,
        solver=SolverInfo(sol.status, sol.objective_name, sol.objective, sol.bound, sol.gap, sol.seconds, sol.runs_at_once, sol.makespan_s),
        duration_model=dm,
        launch=sweep.launch,
        models=models,
        warnings=warnings,
    )
    _replayed(plan)
    return plan


def _replayed(plan: Plan) -> None:
    """One model, one answer: the plan's makespan is what `migbench simulate` replays for its file
    (`plan.replay_plan`, with the launcher's lending), and the gap is computed from that number."""
    placed = plan.placed_runs()
    if not placed or not all(r.duration_s for r in placed):
        return
    makespan = round(replay_plan(plan).makespan_s, 3)
    s = plan.solver
    if s.objective_name != "makespan_s":
        plan.solver = replace(s, makespan_s=makespan)
        return
    bound = min(s.bound, makespan)
    gap = 0.0 if makespan <= 0 else max(0.0, (makespan - bound) / makespan)
    status = s.status if s.status not in ("OPTIMAL", "FEASIBLE") else ("OPTIMAL" if gap <= 1e-9 else "FEASIBLE")
    plan.solver = replace(s, objective=makespan, makespan_s=makespan, bound=bound, gap=gap, status=status)


def memory_sized(fleet: Sequence[FleetGpu], memory_mib: int, profiles: tuple[str, ...] | None, basis: ComputeBasis) -> tuple[float, str] | None:
    """The compute share of the smallest instance of the fleet that holds `memory_mib` (of the allowed
    profiles; media-engine profiles only when named), and its profile name; None when none holds it.
    With several GPU models, the smallest share among their smallest such instances."""
    best: tuple[float, str] | None = None
    for model in {g.model.key: g.model for g in fleet}.values():
        fit = [p for p in model.profiles if p.memory_mib and p.memory_mib >= memory_mib and (p.name in profiles if profiles is not None else not p.media)]
        if not fit:
            continue
        p = min(fit, key=lambda p: (p.memory_mib or 0, p.compute_slices, p.name))
        cap = instance_capacity(model, p, basis)
        if best is None or cap < best[0]:
            best = (cap, p.name)
    return best


def default_compute(sweep: Sweep, fleet: Sequence[FleetGpu]) -> tuple[Sweep, list[str]]:
    """The rule for a run without `compute`: it needs no more compute than the smallest instance that
    holds its memory, so its `duration` is its time there and a larger instance is not faster. Returns
    the sweep with those runs' compute set, and one note per group saying so and what `compute` changes."""
    basis = sweep.duration_model.compute_basis
    runs: list[Run] = []
    used: dict[str, list[tuple[float, str]]] = {}
    for r in sweep.runs:
        if r.compute_source != "default":
            runs.append(r)
            continue
        sized = memory_sized(fleet, r.memory_mib, r.profiles, basis)
        if sized is None:  # fits nowhere: unplaced anyway
            runs.append(r)
            continue
        share = sized[0]
        runs.append(replace(r, compute=share))
        used.setdefault(r.group, []).append((share, sized[1]))
    notes = []
    for group, shares in used.items():
        lo, hi = min(shares), max(shares)
        what = f"{lo[0]:.3g} of a GPU ({lo[1]})" if lo == hi else f"{lo[0]:.3g} ({lo[1]}) to {hi[0]:.3g} ({hi[1]}) of a GPU"
        timed = any(r.duration_s for r in runs if r.group == group)
        notes.append(
            f"group {group}: {len(shares)} run(s) give no `compute`, so each is taken to need the compute of the smallest "
            f"instance that holds its memory, {what}: its duration is its time there and a larger instance does not "
            "make it faster"
            + (
                f"; give the group `compute:` to change this (a run with compute u takes duration × u / {lo[0]:.3g} on "
                f"{lo[1]}, so `compute: 1.0` asks for whole-GPU speed and trades instances for time)"
                if timed
                else ""
            )
        )
    return replace(sweep, runs=tuple(runs)), notes


def check_plan_input(sweep: Sweep) -> None:
    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")


def _planned(r: Run, a: Assigned | None) -> PlanRun:
    """A declared run as planned: where it runs (None when unplaced), in which wave, and when."""
    if a is None:
        return PlanRun.of(r.core())
    # estimates as the plan file has them
    return PlanRun.of(r.core(), Assignment.on(InstanceRef(a.gpu, a.placement), a.wave, _ms(a.start_s), _ms(a.end_s)))


def _ms(t: float | None) -> float | None:
    return None if t is None else round(t, 3)
