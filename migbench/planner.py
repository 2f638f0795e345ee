"""From a sweep and a fleet to a Plan: resolve the fleet, call the solver, assemble the plan."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from migbench.catalog import Catalog, GpuModel, default_catalog
from migbench.errors import MigbenchError, UsageError
from migbench.plan import Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced, model_summary
from migbench.solver import FleetGpu, SolveOptions, solve


@dataclass(frozen=True)
class FleetSpec:
    model: str
    count: int
    driver: str | None = None


def parse_fleet_option(text: str) -> list[FleetSpec]:
    """`A100-SXM4-80GB:4,H100-SXM5-80GB:2` (count defaults to 1; `@driver` optional)."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = re.fullmatch(r"([^:@]+?)(?::(\d+))?(?:@([0-9.]+))?", part)
        if not m:
            raise UsageError(
                f"--fleet: cannot read {part!r}",
                hint="write MODEL:COUNT[,MODEL:COUNT...], e.g. --fleet A100-SXM4-80GB:4",
            )
        count = int(m.group(2) or 1)
        if count < 1:
            raise UsageError(f"--fleet: count must be at least 1 in {part!r}")
        out.append(FleetSpec(m.group(1).strip(), count, m.group(3)))
    if not out:
        raise UsageError("--fleet is empty", hint="e.g. --fleet A100-SXM4-80GB:4")
    return out


def build_fleet(
    specs: Sequence[FleetSpec],
    catalog: Catalog | None = None,
    live: dict[str, GpuModel] | None = None,
) -> list[FleetGpu]:
    """Resolve model names to catalogue models (or live NVML tables of the same model)."""
    cat = catalog or default_catalog()
    fleet: list[FleetGpu] = []
    idx = 0
    for spec in specs:
        key = cat.find_key(spec.model)
        if key is None:
            raise UsageError(
                f"unknown GPU model {spec.model!r}",
                hint="known models: " + ", ".join(cat.keys()) + " (see `migbench catalog`)",
            )
        model = (live or {}).get(key) or cat.model(key, spec.driver)
        for _ in range(spec.count):
            fleet.append(FleetGpu(idx, model))
            idx += 1
    return fleet


def make_plan(sweep: Any, fleet: Sequence[FleetGpu], opts: SolveOptions, *, notes: Sequence[str] = ()) -> Plan:
    """Solve and assemble the plan for `sweep` (a migbench.sweep.Sweep) on `fleet`."""
    dm = sweep.duration_model
    opts = SolveOptions(
        time_limit_s=opts.time_limit_s,
        objective=opts.objective,
        allow_unplaced=opts.allow_unplaced,
        workers=opts.workers,
        interference=float(getattr(dm, "interference", 0.0)),
        compute_basis=str(getattr(dm, "compute_basis", "sm")),
    )
    sol = solve(sweep.runs, fleet, opts)
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
        base = dict(
            id=r.id,
            group=r.group,
            memory_mib=r.memory_mib,
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
        )
        if a is None:
            runs.append(PlanRun(gpu=None, profile=None, start=None, wave=None, **base))
            continue
        runs.append(
            PlanRun(
                gpu=a.gpu, profile=a.placement.profile, start=a.placement.start, wave=a.wave,
                est_start_s=a.start_s, est_end_s=a.end_s, **base,
            )
        )
        key = f"{a.gpu}:{a.placement}"
        by_instance.setdefault(key, []).append((a.wave, a.start_s or 0.0, r.id))
    instances = []
    model_of = {g.index: g.model for g in fleet}
    for gpu in sorted(sol.layouts):
        model = model_of[gpu]
        for pl in sol.layouts[gpu]:
            prof = model.profile(pl.profile)
            key = f"{gpu}:{pl}"
            ordered = tuple(rid for _, _, rid in sorted(by_instance.get(key, [])))
            instances.append(
                PlanInstance(gpu, pl.profile, pl.start, int(prof.memory_mib or 0), sol.capacity.get(key, 0.0), ordered)
            )
    unplaced = [
        Unplaced(rid, next(r.memory_mib for r in sweep.runs if r.id == rid), why)
        for rid, why in sorted(sol.unplaced.items())
    ]
    used_profiles: dict[str, set[str]] = {}
    for gpu, lay in sol.layouts.items():
        used_profiles.setdefault(model_of[gpu].key, set()).update(p.profile for p in lay)
    models = {
        key: model_summary(m, sorted(used_profiles.get(key, set()))) for key, m in sorted(models_used.items())
    }
    launch = asdict(sweep.launch) if hasattr(sweep.launch, "__dataclass_fields__") else dict(sweep.launch)
    sweep_file = os.path.relpath(sweep.path) if sweep.path else None
    return Plan(
        name=sweep.name,
        sweep_file=sweep_file,
        sweep_sha256=sweep.sha256,
        fleet=[PlanGpu(g.index, g.model.key, None if g.model.driver is None else ".".join(map(str, g.model.driver))) for g in fleet],
        instances=instances,
        runs=runs,
        unplaced=unplaced,
        solver=SolverInfo(
            sol.status, sol.objective_name, sol.objective, sol.bound, sol.gap, sol.seconds, sol.runs_at_once, sol.makespan_s
        ),
        duration_model=asdict(dm) if hasattr(dm, "__dataclass_fields__") else dict(dm),
        launch=launch,
        models=models,
        warnings=warnings,
    )


def check_plan_input(sweep: Any) -> None:
    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")
