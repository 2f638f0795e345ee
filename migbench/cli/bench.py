"""`migbench submit`: a sweep's runs into the host's bench (issue 21), which runs every submitted
sweep, placing each run when it starts and re-cutting idle slices as work arrives and GPUs drain."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from migbench.cli.common import console, load_sweep, warn

BENCH_DIR_HELP = "The host's bench directory (default: $MIGBENCH_BENCH_DIR, the simulated host's bench/, else ~/.local/state/migbench/bench)."


def submit_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    bench_dir: Annotated[Optional[Path], typer.Option("--bench-dir", help=BENCH_DIR_HELP)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the bench to take the sweep.", min=1.0)] = 120.0,
    replace_file: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="This file takes over the bench's sweep of the same name, submitted before from another file "
            "(its runs not in this file and not started are cancelled).",
        ),
    ] = False,
) -> None:
    from migbench.sweep.runnable import start_problems
    from migbench.workflows import submit_sweep, wait_adopted

    con = console()
    sweep = load_sweep(sweep_file, runs=True)
    warn(start_problems(sweep))
    sub = submit_sweep(sweep, sweep_file, fleet=fleet, bench=bench_dir, replace_file=replace_file, say=con.print)
    con.print(wait_adopted(sub.inbox_file, sub.bench_plan, timeout, con.print))
    plan_arg = shlex.quote(str(sub.bench_plan))
    con.print(f"  follow the bench:  migbench status {plan_arg} --watch")
    con.print(f"  stop it:           migbench stop {plan_arg}")


def register(app: typer.Typer) -> None:
    what = "Add a sweep's runs to the host's bench (started if none runs): each run starts where and when the bench decides, re-cutting idle slices."
    app.command("submit", help=what)(submit_cmd)
