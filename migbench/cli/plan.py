"""`migbench estimate` and `migbench plan`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from migbench.cli.clock import command_started
from migbench.cli.common import TIME_LIMIT_HELP, WORKERS_HELP, console
from migbench.cli.progress import PlanProgress
from migbench.cli.render import plan_view
from migbench.errors import UsageError
from migbench.types import Objective
from migbench.units import format_mib


def estimate_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from migbench.sweep import load_sweep

    sweep = load_sweep(sweep_file)
    if as_json:
        typer.echo(json.dumps({"sweep": sweep.name, "runs": [
            {"id": r.id, "group": r.group, "memory_mib": r.memory_mib, "source": r.memory_source,
             "parts": {k: v for k, v in r.memory_parts}, "params": r.params} for r in sweep.runs]}, indent=2))
        return
    t = Table(title=f"{sweep.name}: memory per run", title_justify="left")
    t.add_column("run")
    t.add_column("group")
    t.add_column("memory", justify="right")
    t.add_column("MiB", justify="right")
    t.add_column("source")
    t.add_column("parts")
    for r in sweep.runs:
        parts = ", ".join(f"{k} {format_mib(v)}" for k, v in r.memory_parts)
        t.add_row(r.id, r.group, format_mib(r.memory_mib), str(r.memory_mib), r.memory_source, parts)
    console().print(t)


def plan_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    fleet_file: Annotated[Optional[Path], typer.Option("--fleet-file", help="A YAML list of {node, gpu, count} (overrides the sweep's fleet).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Plan file to write (default: <sweep name>.plan.yaml).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help=TIME_LIMIT_HELP, min=0.1)] = 10.0,
    objective: Annotated[str, typer.Option("--objective", help="auto | throughput | makespan.")] = "auto",
    allow_unplaced: Annotated[bool, typer.Option("--allow-unplaced", help="List runs that fit nowhere instead of failing.")] = False,
    workers: Annotated[int, typer.Option("--workers", help=WORKERS_HELP, min=1)] = 1,
    quiet_runs: Annotated[bool, typer.Option("--no-runs", help="Do not print the runs.")] = False,
    all_runs: Annotated[bool, typer.Option("--runs", help="Print every run (past 200 runs the default is a summary per group).")] = False,
) -> None:
    from migbench.planner import SolveOptions, check_plan_input, make_plan
    from migbench.sweep import load_sweep
    from migbench.workflows import fleet_for

    try:
        goal = Objective(objective)
    except ValueError:
        raise UsageError(f"--objective {objective!r} is not one of auto, throughput, makespan") from None
    con = console()
    with PlanProgress(con, enabled=con.is_terminal and not as_json, started=command_started()) as progress:
        progress.step("expanding the sweep")
        sweep = load_sweep(sweep_file)
        check_plan_input(sweep)
        fleet_gpus, notes = fleet_for(sweep, fleet, fleet_file)
        progress.step("solving")
        opts = SolveOptions(
            time_limit_s=time_limit, objective=goal, allow_unplaced=allow_unplaced, workers=workers,
            started=command_started(), progress=progress.update,
        )
        plan = make_plan(sweep, fleet_gpus, opts, notes=notes)
        progress.step("writing the plan")
        out = output or Path(f"{sweep.name}.plan.yaml")
        plan.save(out)
    if as_json:
        typer.echo(plan.to_json())
        return
    models = {g.model.key: g.model for g in fleet_gpus}
    con.print(plan_view(plan, models, show_runs=not quiet_runs, all_runs=all_runs))
    con.print(Text(f"plan written to {out}"))


def register(app: typer.Typer) -> None:
    app.command("estimate", help="Show each run's memory estimate and its parts.")(estimate_cmd)
    app.command("plan", help="Expand a sweep, estimate memory, and solve for the MIG layout and run assignment.")(plan_cmd)
