"""`migbench profile`: measure each configuration's peak memory on the host's MIG instances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from migbench.cli.common import console, parse_gpus
from migbench.errors import UsageError
from migbench.units import format_mib

if TYPE_CHECKING:
    from migbench.footprints.probe import ProbeEvent, ProbeOptions, ProfileResult
    from migbench.sweep import Sweep


OUTPUT_HELP = "Footprints file to write or update (default: <sweep dir>/<sweep name>.footprints.yaml)."


def profile_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help=OUTPUT_HELP)] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Each probe's time limit (default 60 s; 300 s with --steps).", min=0.01)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Ask each run to stop after N steps (MIGBENCH_PROBE_STEPS).", min=1)] = None,
    sample: Annotated[Optional[int], typer.Option("--sample", help="Probe at most K configurations per group (the rest are predicted).", min=1)] = None,
    groups: Annotated[Optional[str], typer.Option("--groups", help="Only these groups (comma-separated).")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Only these GPUs, e.g. 0,2.")] = None,
    grace: Annotated[float, typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL at a probe's limit.", min=0.0)] = 5.0,
    interval: Annotated[float, typer.Option("--sample-interval", help="Seconds between NVML memory samples.", min=0.005)] = 0.05,
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="Without a GPU: the simulated host to create (MODEL:COUNT).")] = None,
    speed: Annotated[
        bool,
        typer.Option(
            "--speed",
            help="Measure each group's compute instead: one run timed on its memory-sized "
            "instance and on one with about 3x the compute (MIGBENCH_STEP lines or `step N` progress lines).",
        ),
    ] = False,
) -> None:
    from migbench.footprints.probe import ProbeOptions, profile
    from migbench.sweep import load_sweep
    from migbench.workflows import simulate_if_no_gpu

    if seconds is not None and steps is not None:
        raise UsageError("give --seconds or --steps, not both", hint="--steps N asks the run to stop after N steps; its time limit is 300 s")
    con = console()
    sweep = load_sweep(sweep_file, runs=True)
    said = simulate_if_no_gpu(sweep, sweep_file, fleet, mig=True)
    if said:
        con.print(said)
    opts = ProbeOptions(seconds=seconds, steps=steps, grace_s=grace, sample_s=interval, gpus=tuple(parse_gpus(gpus) or ()) or None)
    group_list = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    if speed:
        _speed(sweep, output, opts, group_list)
        return
    if con.is_terminal:
        with Progress(
            TextColumn("[bold]profiling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"), console=con, transient=True
        ) as bar:
            task = bar.add_task("", total=None)

            def show(e: ProbeEvent) -> None:
                bar.update(task, total=e.total, completed=e.done, description=e.text[:60])
                if e.kind in ("layout", "retry", "skip"):
                    bar.console.print(e.text)

            res, fp, out = profile(sweep, output=output, opts=opts, sample=sample, groups=group_list, on_event=show)
    else:

        def line(e: ProbeEvent) -> None:
            if e.kind != "start":
                con.print(Text(f"[{e.done}/{e.total}] {e.text}" if e.kind == "end" else e.text))

        res, fp, out = profile(sweep, output=output, opts=opts, sample=sample, groups=group_list, on_event=line)
    con.print(_peaks_table(sweep.name, res))
    for rid, why in res.skipped:
        con.print(Text(f"skipped {rid}: {why}", style="yellow"))
    con.print(
        Text(
            f"{len(res.measurements)} configuration(s) probed on {res.slots} instance(s) in {res.probing_s:.1f} s "
            f"(setting up {res.setup_s:.1f} s, leaving the host as found {res.teardown_s:.1f} s); footprints written to {out}"
        )
    )
    for p in res.problems:
        con.print(Text(f"warning: {p}", style="bold red"))
    if res.interrupted:
        raise typer.Exit(130)
    if res.problems:
        raise typer.Exit(1)


def _peaks_table(name: str, res: ProfileResult) -> Table:
    """The measured peaks of sweep `name`, one row a run."""
    t = Table(title=f"{name}: measured peaks", title_justify="left")
    for c in ("run", "group", "peak", "measured by", "instance", "outcome", "probe"):
        t.add_column(c, justify="right" if c in ("peak", "probe") else "left")
    for m in sorted(res.measurements, key=lambda m: (m.group, m.run)):
        t.add_row(
            m.run,
            m.group,
            format_mib(m.peak_mib) + (" (at least)" if m.lower_bound else ""),
            m.how,
            f"{m.profile} ({format_mib(m.instance_mib)})",
            m.outcome,
            f"{m.probe_s:.1f} s",
        )
    return t


def _speed(sweep: Sweep, output: Path | None, opts: ProbeOptions, groups: list[str] | None) -> None:
    from migbench.footprints.speed import profile_speed

    con = console()

    def line(e: ProbeEvent) -> None:
        if e.kind == "end":
            con.print(Text(e.text))

    speeds, skipped, notes, problems, _fp, out = profile_speed(sweep, output=output, opts=opts, groups=groups, on_event=line)
    for n in notes:
        con.print(Text(n))
    t = Table(title=f"{sweep.name}: measured compute", title_justify="left")
    for c in ("group", "compute", "declared", "small instance", "large instance", "timed by"):
        t.add_column(c, justify="right" if c in ("compute", "declared") else "left")
    declared = {r.group: r for r in sweep.runs}
    for s in speeds:
        r = declared.get(s.group)
        t.add_row(
            s.group,
            ("at least " if s.lower_bound else "") + f"{s.compute:.3g}",
            "-" if r is None or r.compute_source != "declared" else f"{r.compute:.3g}",
            f"{s.small.profile}: {s.small.step_s:.3g} s/step ({s.small.steps})",
            f"{s.large.profile}: {s.large.step_s:.3g} s/step ({s.large.steps})",
            s.how,
        )
    con.print(t)
    for g, why in skipped:
        con.print(Text(f"skipped group {g}: {why}", style="yellow"))
    con.print(Text(f"compute of {len(speeds)} group(s) written to {out}; `migbench plan --footprints {out}` plans on it"))
    for p in problems:
        con.print(Text(f"warning: {p}", style="bold red"))
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("profile", help="Run each memory configuration of a sweep briefly on MIG instances and record its peak memory.")(profile_cmd)
