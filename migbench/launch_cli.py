"""The launcher's commands: `launch`, `run`, `status`, `logs`, `stop`. `register(app)` adds them to
the main typer app (cli.py calls it). Thin: parse -> call `migbench.launch` -> render."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migbench.errors import MigbenchError

STATE_DIR_HELP = "The launch state directory (default: <plan dir>/runs/<sweep name>/)."


def _console():  # type: ignore[no-untyped-def]
    from migbench.cli import _console as con

    return con()


# ---------------------------------------------------------------------------------------------
# launch
# ---------------------------------------------------------------------------------------------


def launch_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file (applied with `migbench apply`).")],
    detach: Annotated[bool, typer.Option("--detach", help="Run the launcher in the background; log to <state dir>/launcher.log.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each run's environment additions and argv in start order; start and change nothing.")] = False,
    drain: Annotated[bool, typer.Option("--drain", help="First Ctrl-C only stops new starts and lets running runs finish; a second one stops them.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued on other instances.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option("--force", help="Continue a state made from a different plan (runs whose ids are unchanged keep their state).")] = False,
) -> None:
    from migbench.launch import LaunchOptions, launch
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


def _print_dry_run(plan, opts) -> None:  # type: ignore[no-untyped-def]
    from migbench.launch import dry_run

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


def _detach(plan, opts) -> None:  # type: ignore[no-untyped-def]
    from migbench.launch import detach

    d = detach(plan, opts)
    plan_arg = shlex.quote(str(plan.path))
    con = _console()
    con.print(f"launcher started in the background (PID {d.pid}); state and logs in {d.state_dir}")
    con.print(f"  follow it:  migbench status {plan_arg} --watch    (or: tail -f {shlex.quote(str(d.log))})")
    con.print(f"  stop it:    migbench stop {plan_arg}")


# ---------------------------------------------------------------------------------------------
# run = plan + apply + launch
# ---------------------------------------------------------------------------------------------


def run_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file.")],
    fleet: Annotated[Optional[str], typer.Option("--fleet", help="MODEL:COUNT[,MODEL:COUNT] (overrides the sweep's fleet).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver time budget in seconds.", min=0.1)] = 10.0,
    detach: Annotated[bool, typer.Option("--detach", help="Run the launcher in the background.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    drain: Annotated[bool, typer.Option("--drain", help="First Ctrl-C only stops new starts.")] = False,
    no_lend: Annotated[bool, typer.Option("--no-lend", help="Idle instances do not take runs queued elsewhere.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Continue a state made from a different plan.")] = False,
) -> None:
    from migbench.apply import apply_plan, state_dir_for
    from migbench.backend import open_backend
    from migbench.cli import _fleet_for
    from migbench.launch import LaunchOptions, launch
    from migbench.launch.prepare import absolute_sim_env
    from migbench.launch.procs import LauncherLock
    from migbench.launch.supervisor import LOCK_NAME
    from migbench.plan import Plan
    from migbench.planner import check_plan_input, make_plan
    from migbench.solver import SolveOptions
    from migbench.sweep import load_sweep

    con = _console()
    sweep = load_sweep(sweep_file)
    check_plan_input(sweep)
    _simulate_if_no_gpu(sweep, sweep_file, fleet, con)
    absolute_sim_env()
    fleet_gpus, notes = _fleet_for(sweep, fleet)
    out = sweep_file.parent / f"{sweep.name}.plan.yaml"
    plan = None
    if out.exists():
        try:
            old = Plan.load(out)
        except MigbenchError:
            old = None
        same_fleet = old is not None and [(g.gpu, g.model) for g in old.fleet] == [(g.index, g.model.key) for g in fleet_gpus]
        if old is not None and old.sweep_sha256 == sweep.sha256 and same_fleet:
            plan = old
            con.print(f"the sweep and fleet are unchanged: reusing {out}")
    if plan is None:
        plan = make_plan(sweep, fleet_gpus, SolveOptions(time_limit_s=time_limit), notes=notes)
        plan.save(out)
        con.print(
            f"plan written to {out}: {len(plan.placed_runs())} runs on {len(plan.instances)} MIG instances of "
            f"{len(plan.fleet)} GPU(s)" + (f", {len(plan.unplaced)} unplaced" if plan.unplaced else "")
        )
    sd = state_dir_for(plan, state_dir)
    lock = LauncherLock(sd / LOCK_NAME)
    lock.ensure_free()
    report = apply_plan(plan, open_backend(), confirm=None, state_dir=state_dir)
    if report.changed:
        con.print(f"applied: {len(report.commands)} command(s); every GPU read back as planned")
    else:
        con.print("applied: every GPU already matches the plan")
    opts = LaunchOptions(state_dir=state_dir, drain=drain, lend=not no_lend, force=force)
    if detach:
        _detach(plan, opts)
        return
    res = launch(plan, opts)
    raise typer.Exit(res.exit_code)


def _simulate_if_no_gpu(sweep, sweep_file: Path, fleet: str | None, con) -> None:  # type: ignore[no-untyped-def]
    """With no NVIDIA driver and no MIGBENCH_SIM, `run` uses a simulated host shaped like the
    sweep's fleet, in `<sweep dir>/.migbench-sim/` (kept between runs), and says so."""
    import os

    from migbench import hostinfo
    from migbench.backend import read_host_if_available, sim_dir
    from migbench.backend.sim.host import init_host
    from migbench.planner import FleetSpec, parse_fleet_option

    if sim_dir() is not None or read_host_if_available() is not None:
        return
    specs = parse_fleet_option(fleet) if fleet else [FleetSpec(f.gpu, f.count, f.driver) for f in (sweep.fleet or ())]
    if not specs:
        raise MigbenchError(
            "no GPU is visible and the sweep names no fleet to simulate",
            hint="add `fleet: [{gpu: A100-SXM4-80GB, count: 2}]` to the sweep or pass --fleet A100-SXM4-80GB:2",
        )
    if len({s.model for s in specs}) > 1:
        raise MigbenchError(
            "no GPU is visible, and the simulated host holds one GPU model, but the fleet mixes several",
            hint="create a simulated host yourself (`migbench sim init DIR --gpu MODEL --count N`) and set MIGBENCH_SIM",
        )
    state = (sweep_file.parent / ".migbench-sim").resolve()
    count = sum(s.count for s in specs)
    if not (state / "host.json").exists():
        init_host(state, specs[0].model, count, driver=specs[0].driver)
        con.print(f"no NVIDIA GPU found: created a simulated host with {count} x {specs[0].model} in {state}")
    else:
        con.print(f"no NVIDIA GPU found: using the simulated host in {state}")
    os.environ["MIGBENCH_SIM"] = str(state)
    hostinfo.clear()


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


_STATE_STYLE = {
    "succeeded": "green", "running": "cyan", "starting": "cyan", "failed": "red", "oom": "red",
    "interrupted": "yellow", "abandoned": "magenta", "queued": "",
}


def _status_view(doc: dict[str, Any] | None, host: Any, notes: list[str]) -> RenderableType:
    from migbench.render import host_view

    parts: list[RenderableType] = [Text(n, style="yellow") for n in notes]
    if doc is not None:
        la = doc["launcher"]
        head = Text()
        head.append(f"{doc['sweep'] or '?'}", style="bold")
        head.append(f"  state {doc['state_dir']}\n")
        if la["pid"] is None:
            head.append("launcher: never started")
        elif la["alive"]:
            head.append(f"launcher: running, PID {la['pid']}", style="green")
            head.append(f", {la['state']}")
        else:
            head.append(f"launcher: not running (last PID {la['pid']}, {la['state']}")
            head.append(f", exit {la['exit_code']})" if la["exit_code"] is not None else ")")
        if la.get("stop_requested"):
            head.append(f"; stop requested ({la['stop_requested']})", style="yellow")
        if la.get("stop_reason"):
            head.append(f"; {la['stop_reason']}", style="yellow")
        if la.get("flapping"):
            head.append(f"\nflapping guard: {la['flapping']}", style="bold red")
        parts.append(head)
        counts = Text("runs: ")
        nz = [(s, n) for s, n in doc["counts"].items() if n]
        for k, (s, n) in enumerate(nz):
            counts.append(f"{n} {s}", style=_STATE_STYLE.get(s, ""))
            if k < len(nz) - 1:
                counts.append(", ")
        counts.append(f"  (of {doc['total']})")
        parts.append(counts)
        t = Table(title_justify="left")
        for col, just in (("run", "left"), ("state", "left"), ("try", "right"), ("instance", "left"), ("MIG uuid", "left"),
                          ("elapsed", "right"), ("peak / instance", "right"), ("note", "left")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        now = time.time()
        for r in doc["runs"]:
            mem = "-"
            if r["peak_mib"] is not None or r["instance_mib"] is not None:
                mem = f"{'-' if r['peak_mib'] is None else r['peak_mib']} / {r['instance_mib'] or '-'} MiB"
            note = r["last_error"] or ""
            if r["state"] == "queued" and r["retry_at"]:
                note = f"retry in {_fmt_s(max(0.0, r['retry_at'] - now))}; " + note
            t.add_row(
                r["id"], Text(r["state"], style=_STATE_STYLE.get(r["state"], "")), str(r["attempt"] or "-"),
                r["instance"] or "-", r["mig_uuid"] or "-", _fmt_s(r["elapsed_s"]), mem, note[:120],
            )
        parts.append(t)
    if host is not None:
        parts.append(host_view(host))
    elif doc is None:
        parts.append(Text("no launch state found and no GPU driver reachable"))
    return Group(*parts)


def status_cmd(
    plan_file: Annotated[Optional[Path], typer.Argument(help="The plan file (default: the launch state under ./runs/).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document with `runs` and `host`.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
) -> None:
    from migbench.backend import read_host_if_available
    from migbench.launch.status import find_state_dir, host_doc, status_doc
    from migbench.launch.store import db_path

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
    con = _console()
    if not watch:
        con.print(_status_view(*gather()))
        return
    from rich.live import Live

    try:
        with Live(_status_view(*gather()), console=con, refresh_per_second=1, screen=False) as live:
            while True:
                time.sleep(2.0)
                live.update(_status_view(*gather()))
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
    from migbench.launch.status import request_stop, wait_stopped

    sd = _state_dir_or_fail(plan_file, state_dir)
    pid = request_stop(sd, now=now)
    how = "kill its runs now" if now else "stop: SIGTERM to its runs, SIGKILL after the stop grace"
    _console().print(f"asked the launcher (PID {pid}) to {how}; its runs will be marked interrupted")
    if wait:
        if not wait_stopped(sd, pid, 3600.0):
            raise MigbenchError(f"the launcher (PID {pid}) is still running")
        _console().print("the launcher has exited")


# ---------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add `launch`, `run`, `status`, `logs` and `stop` to the main app."""
    app.command("launch", help="Start every run of an applied plan, each pinned to its MIG device; resumes an earlier launch.")(launch_cmd)
    app.command("run", help="Plan, apply and launch a sweep in one go (idempotent: finished runs are kept).")(run_cmd)
    app.command("status", help="Runs of a launch (state, instance, attempt, elapsed, peak memory), the launcher, and the GPUs.")(status_cmd)
    app.command("logs", help="Print a run's stdout (or stderr) of its latest attempt; -f follows it.")(logs_cmd)
    app.command("stop", help="Ask the running launcher to stop its runs (SIGTERM, grace, SIGKILL; --now: SIGKILL).")(stop_cmd)


__all__ = ["register"]
