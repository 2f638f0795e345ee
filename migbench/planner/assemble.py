"""From a sweep and a fleet to a Plan: call the solver and assemble the plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from migbench.catalog import GpuModel
from migbench.errors import MigbenchError
from migbench.plan import Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced, model_summary
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
            + ", ".join(unknown[:8]) + (", ..." if len(unknown) > 8 else ""),
            hint="measure them with `migbench profile SWEEP`, or give the group a fallback: "
            "memory: {measured: true, fallback: 8GiB}",
        )
    dm = sweep.duration_model
    opts = replace(opts, interference=dm.interference, compute_basis=dm.compute_basis)
    sol = solve([r.demand() for r in sweep.runs], fleet, opts)
    warnings = list(notes) + list(sol.notes)
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
    by_instance: dict[str, list[tuple[int, float, str]]] = {}
    runs: list[PlanRun] = []
    for r in sweep.runs:
        a = sol.assigned.get(r.id)
        runs.append(_planned(r, a))
        if a is not None:
            key = str(InstanceRef(a.gpu, a.placement))
            by_instance.setdefault(key, []).append((a.wave, a.start_s or 0.0, r.id))
    instances = []
    model_of = {g.index: g.model for g in fleet}
    for gpu in sorted(sol.layouts):
        model = model_of[gpu]
        for pl in sol.layouts[gpu]:
            prof = model.profile(pl.profile)
            key = str(InstanceRef(gpu, pl))
            ordered = tuple(rid for _, _, rid in sorted(by_instance.get(key, [])))
            instances.append(
                PlanInstance(gpu, pl.profile, pl.start, int(prof.memory_mib or 0), sol.capacity.get(key, 0.0), ordered)
            )
    memory_of = {r.id: r.memory_mib for r in sweep.runs}
    unplaced = [Unplaced(rid, memory_of[rid], why) for rid, why in sorted(sol.unplaced.items())]
    used_profiles: dict[str, set[str]] = {}
    for gpu, lay in sol.layouts.items():
        used_profiles.setdefault(model_of[gpu].key, set()).update(p.profile for p in lay)
    models = {
        key: model_summary(m, sorted(used_profiles.get(key, set()))) for key, m in sorted(models_used.items())
    }
    sweep_file = os.path.relpath(sweep.path) if sweep.path else None
    return Plan(
        name=sweep.name,
        sweep_file=sweep_file,
        sweep_sha256=sweep.sha256,
        fleet=[
            PlanGpu(g.index, g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver)), g.node)
            for g in fleet
        ],
        instances=instances,
        runs=runs,
        unplaced=unplaced,
        solver=SolverInfo(
            sol.status, sol.objective_name, sol.objective, sol.bound, sol.gap, sol.seconds, sol.runs_at_once, sol.makespan_s
        ),
        duration_model=dm,
        launch=sweep.launch,
        models=models,
        warnings=warnings,
    )


def check_plan_input(sweep: Sweep) -> None:
    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")


def _planned(r: Run, a: Assigned | None) -> PlanRun:
    """A declared run as planned: where it runs (None when unplaced), in which wave, and when."""
    return PlanRun(
        id=r.id,
        group=r.group,
        memory_mib=r.memory_mib,
        memory_source=r.memory_source,
        gpu=None if a is None else a.gpu,
        profile=None if a is None else a.placement.profile,
        start=None if a is None else a.placement.start,
        wave=None if a is None else a.wave,
        argv=tuple(r.argv),
        shell=bool(r.shell),
        env=dict(r.env),
        workdir=str(r.workdir),
        params=dict(r.params),
        duration_s=r.duration_s,
        compute=float(r.compute),
        max_runs_per_instance=int(r.max_runs_per_instance),
        profiles=tuple(r.profiles) if r.profiles is not None else None,
        retries=r.retries,
        timeout_s=r.timeout_s,
        est_start_s=None if a is None else a.start_s,
        est_end_s=None if a is None else a.end_s,
    )
