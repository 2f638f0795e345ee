"""The command line (typer + rich): `app` wires one module per command group; `render` draws."""

from migbench.cli.app import app, main

__all__ = ["app", "main"]
