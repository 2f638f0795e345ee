"""`migbench simulate`: the sweep played forward under the plan's duration model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from migbench.cli.common import console, load_plan
from migbench.cli.render import simulate_view


def simulate_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    compare: Annotated[bool, typer.Option("--compare", help="Also run the sweep under the baselines (no MIG, mig-parted layouts, greedy).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
) -> None:
    from migbench.forecast.compare import compare_plan
    from migbench.forecast.simulate import simulate_plan

    plan = load_plan(plan_file)
    reports = compare_plan(plan, lend=not no_lend) if compare else [simulate_plan(plan, lend=not no_lend)]
    if as_json:
        typer.echo(json.dumps({"plan": str(plan_file), "simulations": [r.to_dict() for r in reports]}, indent=2))
        return
    con = console()
    con.print(simulate_view(reports, width=con.width))


def register(app: typer.Typer) -> None:
    app.command("simulate", help="Play the whole sweep forward under the plan's duration model; --compare shows the baselines.")(simulate_cmd)
