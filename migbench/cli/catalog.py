"""`migbench catalog`: the GPU models migbench knows, their profiles and layouts; `catalog import`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.text import Text

from migbench.cli.common import console
from migbench.cli.render import catalog_models_table, catalog_profiles_table, layouts_text
from migbench.errors import UsageError


def catalog_cmd(
    args: Annotated[Optional[list[str]], typer.Argument(help="MODEL, or: import LGIP_FILE LGIPP_FILE")] = None,
    layouts: Annotated[bool, typer.Option("--layouts", help="List every maximal legal layout as profile@start.")] = False,
    all_profiles: Annotated[bool, typer.Option("--all-profiles", help="With --layouts: include +me profiles.")] = False,
    driver: Annotated[Optional[str], typer.Option("--driver", help="Resolve profiles and memory for this driver version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="import: the model key to store it under.")] = None,
    architecture: Annotated[str, typer.Option("--architecture", help="import: ampere, hopper or blackwell.")] = "unknown",
    gpu: Annotated[int, typer.Option("--gpu", help="import: which GPU index of the pasted text.")] = 0,
    partial: Annotated[bool, typer.Option("--partial", help="import: accept a cut-off paste, recording a warning.")] = False,
    force: Annotated[bool, typer.Option("--force", help="import: replace a model the catalogue already has (built-in or imported).")] = False,
) -> None:
    from migbench.catalog import default_catalog
    from migbench.catalog.importer import import_files
    from migbench.catalog.store import describe_model, describe_models

    args = list(args or [])
    con = console()
    if args and args[0] == "import":
        if len(args) != 3:
            raise UsageError("catalog import needs two files", hint="migbench catalog import lgip.txt lgipp.txt --name MODEL")
        if name is None:
            raise UsageError(
                "catalog import needs --name MODEL (the key plans and sweeps will use)",
                hint="e.g. --name H100-NVL; use the NVML product name from `nvidia-smi -L`",
            )
        model, path = import_files(args[1], args[2], name=name, driver=driver, architecture=architecture, gpu=gpu, partial=partial, force=force)
        n_layouts = len(model.layouts())
        warnings = [u for u in model.unverified if u.startswith("partial import:")]
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "model": model.key,
                        "profiles": len(model.profiles),
                        "maximal_layouts": n_layouts,
                        "catalog": str(path),
                        **({"warnings": warnings} if warnings else {}),
                    }
                )
            )
        else:
            for w in warnings:
                con.print(Text(f"WARNING: {w}", style="bold red"))
            con.print(
                f"Imported {model.key}: {len(model.profiles)} profiles, {model.memory_slices} memory / "
                f"{model.compute_slices} compute slices, {n_layouts} maximal layouts -> {path}"
            )
        return
    if len(args) > 1:
        raise UsageError("catalog takes at most one MODEL", hint="migbench catalog A100-SXM4-40GB --layouts")
    cat = default_catalog()
    if not args:
        docs = describe_models(cat, driver)
        if as_json:
            typer.echo(json.dumps({"models": docs}, indent=2))
        else:
            con.print(catalog_models_table(docs, width=con.width))
        return
    model = cat.model(args[0], driver)
    if layouts:
        names = [p.name for p in model.profiles] if all_profiles else None
        lays = model.layouts(names)
        if as_json:
            typer.echo(json.dumps({"model": model.key, "layouts": [[str(p) for p in lay] for lay in lays]}))
        else:
            con.print(layouts_text(model, lays))
        return
    if as_json:
        typer.echo(json.dumps(describe_model(model), indent=2))
        return
    con.print(catalog_profiles_table(model, width=con.width))
    for note in model.unverified:
        con.print(Text(f"unverified: {note}", style="yellow"))


def register(app: typer.Typer) -> None:
    app.command(
        "catalog",
        help=(
            "Show the GPU models migbench knows, one model's profiles, or its layouts; "
            "`catalog import LGIP LGIPP --name MODEL` teaches a new GPU from nvidia-smi text."
        ),
    )(catalog_cmd)
