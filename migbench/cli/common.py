"""What every command module shares: the console, error printing, common options and parsers."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from migbench.errors import MigbenchError, UsageError

if TYPE_CHECKING:
    from migbench.plan import Plan
    from migbench.sweep import Sweep

STATE_DIR_HELP = "The launch state directory (default: <plan dir>/runs/<sweep name>/)."
MAX_TIME_LIMIT_S = 7 * 24 * 3600.0
"""The largest solver budget `--time-limit` (and `--work`) takes, in seconds (a week): an infinite one ended in an internal error."""

TIME_LIMIT_HELP = (
    "Seconds of wall time for planning, the whole command: the plan is the same on any machine as long as it finishes in time (see README: time limit)."
)
WORK_HELP = (
    "Reference seconds of planning work (default: half the time limit, less the command's own work). "
    "With a generous --time-limit beside it, the plan is the same on any machine, however loaded."
)
WORKERS_HELP = (
    "CP-SAT worker threads. More than 1 runs CP-SAT's deterministic interleaved search: reproducible, but the plan can differ from one made with another count."
)


def console(stderr: bool = False) -> Console:
    """The console at `$MIGBENCH_WIDTH` columns when set (tests pin it), else the terminal's (80 when
    piped, or `$COLUMNS`). Lines of text are never hard-wrapped (soft wrap: a command or a path in
    the output survives copy and paste and `grep`); tables and pictures size themselves to the
    width (`render.fit_table`) and are never cropped. Text is printed as it is: square brackets in
    a value or a path are not read as rich markup (styles are given as `Text` styles)."""
    width = int(os.environ["MIGBENCH_WIDTH"]) if os.environ.get("MIGBENCH_WIDTH", "").isdigit() else None
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=True, markup=False)


def reader_gone() -> NoReturn:
    """Stop quietly when what reads our output closed it (`migbench logs RUN | head`): exit status
    141, a process a closed pipe ended (128 + SIGPIPE), as `cat` and `git log` end, and nothing left
    to flush into the closed pipe at exit."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no file descriptor (in-process tests)
        pass
    raise typer.Exit(128 + signal.SIGPIPE)


def print_error(err: MigbenchError) -> None:
    """`Error: ...`, its problems and `Hint: ...` on stderr. Never hard-wrapped: a path or a command
    in an error must survive copy and paste, whatever the terminal's width."""
    con = console(stderr=True)
    con.soft_wrap = True
    styles = {"Error: ": "bold red", "    Hint: ": "cyan", "Hint: ": "bold cyan"}
    for label, text in err.lines():
        con.print(Text(label, style=styles.get(label, "")) + Text(shown(text)))


def shown(text: str) -> str:
    """`text` as a message prints it: its lines kept, any other character that is not printable
    written as Python writes it (`names.printable`), so a name in it (a directory another user
    made) never drives the terminal."""
    from migbench.names import printable

    return "\n".join(printable(line) for line in text.split("\n"))


def load_plan(path: Path, *, runs: bool = False) -> Plan:
    """`Plan.load`, then what loading found worth saying (the sweep changed since) on stderr.
    `runs`: the command runs the plan's commands (`Plan.load`'s `runs`)."""
    from migbench.plan import Plan

    plan = Plan.load(path, runs=runs)
    warn(plan.notes)
    return plan


def load_sweep(path: Path, *, runs: bool = False) -> Sweep:
    """`load_sweep`, then its notes (W&B-only keys ignored, parameters no command uses) on stderr.
    `runs`: the command runs the sweep's commands (`sweep.load_sweep`'s `runs`)."""
    from migbench.sweep import load_sweep as load

    sweep = load(path, runs=runs)
    warn(sweep.notes)
    return sweep


def warn(lines: Iterable[str]) -> None:
    """`warning: ...` lines on stderr, never hard-wrapped."""
    con = console(stderr=True)
    con.soft_wrap = True
    for line in lines:
        con.print(Text("warning: ", style="yellow") + Text(shown(line)))


def parse_gpus(text: str | None) -> list[int] | None:
    """`--gpus 0,2` -> [0, 2]."""
    if text is None:
        return None
    try:
        gpus = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. --gpus 0,2") from None
    if not gpus:  # an empty list meant every GPU to apply: `--gpus "$GPUS"` with GPUS unset re-cut them all
        raise UsageError(f"--gpus {text!r} names no GPU", hint="leave --gpus out for every GPU of the plan, or name them: --gpus 0,2")
    return gpus


def is_tty() -> bool:
    return sys.stdin.isatty()


def adopt_simulated_host(*dirs: str | os.PathLike[str] | None) -> str | None:
    """Use the simulated host `migbench run` left next to a plan when MIGBENCH_SIM is unset and no
    driver is present (`backend.select.adopt_simulated_host_near`); says so on stderr."""
    from migbench.backend.select import adopt_simulated_host_near

    note = adopt_simulated_host_near(*dirs)
    if note:
        console(stderr=True).print(Text("note: " + note, style="yellow"))
    return note


def not_an_input(out: Path, plan: Plan, what: str, example: str, inputs: Sequence[tuple[Path, str]] = ()) -> None:
    """Refuse `out` as the file `what` is written to when it is one of the command's `inputs`, the
    plan's file or its sweep file: `report PLAN -o PLAN` replaced the plan with the page (every later
    command on it failed: "not valid YAML")."""
    from migbench.errors import InputError

    named = [*inputs, (Path(plan.path or "."), "the plan it is made from")]
    if plan.sweep_file:
        named.append((Path(plan.path or ".").resolve().parent / plan.sweep_file, "the plan's sweep file"))
    for f, which in named:
        try:
            same = os.path.samefile(out, f)
        except OSError:
            same = False
        if same:
            raise InputError(f"refusing to write {what} over {which}, {out}", hint=f"choose another output, e.g. -o {example}")
