"""The `migbench` command line: parse -> call the core -> render. No domain logic lives here.

Expected failures are `MigbenchError`s, printed once here as `Error: ...` / `Hint: ...` with exit
code 1 (2 for usage errors), never a traceback. A file-system error nobody expected is said in words
(`from_os_error`), and any other exception is an `Error: internal error` with a hint to report it
(`MIGBENCH_DEBUG=1` prints the traceback). One module per command group registers its commands.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import re
import sys
import traceback
from typing import Annotated

import typer

from migbench import __version__
from migbench.cli import bench, catalog, ci, export, footprints, hardware, launch, plan, report, sim, simulate
from migbench.cli.clock import STARTED, mark_started
from migbench.cli.common import print_error
from migbench.errors import MigbenchError, from_os_error

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


for _module in (catalog, plan, footprints, hardware, simulate, report, launch, bench, export, ci, sim):
    _module.register(app)


DEBUG_ENV = "MIGBENCH_DEBUG"


def run(argv: list[str] | None = None, *, started: float | None = None) -> int:
    """Run one command line and return its exit status. typer handles usage errors (exit 2) and
    `typer.Exit(code)`; a MigbenchError is printed once, without a traceback; so is an OSError
    (in words) and, as an internal error, anything else. `started` is when the command started
    (default now): `--time-limit` counts from it."""
    mark_started(started)
    _names_as_bytes()
    try:
        app(args=argv, prog_name="migbench", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MigbenchError as err:
        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if _debug():
            traceback.print_exc()
        print_error(from_os_error(exc))
        return 1
    except RuntimeError as exc:
        if _debug():
            traceback.print_exc()
        loop = _symlink_loop(exc)
        print_error(from_os_error(loop) if loop else internal_error(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
        if _debug():
            traceback.print_exc()
        print_error(internal_error(exc))
        return 1
    return 0


def _names_as_bytes() -> None:
    """Print a file name that is not UTF-8 as its own bytes, as `ls` does (Python holds its bad
    bytes as lone surrogates, which a strict UTF-8 stream refuses: an internal error after the work
    was done), on streams that write UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name == "utf-8" and stream.errors == "strict":
            stream.reconfigure(errors="surrogateescape")


def _symlink_loop(exc: RuntimeError) -> OSError | None:
    """`Path.resolve()` before Python 3.13 reports a symbolic link loop as a RuntimeError naming the
    path; it is the user's file system, not a bug: the same words as any ELOOP."""
    m = re.fullmatch(r"Symlink loop from '(.*)'", str(exc), flags=re.S)
    return OSError(errno.ELOOP, os.strerror(errno.ELOOP), m.group(1)) if m else None


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def internal_error(exc: BaseException) -> MigbenchError:
    """What the user sees of a bug: its type and message, how to see the traceback, where to report it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    what = type(exc).__name__ + (f": {text}" if text else "")
    hint = (
        "this is a bug in migbench: please report it with the traceback above and the command you ran"
        if _debug()
        else f"this is a bug in migbench: please report it with the command you ran; {DEBUG_ENV}=1 prints the traceback"
    )
    return MigbenchError(f"internal error ({what})", hint=hint)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv, started=STARTED))
