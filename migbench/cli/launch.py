"""The launcher's commands: `launch`, `run`, `status`, `logs`, `stop`. Thin: parse -> call
`migbench.launch` (or `migbench.workflows` for `run`) -> render."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from migbench.cli.clock import command_started
from migbench.cli.common import STATE_DIR_HELP, TIME_LIMIT_HELP, console
from migbench.cli.render import status_view
from migbench.errors import MigbenchError

if TYPE_CHECKING:
    from migbench.launch.options import LaunchOptions
    from migbench.plan import Plan

# launch


def launch_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file (applied with `migbench apply`).")],
    detach: Annotated[bool, typer.Option("--detach", help="Run the launcher in the background; log to <state dir>/launcher.log.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each run's environment and argv in start order; start and change nothing.")] = False,
    drain: Annotated[bool, typer.Option("--drain", help="First Ctrl-C only stops new starts and lets running runs finish; a second one stops them.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued on other instances.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option("--force", help="Continue a state made from another plan (runs whose ids are unchanged keep their state).")] = False,
) -> None:
    from migbench.launch.options import LaunchOptions
    from migbench.launch.supervisor import launch
    from migbench.plan import Plan

    plan = Plan.load(plan_file)
    opts = LaunchOptions(state_dir=state_dir, drain=drain, lend=not no_lend, force=force)
    if dry_run:
        _print_dry_run(plan, opts)
        return
    if detach:
        _detach(plan, opts)
        return
    res = launch(plan, opts)
    raise typer.Exit(res.exit_code)


def _print_dry_run(plan: Plan, opts: LaunchOptions) -> None:
    from migbench.launch.prepare import dry_run

    specs, notes = dry_run(plan, opts.state_dir)
    typer.echo(f"# dry run: {len(specs)} run(s) of {plan.name} in start order; nothing is started or written")
    for n in notes:
        typer.echo(f"# note: {n}")
    inst = {i.key: i for i in plan.instances}
    for s in specs:
        i = inst.get(s.instance)
        where = f"GPU {i.gpu} {i.profile}@{i.start}" if i else s.instance
        typer.echo("")
        typer.echo(f"# {s.run_id} attempt {s.attempt} on {where}")
        typer.echo(f"cd {shlex.quote(s.workdir)}")
        for k, v in s.env.items():
            typer.echo(f"export {k}={shlex.quote(v)}")
        typer.echo(shlex.join(s.argv))


def _detach(plan: Plan, opts: LaunchOptions) -> None:
    from migbench.launch.detach import detach

    d = detach(plan, opts)
    plan_arg = shlex.quote(str(plan.path))
    con = console()
    con.print(f"launcher started in the background (PID {d.pid}); state and logs in {d.state_dir}")
    con.print(f"  follow it:  migbench status {plan_arg} --watch    (or: tail -f {shlex.quote(str(d.log))})")
    con.print(f"  stop it:    migbench stop {plan_arg}")


# ---------------------------------------------------------------------------------------------
# run = plan + apply + launch
# ---------------------------------------------------------------------------------------------


def run_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help=TIME_LIMIT_HELP, min=0.1)] = 10.0,
    detach: Annotated[bool, typer.Option("--detach", help="Run the launcher in the background.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    drain: Annotated[bool, typer.Option("--drain", help="First Ctrl-C only stops new starts.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Continue a state made from a different plan.")] = False,
) -> None:
    from migbench.cli.progress import PlanProgress
    from migbench.launch.options import LaunchOptions
    from migbench.launch.supervisor import launch
    from migbench.sweep import load_sweep
    from migbench.workflows import plan_and_apply

    con = console()
    sweep = load_sweep(sweep_file)
    with PlanProgress(con, enabled=con.is_terminal, started=command_started()) as progress:
        plan = plan_and_apply(
            sweep, sweep_file, fleet=fleet, time_limit_s=time_limit, state_dir=state_dir, say=con.print,
            started=command_started(), progress=progress.update,
        )
    opts = LaunchOptions(state_dir=state_dir, drain=drain, lend=not no_lend, force=force)
    if detach:
        _detach(plan, opts)
        return
    res = launch(plan, opts)
    raise typer.Exit(res.exit_code)


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def status_cmd(
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document with `runs` and `host`.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="List every run (default: active, failed and the latest finished).")] = False,
) -> None:
    from migbench.backend.select import read_host_if_available
    from migbench.cli.export import status_of_export
    from migbench.launch.status import find_state_dir, host_doc, status_doc
    from migbench.launch.store import db_path

    if not watch and status_of_export(plan_file, state_dir, as_json):
        return
    sd, notes = find_state_dir(plan_file, state_dir)

    def gather() -> tuple[dict[str, Any] | None, Any, list[str]]:
        extra = list(notes)
        doc = None
        if sd is not None:
            if db_path(sd).exists():
                doc = status_doc(sd)
            else:
                extra.append(f"no launch yet in {sd}")
        try:
            host = read_host_if_available()
        except MigbenchError as exc:
            host = None
            extra.append(f"cannot read the GPUs: {exc.message}")
        return doc, host, extra

    if as_json:
        doc, host, extra = gather()
        typer.echo(json.dumps({"runs": doc, "host": host_doc(host) if host is not None else None, "notes": extra}, indent=2))
        return
    con = console()
    if not watch:
        con.print(status_view(*gather(), all_runs=all_runs))
        return
    from rich.live import Live

    try:
        with Live(status_view(*gather(), all_runs=all_runs), console=con, refresh_per_second=1, screen=False) as live:
            while True:
                time.sleep(2.0)
                live.update(status_view(*gather(), all_runs=all_runs))
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------------------------
# logs, stop
# ---------------------------------------------------------------------------------------------


def _state_dir_or_fail(plan_file: Path | None, state_dir: Path | None) -> Path:
    from migbench.launch.status import find_state_dir

    sd, notes = find_state_dir(plan_file, state_dir)
    if sd is None:
        raise MigbenchError("no launch state found under ./runs/", hint="pass the PLAN file or --state-dir")
    for n in notes:
        typer.echo(n, err=True)
    return sd


def logs_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id (see `migbench status`).")],
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing until the run ends.")] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Print stderr instead of stdout.")] = False,
    attempt: Annotated[Optional[int], typer.Option("--attempt", help="Which attempt (default: the latest).", min=1)] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
) -> None:
    from migbench.launch.status import log_file, run_state
    from migbench.launch.store import ACTIVE_STATES

    sd = _state_dir_or_fail(plan_file, state_dir)
    path, n, state = log_file(sd, run_id, attempt=attempt, stderr=stderr)
    out = sys.stdout.buffer
    pos = 0

    def pump() -> bool:
        nonlocal pos
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            return False
        if data:
            out.write(data)
            out.flush()
            pos += len(data)
        return bool(data)

    pump()
    if not follow:
        return
    try:
        while True:
            state, latest = run_state(sd, run_id)
            got = pump()
            if attempt is None and latest > n:  # a retry started: follow it
                n = latest
                path = path.parent.parent / f"attempt-{n}" / path.name
                pos = 0
                out.write(f"--- attempt {n} ---\n".encode())
                continue
            if not got and state not in ACTIVE_STATES and (attempt is not None or state != "queued" or not _launcher_alive(sd)):
                pump()
                return
            time.sleep(0.25)
    except KeyboardInterrupt:
        return


def _launcher_alive(sd: Path) -> bool:
    from migbench.launch.status import launcher_doc, open_state

    st = open_state(sd)
    try:
        return bool(launcher_doc(st.launcher())["alive"])
    finally:
        st.close()


def stop_cmd(
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    now: Annotated[bool, typer.Option("--now", help="SIGKILL the runs at once instead of SIGTERM + grace.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Return only when the launcher has exited.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
) -> None:
    from migbench.cli.export import stop_export
    from migbench.launch.status import request_stop, wait_stopped

    if stop_export(plan_file, state_dir):
        return
    sd = _state_dir_or_fail(plan_file, state_dir)
    pid = request_stop(sd, now=now)
    how = "kill its runs now" if now else "stop: SIGTERM to its runs, SIGKILL after the stop grace"
    console().print(f"asked the launcher (PID {pid}) to {how}; its runs will be marked interrupted")
    if wait:
        if not wait_stopped(sd, pid, 3600.0):
            raise MigbenchError(f"the launcher (PID {pid}) is still running")
        console().print("the launcher has exited")


# ---------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add `launch`, `run`, `status`, `logs` and `stop` to the main app."""
    app.command("launch", help="Start every run of an applied plan, each pinned to its MIG device; resumes an earlier launch.")(launch_cmd)
    app.command("run", help="Plan, apply and launch a sweep in one go (idempotent: finished runs are kept).")(run_cmd)
    app.command("status", help="Runs of a launch (state, instance, attempt, elapsed, peak memory), the launcher, and the GPUs.")(status_cmd)
    app.command("logs", help="Print a run's stdout (or stderr) of its latest attempt; -f follows it.")(logs_cmd)
    app.command("stop", help="Ask the running launcher to stop its runs (SIGTERM, grace, SIGKILL; --now: SIGKILL).")(stop_cmd)


__all__ = ["register"]
