"""For CI and for setting up a host: `migbench schema` (the sweep file's JSON Schema) and `migbench
doctor` (what stands between this host and `apply`; `--capture DIR` saves its nvidia-smi text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from migbench.cli.common import console
from migbench.errors import MigbenchError, os_reason


def schema_cmd(
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the schema to this file instead of stdout.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Every key as a Markdown table per section (docs/sweep-keys.md) instead.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file even if it is not a schema or key tables migbench wrote.")] = False,
) -> None:
    from migbench.fsutil import write_text_atomic
    from migbench.sweep.json_schema import sweep_json_schema
    from migbench.sweep.keydoc import keys_markdown

    text = keys_markdown() if markdown else json.dumps(sweep_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    if not force:
        _refuse_to_replace(output)
    try:
        write_text_atomic(output, text)
    except OSError as exc:
        raise MigbenchError(f"cannot write {output}: {os_reason(exc)}", hint="give a writable file path") from None
    console().print(f"sweep {'key tables' if markdown else 'JSON Schema'} written to {output}")


SCHEMA_MARKS = (b'"$id": "https://migbench.invalid/schema/', b"`migbench schema --markdown")
"""What the head of a file `migbench schema` wrote holds (the JSON Schema's `$id`, the key tables' intro)."""


def _refuse_to_replace(output: Path) -> None:
    """`schema -o FILE` replaces FILE only when it is empty or a schema (or key tables) migbench
    wrote, as `plan -o` replaces only a plan: never a sweep file given by mistake. A name that is
    not a regular file is left to the writer, which says why it is refused."""
    from migbench.errors import InputError
    from migbench.fsutil import read_regular

    try:
        head = read_regular(output, 65536) if output.is_file() and not output.is_symlink() else b""
    except OSError:
        return
    if head and not any(mark in head for mark in SCHEMA_MARKS):
        raise InputError(
            f"{output} exists and is not a schema migbench wrote; refusing to replace it",
            hint="choose another output (-o FILE), or pass --force to replace it",
        )


def doctor_cmd(
    capture: Annotated[
        Optional[Path],
        typer.Option(
            "--capture",
            help="Save this host's nvidia-smi -q, -L, mig -lgi/-lci/-lgip/-lgipp text and NVML reads to DIR (read-only), for `migbench sim init --from DIR`.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from migbench.backend.capture import capture_host
    from migbench.backend.doctor import diagnose

    if capture is not None:
        written = capture_host(capture)
        con = console()
        con.print(f"captured {len(written.files)} file(s) in {capture}: {', '.join(written.files)}")
        for note in written.notes:
            con.print(Text(f"note: {note}", style="yellow"))
        con.print(f"replay it without a GPU: migbench sim init SIMDIR --from {capture}")
        return
    report = diagnose()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        con = console()
        con.print(Text(f"host: {report.host}", style="bold"))
        for f in report.findings:
            style = {"ok": "green", "warn": "yellow", "fail": "bold red"}[f.level]
            line = Text(f"[{f.level}] ", style=style)
            line.append(f.what)
            con.print(line)
            if f.fix:
                con.print(Text(f"       fix: {f.fix}", style="cyan"))
        con.print(report.summary())
    if report.blocking:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("schema", help="Print the JSON Schema of sweep files, for editors and CI validators.")(schema_cmd)
    app.command(
        "doctor",
        help="What stands between this host and `migbench apply` (driver, MIG capability and mode, pending changes, "
        "clients, privileges, instances in use), each with its fix; read-only. --capture DIR saves the host's "
        "nvidia-smi text for `migbench sim init --from DIR`.",
    )(doctor_cmd)
