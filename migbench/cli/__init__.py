"""The command line (typer + rich): `app` wires one module per command group; `render` draws."""

from migbench.cli import clock  # first: the command's start, before typer and rich load
from migbench.cli.app import app, main

__all__ = ["app", "clock", "main"]
