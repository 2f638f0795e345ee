"""`migbench report` (the HTML report of a plan and its launch) and `migbench grain` (the sweep at
every partition grain, in the terminal)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from migbench.cli.common import MAX_TIME_LIMIT_S, STATE_DIR_HELP, console, not_an_input
from migbench.cli.render import fit_table
from migbench.units import format_duration

if TYPE_CHECKING:
    from migbench.report.grain import GrainLever


def report_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="The HTML file (default: <sweep name>.report.html next to the plan).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    grain: Annotated[
        Optional[bool], typer.Option("--grain/--no-grain", help="Draw the grain lever (it plans the sweep once per grain); default: up to 2,000 runs.")
    ] = None,
    grain_time_limit: Annotated[float, typer.Option("--grain-time-limit", help="Solver budget per grain, in seconds.", min=0.1, max=MAX_TIME_LIMIT_S)] = 2.0,
    watch: Annotated[bool, typer.Option("--watch", help="Rewrite the file every --every seconds while the launcher runs; the page reloads itself.")] = False,
    every: Annotated[int, typer.Option("--every", help="Seconds between rewrites with --watch.", min=2)] = 10,
    footprints: Annotated[
        Optional[list[Path]],
        typer.Option("--footprints", help="Footprints files (`migbench profile`) whose peaks to show where launch.db has none; repeatable."),
    ] = None,
    sweep: Annotated[
        Optional[str], typer.Option("--sweep", help="Of a bench plan (`migbench submit`), one sweep's runs only, over its own span (the host's re-cuts stay).")
    ] = None,
) -> None:
    from migbench.footprints import load_footprints
    from migbench.plan import Plan
    from migbench.report import ReportBuilder
    from migbench.state import StateDir, require_trusted_state

    plan = Plan.load(plan_file)
    sd = StateDir.of(plan, state_dir)
    require_trusted_state(sd, plan)
    peaks: dict[str, tuple[int, str]] = {}
    for f in footprints or ():
        peaks.update(load_footprints(f).peaks())
    out = output or plan_file.resolve().parent / f"{plan.name if sweep is None else sweep}.report.html"
    not_an_input(
        out,
        plan,
        "the report",
        f"{plan.name}.report.html",
        [(plan_file, "the plan it reports on"), *((f, "a footprints file it reads") for f in footprints or ())],
    )
    con = console(stderr=True)
    t0 = time.perf_counter()
    builder = ReportBuilder(
        plan, state_dir=sd, grain=grain, grain_time_limit_s=grain_time_limit, peaks=peaks or None, say=lambda s: con.print(s, style="dim"), sweep=sweep
    )
    page = builder.write(out, refresh_s=every if watch else None)
    took = time.perf_counter() - t0
    console().print(f"report written to {out} ({len(page.html.encode('utf-8', 'surrogateescape')) / 1024:.0f} KiB, {took:.1f} s)")
    for s in page.report.summarised:
        console().print(Text(f"summarised: {s}", style="dim"))
    if not watch:
        return
    if page.report.launch is None or not page.report.launch.running:
        console().print("no launcher is running: the report is final")
        return
    try:
        while True:
            time.sleep(every)
            page = builder.write(out, refresh_s=every)
            la = page.report.launch
            if la is None or not la.running:
                console().print(f"the launcher has exited: {out} is final")
                return
    except KeyboardInterrupt:
        builder.write(out)
        console().print(f"stopped watching: {out} no longer reloads itself")


def grain_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver budget per grain, in seconds.", min=0.1, max=MAX_TIME_LIMIT_S)] = 2.0,
) -> None:
    from migbench.report.grain import grain_lever
    from migbench.sweep import load_sweep
    from migbench.workflows import fleet_for

    sweep = load_sweep(sweep_file)
    fleet_gpus, _ = fleet_for(sweep, fleet)
    con = console(stderr=True)
    lever = grain_lever(
        [r.demand() for r in sweep.runs],
        fleet_gpus,
        sweep.duration_model,
        time_limit_s=time_limit,
        say=None if as_json else (lambda s: con.print(s, style="dim")),
    )
    if as_json:
        typer.echo(json.dumps({"sweep": sweep.name, **lever.to_dict()}, indent=2))
        return
    out = console()
    t = grain_view(sweep.name, lever)
    fit_table(t, out.width)
    out.print(t)


def grain_view(name: str, lever: GrainLever) -> Table:
    t = Table(title=f"{name}: the grain lever on {lever.gpus} GPU(s) (smallest instance allowed, coarse to fine)", title_justify="left")
    for col, just in (
        ("grain", "left"),
        ("instances", "right"),
        ("runs at once", "right"),
        ("utilisation", "right"),
        ("occupancy", "right"),
        ("makespan", "right"),
        ("unplaced", "right"),
        ("first GPU", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=col in ("grain", "first GPU"))  # type: ignore[arg-type]
    for p in lever.points:
        strip = Text()
        for gpu, lay in sorted(p.per_gpu.items()):
            strip.append_text(_strip(lay, lever.sizes, lever.memory_slices.get(gpu, 8)))
        label = Text(p.label + (" ◀ chosen" if p.chosen else ""), style="bold" if p.chosen else "")
        t.add_row(
            label,
            str(p.instances),
            str(p.runs_at_once),
            "-" if p.utilisation is None else f"{p.utilisation * 100:.1f}%",
            "-" if p.occupancy is None else f"{p.occupancy * 100:.1f}%",
            "-" if p.makespan_s is None else format_duration(p.makespan_s),
            str(p.unplaced),
            strip,
        )
    if lever.notes:
        t.caption = "; ".join(lever.notes)
    return t


_BG = ["on blue", "on green", "on magenta", "on cyan", "on yellow", "on red", "on bright_blue", "on bright_green"]


def _strip(layout: list[str], sizes: dict[str, int], slices: int, w: int = 3) -> Text:
    """A GPU's layout on one line: each memory slice `w` characters, each instance a coloured block."""
    out = Text()
    pos = 0
    for k, p in enumerate(sorted(layout, key=lambda p: int(p.rpartition("@")[2]))):
        prof, _, start = p.rpartition("@")
        s = int(start)
        if s > pos:
            out.append("·" * ((s - pos) * w), style="dim")
        width = sizes.get(prof, 1) * w
        out.append(prof.split(".")[0].center(width)[:width], style=f"bold white {_BG[k % len(_BG)]}")
        pos = s + sizes.get(prof, 1)
    if pos < slices:
        out.append("·" * ((slices - pos) * w), style="dim")
    return out


def register(app: typer.Typer) -> None:
    app.command("report", help="Write one self-contained HTML report of a plan and its launch: layout grid, timeline, use over time, grain lever, memory.")(
        report_cmd
    )
    app.command("grain", help="Plan the sweep at every partition grain the fleet allows: instances, runs at once, utilisation, makespan.")(grain_cmd)
