"""`migbench apply` and `migbench check`: the host against a plan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from migbench.cli.common import adopt_simulated_host, console, is_tty, load_plan, parse_gpus
from migbench.errors import MigbenchError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from migbench.apply.reconcile import ApplyReport
    from migbench.plan import Plan
    from migbench.state import StateDir


def apply_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file written by `migbench plan`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the exact commands; change nothing.")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Only these GPUs of the plan, e.g. 0,2.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before destroying instances or changing MIG mode.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Where bindings are stored (default: <plan dir>/runs/<sweep>/).")] = None,
    node: Annotated[Optional[str], typer.Option("--node", help="Apply one node's share of a plan of several nodes (GPUs numbered as on that node).")] = None,
    finish: Annotated[bool, typer.Option("--finish", help="Finish an apply of this plan that was interrupted (killed) half-way.")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="Restore the GPUs as they were before an interrupted apply.")] = False,
) -> None:
    from migbench.apply import apply_plan
    from migbench.apply.recovery import InterruptedApplyPending
    from migbench.backend.select import open_backend

    if finish and rollback:
        raise UsageError("--finish and --rollback exclude each other", hint="choose one")
    if (finish or rollback) and dry_run:
        raise UsageError("--dry-run shows a plain apply; it does not combine with --finish or --rollback")
    plan, sd = _share(load_plan(plan_file), node, state_dir)
    adopt_simulated_host(plan_file.parent)
    backend = open_backend(dry_run=dry_run)
    con = console()

    def confirm(text: str) -> bool:
        if yes:
            return True
        if not is_tty():
            raise UsageError(
                "apply would destroy instances or change MIG mode:\n" + text,
                hint="review with --dry-run, then re-run with --yes",
            )
        con.print(text)
        try:
            return typer.confirm("Proceed?", default=False)
        except MigbenchError:  # a signal at the prompt (`ApplyInterrupted`): the error on a line of its own
            typer.echo("", err=True)
            raise

    resume = "finish" if finish else "rollback" if rollback else None
    try:
        report = apply_plan(plan, backend, gpus=parse_gpus(gpus), confirm=confirm, state_dir=sd, resume=resume)
    except InterruptedApplyPending as pending:
        if not is_tty() or yes:
            raise
        con.print(Text("Error: ", style="bold red") + Text(pending.message))
        choices = ["rollback", "cancel"] if not pending.found.same_plan(plan) else ["finish", "rollback", "cancel"]
        answer = typer.prompt(f"What now ({' / '.join(choices)})?", default="cancel")
        if answer not in choices or answer == "cancel":
            raise typer.Exit(1) from None
        report = apply_plan(plan, backend, gpus=parse_gpus(gpus), confirm=None, state_dir=sd, resume=answer)
    _print_apply(con, report, backend.description, dry_run)


def _print_apply(con: Console, report: ApplyReport, description: str, dry_run: bool) -> None:
    """What apply did (or, with --dry-run, the commands it would run)."""
    if dry_run:
        con.print(Text(f"# dry run on {description}: these commands would run", style="bold"))
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
                f"GPU {d.gpu}: kept {len(d.keep)}, destroyed {len(d.destroy)}, created {len(d.create)}" + (f", MIG mode {d.mode}" if d.mode != "ok" else "")
            )
    for m in report.messages:
        con.print(m)
    if report.changed and report.diffs:
        con.print(f"{len(report.commands)} command(s) run; every GPU read back as planned")
    if report.bindings_path and report.bindings is not None:
        con.print(f"MIG uuids of {len(report.bindings['runs'])} runs bound in {report.bindings_path}")


def _share(plan: Plan, node: str | None, state_dir: Path | None) -> tuple[Plan, StateDir]:
    """The plan `apply`/`check` work on and its state directory (`--state-dir`, else the plan's):
    with --node, that node's share, its bindings kept in `<state dir>/nodes/<node>/`; a plan of
    several nodes needs --node. (A dry run writes nothing there.)"""
    from migbench.state import StateDir

    if node is None:
        nodes = plan.nodes()
        if len(nodes) > 1:
            raise UsageError(
                f"the plan spans {len(nodes)} nodes ({', '.join(nodes)}): say which one this host is",
                hint=f"on each node run: migbench apply {plan.path or 'PLAN'} --node NODE",
            )
        return plan, StateDir.of(plan, state_dir)
    share = plan.node_share(node)
    return share, StateDir.at(state_dir) if state_dir else StateDir.of(plan).node(node)


def check_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Only these GPUs of the plan.")] = None,
    node: Annotated[Optional[str], typer.Option("--node", help="Check one node's share of a plan of several nodes.")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Where the apply kept its checkpoint (default: <plan dir>/runs/<sweep>/).")] = None,
) -> None:
    from migbench.apply import check_host_matches_models, target_gpus, verify
    from migbench.apply.reconcile import interrupted_apply
    from migbench.apply.recovery import pending_error
    from migbench.backend.select import host_lock_path, read_host
    from migbench.state import require_trusted_state

    plan, sd = _share(load_plan(plan_file), node, state_dir)
    require_trusted_state(sd, plan)  # its checkpoint says whether an apply was interrupted, and what to run
    adopt_simulated_host(plan_file.parent)
    targets = target_gpus(plan, parse_gpus(gpus))
    host = read_host()
    check_host_matches_models(plan, host, targets)
    diffs = verify(plan, host, targets)
    con = console()
    found = interrupted_apply(host_lock_path(), sd)
    if found is not None:
        err = pending_error(found, host, plan)
        con.print(Text(err.message, style="bold red"))
        con.print(f"Hint: {err.hint}")
        raise typer.Exit(1)
    if diffs:
        con.print(Text(f"the host differs from {plan_file}:", style="bold red"))
        for d in diffs:
            con.print("  " + d)
        raise typer.Exit(1)
    con.print(f"the host matches {plan_file} on GPU(s) {', '.join(map(str, targets))}")


def register(app: typer.Typer) -> None:
    app.command("apply", help="Reconcile the GPUs to a plan with nvidia-smi: idempotent, placement-exact, never destroying an instance in use.")(apply_cmd)
    app.command("check", help="Exit 0 when the host matches the plan, 1 with the differences.")(check_cmd)
