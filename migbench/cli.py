"""The `migbench` command line: parse -> call the core -> render. No domain logic lives here.

Expected failures are `MigbenchError`s, printed once here as `Error: ...` / `Hint: ...` with exit
code 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from migbench import __version__
from migbench.errors import MigbenchError, UsageError

app = typer.Typer(
    name="migbench",
    help="Plan, apply and launch research sweeps on NVIDIA MIG instances, sized to each run's memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


from migbench.sim_cli import sim_app  # noqa: E402

app.add_typer(sim_app, name="sim", help="The simulated MIG host: init, show, attach, reboot, faults, and its nvidia-smi.")


def _console(stderr: bool = False) -> Console:
    import os

    width = int(os.environ["MIGBENCH_WIDTH"]) if os.environ.get("MIGBENCH_WIDTH") else None
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def print_error(err: MigbenchError) -> None:
    # Errors are never hard-wrapped: a path or a command in one must survive copy and paste, and
    # the text must not depend on how long the paths in it happen to be.
    con = _console(stderr=True)
    con.soft_wrap = True
    con.print(Text("Error: ", style="bold red") + Text(err.message))
    for p in err.problems:
        con.print(Text("  " + str(p)))
        if p.hint:
            con.print(Text("    Hint: ", style="cyan") + Text(p.hint))
    if err.hint:
        con.print(Text("Hint: ", style="bold cyan") + Text(err.hint))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. typer handles usage errors (exit 2) and `typer.Exit(code)`;
    a MigbenchError is printed once, without a traceback."""
    try:
        app(args=argv, prog_name="migbench")
    except MigbenchError as err:
        print_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"migbench {__version__}")
        raise typer.Exit(0)


# ---------------------------------------------------------------------------------------------
# catalog
# ---------------------------------------------------------------------------------------------


@app.command(
    "catalog",
    help=(
        "Show the GPU models migbench knows, one model's profiles, or its layouts; "
        "`catalog import LGIP LGIPP --name MODEL` teaches a new GPU from nvidia-smi text."
    ),
)
def catalog_cmd(
    args: Annotated[Optional[list[str]], typer.Argument(help="MODEL, or: import LGIP_FILE LGIPP_FILE")] = None,
    layouts: Annotated[bool, typer.Option("--layouts", help="List every maximal legal layout as profile@start.")] = False,
    all_profiles: Annotated[bool, typer.Option("--all-profiles", help="With --layouts: include +me profiles.")] = False,
    driver: Annotated[Optional[str], typer.Option("--driver", help="Resolve profiles and memory for this driver version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="import: the model key to store it under.")] = None,
    architecture: Annotated[str, typer.Option("--architecture", help="import: ampere, hopper or blackwell.")] = "unknown",
    gpu: Annotated[int, typer.Option("--gpu", help="import: which GPU index of the pasted text.")] = 0,
) -> None:
    from migbench import catalog as cat_mod
    from migbench.render import catalog_models_table, catalog_profiles_table, layouts_text

    args = list(args or [])
    con = _console()
    cat = cat_mod.default_catalog()
    if args and args[0] == "import":
        if len(args) != 3:
            raise UsageError("catalog import needs two files", hint="migbench catalog import lgip.txt lgipp.txt --name MODEL")
        _catalog_import(args[1], args[2], name, driver, architecture, gpu, as_json)
        return
    if len(args) > 1:
        raise UsageError("catalog takes at most one MODEL", hint="migbench catalog A100-SXM4-40GB --layouts")
    if not args:
        rows = []
        for key in cat.keys():
            m = cat.model(key, driver)
            rows.append((key, m.display_name, m.architecture, m.memory_slices, m.compute_slices, len(m.profiles), len(m.layouts()), m.origin))
        if as_json:
            typer.echo(json.dumps({"models": [
                {"model": r[0], "name": r[1], "architecture": r[2], "memory_slices": r[3], "compute_slices": r[4],
                 "profiles": r[5], "maximal_layouts": r[6], "origin": r[7]} for r in rows]}, indent=2))
        else:
            con.print(catalog_models_table(rows))
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
        typer.echo(json.dumps({
            "model": model.key, "names": list(model.names), "architecture": model.architecture,
            "memory_slices": model.memory_slices, "compute_slices": model.compute_slices,
            "driver": None if model.driver is None else ".".join(map(str, model.driver)),
            "profiles": [{
                "name": p.name, "id": p.id, "compute_slices": p.compute_slices, "memory_slices": p.memory_slices,
                "memory_mib": p.memory_mib, "max_count": p.max_count, "starts": list(p.starts), "media": p.media,
                "sm": p.engines.sm, "memory_source": p.memory_source, "unverified": list(p.unverified),
            } for p in model.profiles],
            "sources": list(model.sources), "unverified": list(model.unverified),
        }, indent=2))
        return
    con.print(catalog_profiles_table(model))
    for note in model.unverified:
        con.print(Text(f"unverified: {note}", style="yellow"))


def _catalog_import(lgip: str, lgipp: str, name: str | None, driver: str | None, arch: str, gpu: int, as_json: bool) -> None:
    from migbench import catalog as cat_mod
    from migbench.errors import InputError

    texts = []
    for f in (lgip, lgipp):
        p = Path(f)
        if not p.exists():
            raise InputError(f"{f} does not exist", hint="save the output of `nvidia-smi mig -lgip` and `-lgipp` to files")
        texts.append(p.read_text(errors="replace"))
    rows = cat_mod.rows_from_text(texts[0], texts[1], gpu=gpu, lgip_file=lgip, lgipp_file=lgipp)
    cat = cat_mod.default_catalog()
    if name is None:
        raise UsageError(
            "catalog import needs --name MODEL (the key plans and sweeps will use)",
            hint="e.g. --name H100-NVL; use the NVML product name from `nvidia-smi -L`",
        )
    base_key = cat.find_key(name)
    base = cat.model(base_key) if base_key else None
    drv = cat_mod.parse_driver(driver) if driver else None
    model = cat_mod.model_from_rows(
        base_key or name, rows, names=[name] if base is None else list(base.names), architecture=arch,
        driver=drv, origin="user", memory_source="nvidia-smi -lgip text", base=base,
    )
    problems = model.check([])  # geometry sanity: an empty layout is always legal
    assert not problems
    spec = cat_mod.spec_from_model(model, driver_label=driver, sources=[f"imported from {lgip} and {lgipp}"])
    path = cat_mod.save_user_model(model.key, spec)
    n_layouts = len(model.layouts())
    if as_json:
        typer.echo(json.dumps({"model": model.key, "profiles": len(model.profiles), "maximal_layouts": n_layouts, "catalog": str(path)}))
    else:
        _console().print(
            f"Imported {model.key}: {len(model.profiles)} profiles, {model.memory_slices} memory / "
            f"{model.compute_slices} compute slices, {n_layouts} maximal layouts -> {path}"
        )


# ---------------------------------------------------------------------------------------------
# estimate, plan
# ---------------------------------------------------------------------------------------------


@app.command("estimate", help="Show each run's memory estimate and its parts.")
def estimate_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from migbench.sweep import load_sweep
    from migbench.units import format_mib

    sweep = load_sweep(sweep_file)
    if as_json:
        typer.echo(json.dumps({"sweep": sweep.name, "runs": [
            {"id": r.id, "group": r.group, "memory_mib": r.memory_mib, "source": r.memory_source,
             "parts": {k: v for k, v in r.memory_parts}, "params": r.params} for r in sweep.runs]}, indent=2))
        return
    t = Table(title=f"{sweep.name}: memory per run", title_justify="left")
    t.add_column("run")
    t.add_column("group")
    t.add_column("memory", justify="right")
    t.add_column("MiB", justify="right")
    t.add_column("source")
    t.add_column("parts")
    for r in sweep.runs:
        parts = ", ".join(f"{k} {format_mib(v)}" for k, v in r.memory_parts)
        t.add_row(r.id, r.group, format_mib(r.memory_mib), str(r.memory_mib), r.memory_source, parts)
    _console().print(t)


def _fleet_for(sweep, fleet_opt: str | None):  # type: ignore[no-untyped-def]
    from migbench.planner import FleetSpec, build_fleet, parse_fleet_option
    from migbench import hostinfo

    live = hostinfo.live_models()
    if fleet_opt:
        return build_fleet(parse_fleet_option(fleet_opt), live=live), []
    if sweep.fleet:
        return build_fleet([FleetSpec(f.gpu, f.count, f.driver) for f in sweep.fleet], live=live), []
    host = hostinfo.host_fleet()
    if host:
        return host, ["fleet read from the host through NVML"]
    raise MigbenchError(
        "no fleet: the sweep has no `fleet:`, --fleet was not given, and no GPU is visible through NVML",
        hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 4}]` to the sweep, pass --fleet A100-SXM4-80GB:4, "
        "or try the simulated host: migbench sim init ./sim --gpu A100-SXM4-80GB --count 4 && export MIGBENCH_SIM=./sim",
    )


@app.command("plan", help="Expand a sweep, estimate memory, and solve for the MIG layout and run assignment.")
def plan_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Plan file to write (default: <sweep name>.plan.yaml).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver time budget in seconds.", min=0.1)] = 10.0,
    objective: Annotated[str, typer.Option("--objective", help="auto | throughput | makespan.")] = "auto",
    allow_unplaced: Annotated[bool, typer.Option("--allow-unplaced", help="List runs that fit nowhere instead of failing.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="CP-SAT worker threads.", min=1)] = 1,
    quiet_runs: Annotated[bool, typer.Option("--no-runs", help="Do not print the per-run table.")] = False,
) -> None:
    from migbench.planner import check_plan_input, make_plan
    from migbench.render import plan_view
    from migbench.solver import SolveOptions
    from migbench.sweep import load_sweep

    if objective not in ("auto", "throughput", "makespan"):
        raise UsageError(f"--objective {objective!r} is not one of auto, throughput, makespan")
    sweep = load_sweep(sweep_file)
    check_plan_input(sweep)
    fleet_gpus, notes = _fleet_for(sweep, fleet)
    plan = make_plan(
        sweep, fleet_gpus, SolveOptions(time_limit_s=time_limit, objective=objective, allow_unplaced=allow_unplaced, workers=workers),
        notes=notes,
    )
    out = output or Path(f"{sweep.name}.plan.yaml")
    plan.save(out)
    if as_json:
        typer.echo(plan.to_json())
        return
    models = {g.model.key: g.model for g in fleet_gpus}
    con = _console()
    con.print(plan_view(plan, models, show_runs=not quiet_runs))
    con.print(Text(f"plan written to {out}"))


# ---------------------------------------------------------------------------------------------
# apply, check, status
# ---------------------------------------------------------------------------------------------


def _parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--gpus {text!r}: expected comma-separated GPU indices, e.g. --gpus 0,2") from None


@app.command("apply", help="Reconcile the GPUs to a plan with nvidia-smi: idempotent, placement-exact, never destroying an instance in use.")
def apply_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file written by `migbench plan`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the exact commands; change nothing.")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Only these GPUs of the plan, e.g. 0,2.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before destroying instances or changing MIG mode.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Where bindings are stored (default: <plan dir>/runs/<sweep>/).")] = None,
) -> None:
    from migbench.apply import apply_plan, is_tty
    from migbench.backend import open_backend
    from migbench.plan import Plan

    plan = Plan.load(plan_file)
    backend = open_backend(dry_run=dry_run)
    con = _console()

    def confirm(text: str) -> bool:
        if yes:
            return True
        if not is_tty():
            raise UsageError(
                "apply would destroy instances or change MIG mode:\n" + text,
                hint="review with --dry-run, then re-run with --yes",
            )
        con.print(text)
        return typer.confirm("Proceed?", default=False)

    report = apply_plan(plan, backend, gpus=_parse_gpus(gpus), confirm=confirm, state_dir=state_dir)
    if dry_run:
        con.print(Text(f"# dry run on {backend.description}: these commands would run", style="bold"))
        if not report.commands:
            con.print("# nothing to do: every GPU already matches the plan")
        for rec in report.commands:
            typer.echo(rec.line())
        return
    for d in report.diffs:
        if not d.changes:
            con.print(f"GPU {d.gpu}: already matches the plan (kept {len(d.keep)} instances)")
        else:
            con.print(
                f"GPU {d.gpu}: kept {len(d.keep)}, destroyed {len(d.destroy)}, created {len(d.create)}"
                + (f", MIG mode {d.mode}" if d.mode != "ok" else "")
            )
    for m in report.messages:
        con.print(m)
    if report.changed:
        con.print(f"{len(report.commands)} command(s) run; every GPU read back as planned")
    if report.bindings_path:
        con.print(f"MIG uuids of {len(report.bindings['runs'])} runs bound in {report.bindings_path}")


@app.command("check", help="Exit 0 when the host matches the plan, 1 with the differences.")
def check_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Only these GPUs of the plan.")] = None,
) -> None:
    from migbench.apply import check_host_matches_models, target_gpus, verify
    from migbench.backend import read_host
    from migbench.plan import Plan

    plan = Plan.load(plan_file)
    targets = target_gpus(plan, _parse_gpus(gpus))
    host = read_host()
    check_host_matches_models(plan, host, targets)
    diffs = verify(plan, host, targets)
    con = _console()
    if diffs:
        con.print(Text(f"the host differs from {plan_file}:", style="bold red"))
        for d in diffs:
            con.print("  " + d)
        raise typer.Exit(1)
    con.print(f"the host matches {plan_file} on GPU(s) {', '.join(map(str, targets))}")


@app.command("simulate", help="Play the whole sweep forward under the plan's duration model; --compare shows the baselines.")
def simulate_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    compare: Annotated[bool, typer.Option("--compare", help="Also run the sweep under the baselines (no MIG, mig-parted layouts, greedy).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
) -> None:
    from migbench.catalog import default_catalog
    from migbench.plan import Plan
    from migbench.render import simulate_view
    from migbench.simulate import simulate_plan

    plan = Plan.load(plan_file)
    reports = [simulate_plan(plan, lend=not no_lend)]
    if compare:
        from migbench.baselines import BASELINES, BRun
        from migbench.engine import Job
        from migbench.solver import FleetGpu

        cat = default_catalog()
        fleet = [FleetGpu(g.gpu, cat.model(g.model)) for g in plan.fleet]
        runs = [
            BRun(Job(r.id, r.memory_mib, float(r.duration_s or 1.0), r.compute, r.max_runs_per_instance), r.profiles)
            for r in plan.placed_runs()
        ]
        interference = float(plan.duration_model.get("interference", 0.0) or 0.0)
        basis = str(plan.duration_model.get("compute_basis", "sm"))
        for name, fn in BASELINES.items():
            reports.append(fn(runs, fleet, interference=interference, basis=basis).report if name != "one-per-gpu" else fn(runs, fleet, interference=interference).report)
    if as_json:
        typer.echo(json.dumps({"plan": str(plan_file), "simulations": [r.to_dict() for r in reports]}, indent=2))
        return
    _console().print(simulate_view(reports))


from migbench.launch_cli import register as _register_launch; _register_launch(app)  # noqa: E402,E702

if __name__ == "__main__":  # pragma: no cover
    main()
