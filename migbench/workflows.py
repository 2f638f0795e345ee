"""Use cases that take several steps across the core: the fleet a plan is for, and `run` (plan, apply,
launch), with plan reuse and the auto-created simulated host. The CLI calls these and renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from migbench.apply import apply_plan
from migbench.backend.select import (
    host_models,
    init_simulated_host,
    is_simulated_host,
    live_models,
    open_backend,
    read_host_if_available,
    sim_dir,
    use_simulated_host,
)
from migbench.errors import MigbenchError, UsageError
from migbench.launch.options import LOCK_NAME
from migbench.launch.procs import LauncherLock
from migbench.plan import Plan
from migbench.planner import FleetGpu, FleetSpec, SolveOptions, build_fleet, make_plan, parse_fleet_option
from migbench.planner.budget import ProgressFn
from migbench.state import state_dir_for
from migbench.sweep import Sweep, load_fleet_file


def fleet_for(sweep: Sweep, fleet_opt: str | None, fleet_file: Path | None = None) -> tuple[list[FleetGpu], list[str]]:
    """The fleet to plan for: `--fleet`, else `--fleet-file`, else the sweep's `fleet:`, else the
    host's GPUs through NVML. Models the host's NVML reports use its live profile table. Returns
    (fleet, notes)."""
    live = live_models()
    if fleet_opt and fleet_file:
        raise UsageError("--fleet and --fleet-file both name a fleet", hint="give one of them")
    if fleet_opt:
        return build_fleet(parse_fleet_option(fleet_opt), live=live), []
    if fleet_file:
        entries = load_fleet_file(fleet_file)
        return build_fleet([FleetSpec(f.gpu, f.count, f.driver, f.node) for f in entries], live=live), []
    if sweep.fleet:
        return build_fleet([FleetSpec(f.gpu, f.count, f.driver, f.node) for f in sweep.fleet], live=live), []
    host = [FleetGpu(i, m) for i, m in host_models()]
    if host:
        return host, ["fleet read from the host through NVML"]
    raise MigbenchError(
        "no fleet: the sweep has no `fleet:`, --fleet was not given, and no GPU is visible through NVML",
        hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 4}]` to the sweep, pass --fleet A100-SXM4-80GB:4, "
        "or try the simulated host: migbench sim init ./sim --gpu A100-SXM4-80GB --count 4 && export MIGBENCH_SIM=./sim",
    )


def simulate_if_no_gpu(sweep: Sweep, sweep_file: Path, fleet: str | None) -> str | None:
    """With no NVIDIA driver and no simulated host set, use one shaped like the sweep's fleet in
    `<sweep dir>/.migbench-sim/` (kept between runs). Returns what it did, for the user."""
    if sim_dir() is not None or read_host_if_available() is not None:
        return None
    specs = parse_fleet_option(fleet) if fleet else [FleetSpec(f.gpu, f.count, f.driver) for f in (sweep.fleet or ())]
    if not specs:
        raise MigbenchError(
            "no GPU is visible and the sweep names no fleet to simulate",
            hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 2}]` to the sweep or pass --fleet A100-SXM4-80GB:2",
        )
    if len({s.model for s in specs}) > 1:
        raise MigbenchError(
            "no GPU is visible, and the simulated host holds one GPU model, but the fleet mixes several",
            hint="create a simulated host yourself (`migbench sim init DIR --gpu MODEL --count N`) and set MIGBENCH_SIM",
        )
    state = (sweep_file.parent / ".migbench-sim").resolve()
    count = sum(s.count for s in specs)
    if not is_simulated_host(state):
        init_simulated_host(state, specs[0].model, count, specs[0].driver)
        said = f"no NVIDIA GPU found: created a simulated host with {count} x {specs[0].model} in {state}"
    else:
        said = f"no NVIDIA GPU found: using the simulated host in {state}"
    use_simulated_host(state)
    return said


@dataclass
class Prepared:
    """A plan made (or reused) and applied, ready to launch; `said` is what happened, in order."""

    plan: Plan
    said: list[str] = field(default_factory=list)


def plan_and_apply(
    sweep: Sweep,
    sweep_file: Path,
    *,
    fleet: str | None,
    time_limit_s: float,
    state_dir: Path | None,
    say: Callable[[str], None] = lambda _: None,
    started: float | None = None,
    progress: ProgressFn | None = None,
) -> Plan:
    """`run` up to the launch: use a simulated host where no GPU is, plan (or reuse the plan file
    next to the sweep when the sweep and fleet are unchanged), check no launcher runs the plan,
    apply. Returns the plan to launch."""
    if not sweep.runs:
        raise MigbenchError(f"sweep {sweep.name} has no runs", hint="check its parameters")
    if not fleet:
        _one_host([f.node for f in sweep.fleet or ()])
    said = simulate_if_no_gpu(sweep, sweep_file, fleet)
    if said:
        say(said)
    fleet_gpus, notes = fleet_for(sweep, fleet)
    _one_host([g.node for g in fleet_gpus])
    out = sweep_file.parent / f"{sweep.name}.plan.yaml"
    plan = _reusable_plan(out, sweep, fleet_gpus)
    if plan is not None:
        say(f"the sweep and fleet are unchanged: reusing {out}")
    else:
        opts = SolveOptions(time_limit_s=time_limit_s, started=started, progress=progress)
        plan = make_plan(sweep, fleet_gpus, opts, notes=notes)
        plan.save(out)
        say(
            f"plan written to {out}: {len(plan.placed_runs())} runs on {len(plan.instances)} MIG instances of "
            f"{len(plan.fleet)} GPU(s)" + (f", {len(plan.unplaced)} unplaced" if plan.unplaced else "")
        )
    LauncherLock(state_dir_for(plan, state_dir) / LOCK_NAME).ensure_free()
    report = apply_plan(plan, open_backend(), confirm=None, state_dir=state_dir)
    say(f"applied: {len(report.commands)} command(s); every GPU read back as planned" if report.changed
        else "applied: every GPU already matches the plan")
    return plan


def _one_host(nodes: list[str | None]) -> None:
    names = sorted({n for n in nodes if n})
    if len(names) > 1:
        raise MigbenchError(
            f"the fleet spans {len(names)} nodes ({', '.join(names)}); `run` plans, applies and launches on this one host",
            hint="plan it with `migbench plan SWEEP -o PLAN`, then hand it to the cluster: "
            "`migbench export slurm PLAN -o DIR` or `migbench export k8s PLAN -o DIR`",
        )


def _reusable_plan(path: Path, sweep: Sweep, fleet: list[FleetGpu]) -> Plan | None:
    if not path.exists():
        return None
    try:
        old = Plan.load(path)
    except MigbenchError:
        return None
    same_fleet = [(g.gpu, g.model, g.node) for g in old.fleet] == [(g.index, g.model.key, g.node) for g in fleet]
    return old if old.sweep_sha256 == sweep.sha256 and same_fleet else None
