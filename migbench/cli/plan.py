"""`migbench estimate` and `migbench plan`."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from migbench.cli.clock import command_started
from migbench.cli.common import MAX_TIME_LIMIT_S, TIME_LIMIT_HELP, WORK_HELP, WORKERS_HELP, console, load_sweep, warn
from migbench.cli.progress import PlanProgress
from migbench.cli.render import accuracy_view, fit_table, plan_view
from migbench.errors import MigbenchError, UsageError
from migbench.types import Objective
from migbench.units import format_mib

if TYPE_CHECKING:
    from migbench.footprints import Resolution
    from migbench.plan import Plan
    from migbench.planner import FleetGpu
    from migbench.sweep import Sweep


FOOTPRINTS_HELP = "A footprints file (`migbench profile`); repeatable. Plans every group on its measurements."
HISTORY_HELP = "A launch state directory (or launch.db) whose peaks to learn from; repeatable (default: ./runs/<sweep> and the sweep's)."
HEADROOM_HELP = "Headroom on a measured peak, as a fraction (default 0.1; a group's `headroom:` wins)."


def estimate_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    accuracy: Annotated[bool, typer.Option("--accuracy", help="Declared vs analytic vs measured vs history, per group.")] = False,
    footprints: Annotated[Optional[list[Path]], typer.Option("--footprints", help=FOOTPRINTS_HELP)] = None,
    history: Annotated[Optional[list[Path]], typer.Option("--history", help=HISTORY_HELP)] = None,
    no_history: Annotated[bool, typer.Option("--no-history", help="Do not learn from earlier launches.")] = False,
    headroom: Annotated[Optional[float], typer.Option("--headroom", help=HEADROOM_HELP, min=0.0, max=10.0)] = None,
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,...]: the GPUs to size instances for.")] = None,
) -> None:
    from migbench.workflows import fleet_for, resolve_memory

    sweep = load_sweep(sweep_file)
    try:
        fleet_gpus, _ = fleet_for(sweep, fleet)
    except MigbenchError:
        if fleet:
            raise
        fleet_gpus = []  # no fleet: memory only, no instance sizes
    res = resolve_memory(sweep, fleet_gpus, footprints=footprints or (), history=history, use_history=not no_history, headroom=headroom)
    if accuracy:
        _accuracy(sweep, res, fleet_gpus, as_json, footprints=footprints or ())
        return
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "sweep": sweep.name,
                    "runs": [
                        {
                            "id": r.id,
                            "group": r.group,
                            "memory_mib": r.memory_mib,
                            "source": r.memory_source,
                            "declared_mib": res.runs[r.id].declared_mib,
                            "declared_source": res.runs[r.id].declared_source,
                            "peak_mib": res.runs[r.id].peak_mib,
                            "detail": res.runs[r.id].detail,
                            "parts": {k: v for k, v in r.memory_parts},
                            "params": r.params,
                        }
                        for r in res.sweep.runs
                    ],
                    "warnings": res.warnings,
                    "notes": res.notes,
                },
                indent=2,
            )
        )
        return
    t = Table(title=f"{sweep.name}: memory per run", title_justify="left")
    t.add_column("run", no_wrap=True)
    t.add_column("group")
    t.add_column("memory", justify="right")
    t.add_column("MiB", justify="right")
    t.add_column("source")
    t.add_column("parts")
    for r in res.sweep.runs:
        parts = ", ".join(f"{k} {format_mib(v)}" for k, v in r.memory_parts)
        t.add_row(r.id, r.group, format_mib(r.memory_mib), str(r.memory_mib), r.memory_source, parts)
    con = console()
    fit_table(t, con.width)
    con.print(t)
    _notes(con, res.notes, res.warnings)


def _notes(con: Console, notes: list[str], warnings: list[str]) -> None:
    for n in notes:
        con.print(Text(f"note: {n}"))
    for w in warnings:
        con.print(Text(f"warning: {w}", style="yellow"))


def _accuracy(sweep: Sweep, res: Resolution, fleet: list[FleetGpu], as_json: bool, *, footprints: Sequence[Path]) -> None:
    from migbench.footprints.accuracy import accuracy_report

    rep = accuracy_report(sweep, res, fleet)
    if as_json:
        typer.echo(json.dumps(rep.to_dict(), indent=2))
        return
    con = console()
    con.print(accuracy_view(rep))
    _notes(con, res.notes, res.warnings + rep.notes)


def plan_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    fleet_file: Annotated[Optional[Path], typer.Option("--fleet-file", help="A YAML list of {node, gpu, count} (overrides the sweep's fleet).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Plan file to write (default: <sweep name>.plan.yaml).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help=TIME_LIMIT_HELP, min=0.1, max=MAX_TIME_LIMIT_S)] = 10.0,
    work: Annotated[Optional[float], typer.Option("--work", help=WORK_HELP, min=0.05, max=MAX_TIME_LIMIT_S)] = None,
    objective: Annotated[str, typer.Option("--objective", help="auto | throughput | makespan.")] = "auto",
    allow_unplaced: Annotated[bool, typer.Option("--allow-unplaced", help="List runs that fit nowhere instead of failing.")] = False,
    workers: Annotated[int, typer.Option("--workers", help=WORKERS_HELP, min=1)] = 1,
    quiet_runs: Annotated[bool, typer.Option("--no-runs", help="Do not print the runs.")] = False,
    all_runs: Annotated[
        bool,
        typer.Option("--runs", help="Print every run with its parameters (past 200 runs the default is a summary per group)."),
    ] = False,
    check: Annotated[
        Optional[Path],
        typer.Option(
            "--check",
            help="Write nothing: exit 0 when this committed plan file is what the sweep gives now, "
            "1 with a readable diff when it is stale (for CI and pre-commit).",
        ),
    ] = None,
    footprints: Annotated[Optional[list[Path]], typer.Option("--footprints", help=FOOTPRINTS_HELP)] = None,
    history: Annotated[Optional[list[Path]], typer.Option("--history", help=HISTORY_HELP)] = None,
    no_history: Annotated[bool, typer.Option("--no-history", help="Do not learn from earlier launches.")] = False,
    headroom: Annotated[Optional[float], typer.Option("--headroom", help=HEADROOM_HELP, min=0.0, max=10.0)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file even if it is not a migbench plan.")] = False,
) -> None:
    from migbench.plan import check_output
    from migbench.planner import SolveOptions, check_plan_input, make_plan
    from migbench.sweep.runnable import start_problems
    from migbench.workflows import fleet_for, resolve_memory

    goal = _usage(objective, quiet_runs=quiet_runs, all_runs=all_runs, check=check, output=output)
    con = console()
    with PlanProgress(con, enabled=con.is_terminal and not as_json, started=command_started()) as progress:
        progress.step("expanding the sweep")
        sweep = load_sweep(sweep_file)
        out = output or Path(f"{sweep.name}.plan.yaml")
        if check is None:  # a CI check of a committed plan runs where the commands need not exist
            warn(start_problems(sweep))
            check_output(out, sweep_file, force=force, name=sweep.name)
        check_plan_input(sweep)
        fleet_gpus, notes = fleet_for(sweep, fleet, fleet_file)
        res = resolve_memory(
            sweep, fleet_gpus, footprints=footprints or (), history=history, use_history=not no_history, plan_path=check or out, headroom=headroom
        )
        progress.step("solving")
        opts = SolveOptions(
            time_limit_s=time_limit,
            work_s=work,
            objective=goal,
            allow_unplaced=allow_unplaced,
            workers=workers,
            started=command_started(),
            progress=progress.update,
        )
        plan = make_plan(res.sweep, fleet_gpus, opts, notes=list(notes) + res.warnings)
        if check is None:
            progress.step("writing the plan")
            plan.save(out, force=force)
    if check is not None:
        again = _again(fleet, fleet_file, time_limit, work, objective, allow_unplaced, workers, footprints, history, no_history, headroom)
        _check(sweep_file, check, plan, [a for a in again if a])
        return
    if as_json:
        typer.echo(plan.to_json())
        return
    models = {g.model.key: g.model for g in fleet_gpus}
    con.print(plan_view(plan, models, show_runs=not quiet_runs, all_runs=all_runs, width=con.width))
    if res.measured():
        con.print(Text(res.summary()))
    _notes(con, res.notes, [])
    con.print(Text(f"plan written to {out}"))


def _usage(objective: str, *, quiet_runs: bool, all_runs: bool, check: Path | None, output: Path | None) -> Objective:
    """The objective asked for; a UsageError for options that contradict each other."""
    try:
        goal = Objective(objective)
    except ValueError:
        raise UsageError(f"--objective {objective!r} is not one of auto, throughput, makespan") from None
    if quiet_runs and all_runs:
        raise UsageError("--runs and --no-runs contradict each other", hint="give one of them")
    if check is not None and output is not None:
        raise UsageError("--check writes nothing; drop -o", hint="migbench plan SWEEP --check PLAN")
    return goal


def _again(
    fleet: str | None,
    fleet_file: Path | None,
    time_limit: float,
    work: float | None,
    objective: str,
    allow_unplaced: bool,
    workers: int,
    footprints: list[Path] | None,
    history: list[Path] | None,
    no_history: bool,
    headroom: float | None,
) -> list[str]:
    """The options (not their defaults) that plan the sweep again as this command did."""
    return [
        f"--fleet {shlex.quote(fleet)}" if fleet else "",
        f"--fleet-file {shlex.quote(str(fleet_file))}" if fleet_file else "",
        f"--time-limit {time_limit:g}" if time_limit != 10.0 else "",
        f"--work {work:g}" if work is not None else "",
        f"--objective {objective}" if objective != "auto" else "",
        "--allow-unplaced" if allow_unplaced else "",
        f"--workers {workers}" if workers != 1 else "",
        *(f"--footprints {shlex.quote(str(f))}" for f in footprints or ()),
        *(f"--history {shlex.quote(str(h))}" for h in history or ()),
        "--no-history" if no_history else "",
        f"--headroom {headroom:g}" if headroom is not None else "",
    ]


def _regenerate(sweep_file: Path, committed: Path, again: list[str]) -> str:
    """The command that makes `--check` pass: this plan command writing the committed file, under
    the same simulated host (rebuilt from its capture when `sim init --from` made it: CI's and the
    pre-commit hook's bench is a temporary directory)."""
    from migbench.backend.select import SIM_ENV
    from migbench.cli.sim import CAPTURED_FROM

    cmd = shlex.join(["migbench", "plan", str(sweep_file), "-o", str(committed)]) + "".join(f" {a}" for a in again)
    sim = os.environ.get(SIM_ENV)
    if not sim:
        return cmd
    try:
        capture = (Path(sim) / CAPTURED_FROM).read_text().strip()
    except OSError:
        return f"{SIM_ENV}={shlex.quote(sim)} {cmd}"
    rel = os.path.relpath(capture) if Path(capture).resolve().is_relative_to(Path.cwd().resolve()) else capture
    return f'B=$(mktemp -d) && migbench sim init "$B/bench" --from {shlex.quote(rel)} > /dev/null && {SIM_ENV}="$B/bench" {cmd}'


def _check(sweep_file: Path, committed: Path, plan: Plan, again: list[str]) -> None:
    from migbench.plan import check_plan

    res = check_plan(committed, plan, sweep_file.resolve().parent)
    con = console()
    for note in res.notes:
        con.print(Text(f"note: {note}", style="yellow"))
    if not res.stale:
        con.print(f"{committed} is up to date with {sweep_file}" + (" (what it decides; provenance differs, see the notes)" if res.notes else ""))
        return
    con.print(Text(f"{committed} is stale: {sweep_file} now gives a different plan", style="bold red"))
    for line in res.summary:
        con.print("  " + line)
    for line in res.diff:
        style = "green" if line.startswith("+") and not line.startswith("+++") else ("red" if line.startswith("-") and not line.startswith("---") else "")
        con.print(Text(line, style=style))
    con.print(Text(f"Hint: regenerate it with `{_regenerate(sweep_file, committed, again)}` and commit it", style="cyan"))
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("estimate", help="Show each run's memory estimate and its parts.")(estimate_cmd)
    app.command("plan", help="Expand a sweep, estimate memory, and solve for the MIG layout and run assignment.")(plan_cmd)
