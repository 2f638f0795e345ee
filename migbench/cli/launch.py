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
from migbench.cli.common import MAX_TIME_LIMIT_S, STATE_DIR_HELP, TIME_LIMIT_HELP, adopt_simulated_host, console, load_plan, load_sweep, warn
from migbench.cli.render import shell_word, status_view
from migbench.errors import MigbenchError, UsageError

if TYPE_CHECKING:
    from migbench.backend.base import HostState
    from migbench.launch.options import LaunchOptions
    from migbench.launch.status import StatusDoc
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
    resume_unknown: Annotated[
        bool, typer.Option("--resume-unknown", help="Run again the runs whose outcome is unknown (status 'unknown'), with MIGBENCH_RESUME=1.")
    ] = False,
) -> None:
    from migbench.launch.options import LaunchOptions
    from migbench.launch.supervisor import launch
    from migbench.state import StateDir

    plan = load_plan(plan_file, runs=True)
    if not dry_run:
        adopt_simulated_host(plan_file.parent)
    opts = LaunchOptions(state_dir=StateDir.of(plan, state_dir), drain=drain, lend=not no_lend, force=force, resume_unknown=resume_unknown)
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
        typer.echo(f"cd {shell_word(s.workdir)}")
        if s.env_passthrough is not None:
            keep = ", ".join(s.env_passthrough) or "none"
            typer.echo(f"# of the launcher's environment only: {keep} (launch.env_passthrough)")
        for k, v in s.env.items():
            typer.echo(f"export {k}={shell_word(v)}")
        typer.echo(" ".join(map(shell_word, s.argv)))


def _detach(plan: Plan, opts: LaunchOptions) -> None:
    from migbench.launch.detach import detach

    d = detach(plan, opts)
    plan_arg = shlex.quote(str(plan.path))
    sd_arg = f" --state-dir {shlex.quote(str(opts.state_dir.path))}" if opts.state_dir.given else ""  # else they look in the plan's own
    con = console()
    con.print(f"launcher started in the background (PID {d.pid}); state and logs in {d.state_dir}")
    con.print(f"  follow it:  migbench status {plan_arg} --watch{sd_arg}    (or: tail -f {shlex.quote(str(d.log))})")
    con.print(f"  stop it:    migbench stop {plan_arg}{sd_arg}")


# ---------------------------------------------------------------------------------------------
# run = plan + apply + launch
# ---------------------------------------------------------------------------------------------


def run_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help=TIME_LIMIT_HELP, min=0.1, max=MAX_TIME_LIMIT_S)] = 10.0,
    detach: Annotated[bool, typer.Option("--detach", help="Run the launcher in the background.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    drain: Annotated[bool, typer.Option("--drain", help="First Ctrl-C only stops new starts.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Kept for scripts: `run` continues its sweep's launch state by itself.")] = False,
) -> None:
    from migbench.cli.progress import PlanProgress
    from migbench.launch.options import LaunchOptions
    from migbench.launch.supervisor import launch
    from migbench.sweep.runnable import start_problems
    from migbench.workflows import plan_and_apply, run_state_dir

    con = console()
    sweep = load_sweep(sweep_file, runs=True)
    warn(start_problems(sweep))
    with PlanProgress(con, enabled=con.is_terminal, started=command_started()) as progress:
        prep = plan_and_apply(
            sweep,
            sweep_file,
            fleet=fleet,
            time_limit_s=time_limit,
            state_dir=run_state_dir(sweep, sweep_file, state_dir),
            say=con.print,
            started=command_started(),
            progress=progress.update,
        )
    if prep.plan is None:
        return
    plan = prep.plan
    # `run` continues its own sweep's launch state: runs keep their state by id across re-plans
    opts = LaunchOptions(state_dir=prep.state_dir, drain=drain, lend=not no_lend, force=force or prep.continues)
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
    watch: Annotated[
        bool,
        typer.Option("--watch", help="A live view (each instance's runs, their progress, the ETA), refreshed every 2 s until the launcher exits or Ctrl-C."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document with `runs` and `host`.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="List every run (default: active, failed and the latest finished).")] = False,
    bench: Annotated[bool, typer.Option("--bench", help="The host's bench (`migbench submit`): every sweep submitted to it.")] = False,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Of the host's bench, one sweep's runs only (implies --bench).")] = None,
) -> None:
    from migbench.backend.select import adopt_simulated_host_near as adopt_sim_near
    from migbench.backend.select import read_host_if_available
    from migbench.cli.export import status_of_export
    from migbench.launch.status import find_state_dir, host_doc, run_params, runs_to_show, status_doc
    from migbench.launch.store import db_path

    _watch_or_json(watch, as_json)
    if bench or sweep:
        plan_file = _bench_plan(plan_file)
    found, notes = find_state_dir(plan_file, state_dir)
    if not watch and plan_file is not None and found is not None and status_of_export(plan_file, found, as_json):
        return
    sd = found.path if found is not None else None
    near = [plan_file.parent if plan_file else None, sd.parent.parent if sd else None, Path.cwd()]
    adopted = adopt_sim_near(*near)
    if adopted:
        notes = [*notes, adopted]

    def gather() -> tuple[StatusDoc | None, HostState | None, list[str]]:
        extra = list(notes)
        doc = None
        if sd is not None:
            if db_path(sd).exists():
                doc = status_doc(sd) if sweep is None else _one_sweep(status_doc(sd), sweep)
            else:
                extra.append(f"no launch yet in {sd}")
        try:
            host = read_host_if_available()
        except MigbenchError as exc:
            host = None
            extra.append(f"cannot read the GPUs: {exc.message}")
        return doc, host, extra

    def params_of(doc: StatusDoc | None, every: bool) -> dict[str, dict[str, Any]]:
        """The parameters of the runs shown (from their run directories; the plan only for runs
        that never started)."""
        if doc is None or sd is None:
            return {}
        ids = [r["id"] for r in (doc["runs"] if every else runs_to_show(doc, all_runs)[0])]
        return run_params(sd, ids, plan_file or doc.get("plan_file"))

    if as_json:
        doc, host, extra = gather()
        params = params_of(doc, True)
        for r in doc["runs"] if doc is not None else []:
            r["params"] = params.get(r["id"])
        typer.echo(json.dumps({"runs": doc, "host": host_doc(host) if host is not None else None, "notes": extra}, indent=2))
        return
    con = console()

    def view() -> Any:
        doc, host, extra = gather()
        return status_view(doc, host, extra, all_runs=all_runs, width=con.width, params=params_of(doc, False) or None)

    plan = _watch_plan(plan_file, sd) if watch else None
    if plan is None or sd is None or not db_path(sd).exists():
        if watch and sd is not None and db_path(sd).exists():
            notes.append("no plan file to draw the live view from: showing the plain status (pass PLAN)")
        con.print(view())
        return
    _watch(plan, sd, notes)


def _watch_or_json(watch: bool, as_json: bool) -> None:
    """`status --watch --json` is a usage error: one of them would be ignored."""
    if watch and as_json:
        raise UsageError(
            "give --watch or --json, not both",
            hint="--watch draws a live view on the terminal; --json prints one JSON document (run it again for a fresh one)",
        )


def _bench_plan(plan_file: Path | None) -> Path:
    """The host's bench plan (`--bench`): PLAN when given, else the one in the bench directory."""
    from migbench.launch.bench import bench_dir, bench_plan_path

    if plan_file is not None:
        return plan_file
    p = bench_plan_path(bench_dir())
    if not p.exists():
        raise MigbenchError(f"no bench on this host ({p} does not exist)", hint="submit a sweep to it: `migbench submit SWEEP`")
    return p


def _one_sweep(doc: StatusDoc, sweep: str) -> StatusDoc:
    """The bench's status with one sweep's runs only (their ids are `<sweep>.<run id>`)."""
    from migbench.launch.bench import of_sweep

    runs = [r for r in doc["runs"] if of_sweep(r["id"], sweep)]
    if not runs:
        names = sorted({r["id"].rsplit(".", 1)[0] for r in doc["runs"]})  # a run id has no dot; a sweep's name may
        raise MigbenchError(f"the bench has no run of a sweep {sweep!r}", hint=f"its sweeps: {', '.join(names) or 'none yet'}")
    counts = dict.fromkeys(doc["counts"], 0)
    for r in runs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {**doc, "sweep": sweep, "counts": counts, "total": len(runs), "runs": runs}


def _watch_plan(plan_file: Path | None, sd: Path | None) -> Plan | None:
    """The plan the live view draws: PLAN, else the plan file the launch state names (read once)."""
    from migbench.launch.status import open_state
    from migbench.launch.store import db_path
    from migbench.plan import Plan

    if plan_file is not None:
        return Plan.load(plan_file)
    if sd is None or not db_path(sd).exists():
        return None
    st = open_state(sd)
    try:
        named = st.meta("plan_file")
    finally:
        st.close()
    if named and Path(named).exists():
        try:
            return Plan.load(named, regular=True)
        except MigbenchError:
            return None
    return None


def _watch(plan: Plan, sd: Path, notes: list[str]) -> None:
    """`status --watch`: the plan read once, the launch state every 2 s (`status_doc`), drawn by
    `cli.live`; ends when the launcher is not running (after one last frame) or on Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from migbench.cli.live import live_view
    from migbench.launch.status import status_doc
    from migbench.report.progress import SweepProgress

    progress = SweepProgress(plan)
    con = console()

    def frame() -> tuple[Any, bool]:
        snap = progress.snapshot(status_doc(sd))
        view = live_view(snap)
        if notes:
            view = Group(*[Text(n, style="yellow") for n in notes], view)
        return view, bool(snap.launcher.get("alive"))

    view, alive = frame()
    if not alive:
        con.print(view)
        con.print(Text("the launcher is not running; nothing to follow", style="dim"))
        return
    try:
        with Live(view, console=con, refresh_per_second=1, screen=False) as live:
            while alive:
                time.sleep(2.0)
                view, alive = frame()
                live.update(view, refresh=True)
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
    return sd.path


def logs_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id (see `migbench status`).")],
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing until the run ends.")] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Print stderr instead of stdout.")] = False,
    attempt: Annotated[Optional[int], typer.Option("--attempt", help="Which attempt (default: the latest).", min=1)] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
) -> None:
    from migbench.cli.export import read_log
    from migbench.launch.status import log_file, run_state
    from migbench.launch.store import ACTIVE_STATES, db_path

    sd = _state_dir_or_fail(plan_file, state_dir)
    if not db_path(sd).exists():  # run by an engine (migbench exec): the run directories only
        from migbench.cli.export import engine_logs

        engine_logs(sd, run_id, attempt=attempt, stderr=stderr, follow=follow)
        return
    path, n, state = log_file(sd, run_id, attempt=attempt, stderr=stderr)
    out = sys.stdout.buffer
    pos = 0

    def pump() -> bool:
        nonlocal pos
        got = read_log(path, pos, out)
        pos += got
        return bool(got)

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
    from migbench.launch.status import launcher_alive

    return launcher_alive(sd)


def stop_cmd(
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    now: Annotated[bool, typer.Option("--now", help="SIGKILL the runs at once instead of SIGTERM + grace.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Return only when the launcher has exited.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
) -> None:
    from migbench.cli.export import stop_export
    from migbench.launch.status import request_stop, wait_stopped
    from migbench.plan import Plan
    from migbench.state import StateDir

    given = StateDir.of(Plan.load(plan_file), state_dir) if plan_file is not None else None  # the plan read whole first, as always
    if given is not None and stop_export(given):
        return
    sd = given.path if given is not None else _state_dir_or_fail(None, state_dir)
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
