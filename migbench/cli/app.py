"""The `migbench` command line: parse -> call the core -> render. No domain logic lives here.

Expected failures are `MigbenchError`s, printed once here as `Error: ...` / `Hint: ...` with exit
code 1 (2 for usage errors), never a traceback. One module per command group registers its commands.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from migbench import __version__
from migbench.cli import catalog, export, hardware, launch, plan, sim, simulate
from migbench.cli.clock import STARTED, mark_started
from migbench.cli.common import print_error
from migbench.errors import MigbenchError

app = typer.Typer(
    name="migbench",
    help="Plan, apply and launch research sweeps on NVIDIA MIG instances, sized to each run's memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"migbench {__version__}")
        raise typer.Exit(0)


for _module in (catalog, plan, hardware, simulate, launch, export, sim):
    _module.register(app)


def run(argv: list[str] | None = None, *, started: float | None = None) -> int:
    """Run one command line and return its exit status. typer handles usage errors (exit 2) and
    `typer.Exit(code)`; a MigbenchError is printed once, without a traceback. `started` is when the
    command started (default now): `--time-limit` counts from it."""
    mark_started(started)
    try:
        app(args=argv, prog_name="migbench", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MigbenchError as err:
        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv, started=STARTED))
