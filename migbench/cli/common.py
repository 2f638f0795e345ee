"""What every command module shares: the console, error printing, common options and parsers."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.text import Text

from migbench.errors import MigbenchError, UsageError

STATE_DIR_HELP = "The launch state directory (default: <plan dir>/runs/<sweep name>/)."
TIME_LIMIT_HELP = (
    "Seconds of wall time for planning, the whole command: the plan is the same on any machine as long "
    "as it finishes in time (see README: time limit)."
)
WORKERS_HELP = (
    "CP-SAT worker threads. More than 1 runs CP-SAT's deterministic interleaved search: reproducible, "
    "but the plan can differ from one made with another count."
)


def console(stderr: bool = False) -> Console:
    """The console at `$MIGBENCH_WIDTH` columns when set (tests pin it), else the terminal's."""
    width = int(os.environ["MIGBENCH_WIDTH"]) if os.environ.get("MIGBENCH_WIDTH", "").isdigit() else None
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def print_error(err: MigbenchError) -> None:
    """`Error: ...`, its problems and `Hint: ...` on stderr. Never hard-wrapped: a path or a command
    in an error must survive copy and paste, whatever the terminal's width."""
    con = console(stderr=True)
    con.soft_wrap = True
    styles = {"Error: ": "bold red", "    Hint: ": "cyan", "Hint: ": "bold cyan"}
    for label, text in err.lines():
        con.print(Text(label, style=styles.get(label, "")) + Text(text))


def parse_gpus(text: str | None) -> list[int] | None:
    """`--gpus 0,2` -> [0, 2]."""
    if text is None:
        return None
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. --gpus 0,2") from None


def is_tty() -> bool:
    return sys.stdin.isatty()
