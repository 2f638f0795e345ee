"""`migbench export slurm|k8s|mig-parted` and `migbench exec`: a plan handed to a cluster's engine,
and one engine task run on the device the engine gave it. Thin: parse -> `migbench.export` -> print."""

from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migbench.cli.common import STATE_DIR_HELP, console, not_an_input
from migbench.cli.render import fit_table
from migbench.errors import MigbenchError, UsageError

if TYPE_CHECKING:
    from migbench.export.slurmctl import SlurmStatusDoc
    from migbench.state import StateDir

export_app = typer.Typer(help="Hand a plan to a cluster's engine: Slurm, Kubernetes (GPU Operator), mig-parted.", no_args_is_help=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@export_app.command("slurm", help="Slurm: node lines and gres.conf, apply-<node>.sh, submit.sh (job arrays per instance type).")
def slurm_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file (its fleet names the nodes).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Directory to write (default: <plan dir>/slurm-<sweep>/).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Compare with the cluster (scontrol show node), use its GRES types; fail on a missing one.")] = False,
    type_map: Annotated[Optional[list[str]], typer.Option("--type-map", help="PROFILE=TYPE or MODEL:PROFILE=TYPE: the site's GRES type for a profile.")] = None,
    type_map_file: Annotated[Optional[Path], typer.Option("--type-map-file", help="A YAML mapping PROFILE: TYPE.")] = None,
    sbatch_arg: Annotated[Optional[list[str]], typer.Option("--sbatch-arg", help="An sbatch option for every array (repeatable).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    max_array_size: Annotated[
        Optional[int],
        typer.Option(
            "--max-array-size", min=1, help="The cluster's MaxArraySize (default: read with --check, else Slurm's default 1001); longer arrays go in parts."
        ),
    ] = None,
) -> None:
    from migbench.export import slurm, slurmctl
    from migbench.export.slurm_types import parse_type_map
    from migbench.plan import Plan
    from migbench.state import StateDir

    plan = Plan.load(plan_file)
    sd = StateDir.of(plan, state_dir)
    tmap = parse_type_map(type_map or [], type_map_file)
    chosen = None
    notes: list[str] = []
    if check:
        slurmctl.require_nodes(plan)
        chosen, notes = slurmctl.check(plan, slurmctl.cluster_nodes(), tmap)
    if max_array_size is not None:
        size, size_from = max_array_size, "--max-array-size"
    elif check:
        size, size_from = slurmctl.max_array_size(), "the cluster's, from scontrol show config"
    else:
        size, size_from = slurm.DEFAULT_MAX_ARRAY_SIZE, "Slurm's default; --check reads the cluster's, or pass --max-array-size"
    out = output or Path(plan_file).resolve().parent / f"slurm-{plan.name}"
    exp = slurm.write(
        plan,
        out,
        sha256=_sha(plan_file),
        type_map=tmap,
        chosen=chosen,
        sbatch_args=sbatch_arg or [],
        state_dir=sd,
        max_array_size=size,
        max_array_from=size_from,
    )
    con = console()
    t = Table(title=f"{plan.name}: {sum(len(tk.runs) for a in exp.arrays for tk in a.tasks)} runs as Slurm job arrays", title_justify="left")
    for col in ("array", "profile", "--gres type", "tasks", "runs", "at once", "nodes"):
        t.add_column(col, no_wrap=col in ("array", "profile", "--gres type"))  # ids are never cut (fit_table)
    for a in exp.arrays:
        t.add_row(
            a.name,
            a.profile,
            exp.types[a.name],
            str(len(a.tasks)),
            str(sum(len(tk.runs) for tk in a.tasks)),
            str(a.count),
            ", ".join(f"{n}:{c}" for n, c in a.per_node.items()) or "-",
        )
    fit_table(t, con.width)
    con.print(t)
    if check:
        con.print(Text("checked against the cluster: every node has the GRES types and counts the plan needs", style="green"))
    for n in notes + exp.notes:
        con.print(Text(f"note: {n}", style="yellow"))
    con.print(f"written to {out}: " + ", ".join(str(p.relative_to(out)) for p in exp.files))
    nodes = plan.nodes()
    if nodes:
        con.print(f"admin: on each node run apply-<node>.sh before slurmd starts; give it the Gres= line of nodes/<node>.conf; gres.conf: {out / 'gres.conf'}")
    con.print(f"MaxArraySize {size} ({size_from})")
    con.print(f"user:  {shlex.quote(str(out / 'submit.sh'))} [sbatch options]; then migbench status {shlex.quote(str(plan_file))}")


@export_app.command("k8s", help="Kubernetes with the GPU Operator: mig-parted ConfigMap, node labels, one Indexed Job per instance type.")
def k8s_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file (its fleet names the nodes).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Directory to write (default: <plan dir>/k8s-<sweep>/).")] = None,
    image: Annotated[str, typer.Option("--image", help="The container image of the runs, with migbench installed.")] = "migbench:latest",
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of the Jobs.")] = "default",
    operator_namespace: Annotated[str, typer.Option("--operator-namespace", help="The GPU Operator's namespace (mig-parted ConfigMap).")] = "gpu-operator",
    state_pvc: Annotated[Optional[str], typer.Option("--state-pvc", help="An existing PersistentVolumeClaim for the run directories.")] = None,
    state: Annotated[
        str, typer.Option("--state", help="pvc: a claim written into the export (default); emptydir: none, the run directories are lost with each pod.")
    ] = "pvc",
    state_size: Annotated[str, typer.Option("--state-size", help="The written claim's size (a Kubernetes quantity).")] = "10Gi",
) -> None:
    from migbench.export import k8s
    from migbench.plan import Plan

    if state not in ("pvc", "emptydir"):
        raise UsageError(f"--state {state!r}: expected pvc or emptydir", hint="pvc (the default) keeps the run directories; emptydir loses them with each pod")
    plan = Plan.load(plan_file)
    out = output or Path(plan_file).resolve().parent / f"k8s-{plan.name}"
    exp = k8s.write(
        plan,
        out,
        plan_text=Path(plan_file).read_text(),
        sha256=_sha(plan_file),
        image=image,
        namespace=namespace,
        operator_namespace=operator_namespace,
        state_pvc=state_pvc,
        state=state,
        state_size=state_size,
    )
    con = console()
    t = Table(title=f"{plan.name}: one Indexed Job per instance type", title_justify="left")
    for col in ("job", "resource", "completions", "parallelism", "nodes"):
        t.add_column(col, no_wrap=col in ("job", "resource"))
    for j in exp.jobs:
        t.add_row(j.name, j.resource, str(j.completions), str(j.parallelism), ", ".join(j.nodes))
    fit_table(t, con.width)
    con.print(t)
    for w in exp.warnings:
        con.print(Text(f"warning: {w}", style="yellow"))
    for n in exp.notes:
        con.print(Text(f"note: {n}", style="yellow"))
    con.print(f"written to {out}: " + ", ".join(str(p.relative_to(out)) for p in exp.files))
    con.print("admin: kubectl apply -f mig-parted-config.yaml, point the GPU Operator's migManager.config.name at it, run label-nodes.sh")
    con.print(f"user:  {exp.apply_command}")


@export_app.command("mig-parted", help="The mig-parted config alone (nvidia-mig-parted apply -f FILE -c NAME), one config per node.")
def migparted_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="File to write (default: print it).")] = None,
) -> None:
    from migbench.export import migparted
    from migbench.plan import Plan

    plan = Plan.load(plan_file)
    text, warnings = migparted.config_text(plan), migparted.placement_warnings(plan)
    if output is None:
        typer.echo(text, nl=False)
    else:
        from migbench.fsutil import write_text_atomic

        not_an_input(output, plan, "the mig-parted config", f"{plan.name}.mig-parted.yaml")
        write_text_atomic(output, text, "mig-parted config")
        console().print(f"written to {output}; apply on a node with: nvidia-mig-parted apply -f {output} -c <config name>")
    for w in warnings:
        typer.echo(f"# warning: {w}", err=True)


def exec_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The exported plan file.")],
    array: Annotated[str, typer.Option("--array", help="The array (instance type) the task belongs to.")],
    index: Annotated[Optional[int], typer.Option("--index", help="The task (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX).", min=0)] = None,
    index_offset: Annotated[
        int, typer.Option("--index-offset", min=0, help="Added to the engine's index: the first task of this part of an array cut for MaxArraySize.")
    ] = 0,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP)] = None,
    node: Annotated[Optional[str], typer.Option("--node", help="This node's name in the plan (default: SLURMD_NODENAME, NODE_NAME or the host name).")] = None,
    device_map: Annotated[Optional[Path], typer.Option("--device-map", help="A JSON list of the node's MIG uuids in GRES index order.")] = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="Refuse to run unless the plan file has this sha256 (the exported one).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the task's runs, device, environment and argv; start and write nothing.")] = False,
    workdir: Annotated[Optional[Path], typer.Option("--workdir", help="Run in this directory instead of the plan's (a container's).")] = None,
) -> None:
    from migbench.export import execute
    from migbench.fsutil import require_trusted
    from migbench.plan import read_identity
    from migbench.state import StateDir, configure_modes

    sd = StateDir.of_file(plan_file, state_dir)  # from the file's head: the parsed copy is found there
    configure_modes(read_identity(plan_file)[1])  # a team's `state_mode: 0660` lets the group write the directory
    require_trusted(sd, "state directory")  # before its parsed plan copy and bindings (the device) are read
    plan = execute.load_task_plan(plan_file, sha256, sd)
    prep = execute.prepare(
        plan,
        array,
        index=index,
        index_offset=index_offset,
        node=node,
        state_dir=sd,
        device_map=device_map,
        sha256=sha256,
        dry_run=dry_run,
        workdir=workdir,
    )
    if dry_run:
        typer.echo(
            f"# {prep.array.name} task {prep.task.index} on {prep.node}: {len(prep.specs)} run(s) on {prep.device.uuid} "
            f"({prep.device.instance}, from {prep.device.source})"
        )
        for s in prep.specs:
            typer.echo("")
            typer.echo(f"# {s.run_id} attempt {s.attempt}")
            typer.echo(f"cd {shlex.quote(s.workdir)}")
            for k, v in s.env.items():
                typer.echo(f"export {k}={shlex.quote(v)}")
            typer.echo(shlex.join(s.argv))
        return
    print(
        f"migbench exec: {prep.array.name} task {prep.task.index} on {prep.node}: " + ", ".join(s.run_id for s in prep.specs) + f" on {prep.device.uuid}",
        file=sys.stderr,
        flush=True,
    )
    raise typer.Exit(execute.run(prep))


# -- status and stop of an exported sweep (called by `migbench status` / `migbench stop`) ------


def slurm_status_view(doc: SlurmStatusDoc, width: int = 80) -> RenderableType:
    head = Text()
    head.append(doc["sweep"], style="bold")
    head.append(
        f"  state {doc['state_dir']}\nSlurm: " + ", ".join(f"{j['array']} job {j['job_id']} ({j['tasks']} tasks on gpu:{j['gres_type']})" for j in doc["jobs"])
    )
    counts = Text("runs: " + ", ".join(f"{n} {s}" for s, n in doc["counts"].items()) + f"  (of {doc['total']})")
    for note in doc.get("notes", []):
        counts.append(f"\nnote: {note}", style="yellow")
    t = Table(title_justify="left")
    for col in ("run", "state", "try", "job", "node", "device", "elapsed", "exit", "note"):
        t.add_column(col, no_wrap=col in ("run", "job", "node", "device"))
    for r in doc["runs"]:
        t.add_row(
            r["id"],
            r["state"],
            str(r["attempt"] or "-"),
            r["job"] or "-",
            r["node"] or "-",
            r["device"] or "-",
            "-" if r["elapsed_s"] is None else f"{r['elapsed_s']:.1f}s",
            "-" if r["exit_code"] is None else str(r["exit_code"]),
            r["note"],
        )
    fit_table(t, width)
    return Group(head, counts, t)


def engine_logs(sd: Path, run_id: str, *, attempt: int | None, stderr: bool, follow: bool) -> None:
    """`migbench logs RUN PLAN` of a run an engine started (`exec`'s attempt directories, no
    launch.db); -f follows the attempt until its exit.json appears."""
    import time

    from migbench.export.slurmctl import run_log

    path, _, ended = run_log(sd, run_id, attempt=attempt, stderr=stderr)
    out = sys.stdout.buffer
    pos = 0
    try:
        while True:
            got = read_log(path, pos, out)
            pos += got
            if not follow or (ended and not got):
                return
            ended = (path.parent / "exit.json").exists()
            if not got:
                time.sleep(0.25)
    except KeyboardInterrupt:
        return


def read_log(path: Path, pos: int, out: Any) -> int:
    """`migbench logs`: a run's log past byte `pos` copied to `out` (`fsutil.copy_tail`); 0 while it
    does not exist. A named pipe, device or directory planted there is an error, never waited on
    nor read without end."""
    from migbench.cli.common import reader_gone
    from migbench.errors import from_os_error
    from migbench.fsutil import NOT_REGULAR_HINT, NotRegularFile, copy_tail

    try:
        return copy_tail(path, pos, out)
    except FileNotFoundError:
        return 0
    except BrokenPipeError:  # the reader went away (`migbench logs RUN | head`): stop quietly, as `cat` does
        reader_gone()
    except NotRegularFile as exc:
        raise MigbenchError(f"cannot read the run's log {path}: {exc.strerror}", hint=NOT_REGULAR_HINT) from None
    except OSError as exc:
        raise from_os_error(exc, "read the run's log") from None


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export", help="Hand a plan to Slurm, Kubernetes (GPU Operator) or mig-parted.")
    app.command("exec", help="Run one exported task (a Slurm array task, an Indexed Job pod) on the MIG device its engine gave it.")(exec_cmd)


def status_of_export(plan_file: Path, sd: StateDir, as_json: bool) -> bool:
    """`migbench status PLAN` for a sweep submitted with submit.sh (and never launched locally), its
    state directory `sd`. Returns False when there is no such submission."""
    import json

    from migbench.export import slurmctl
    from migbench.plan import Plan

    if not slurmctl.has_submission(sd.path) or sd.db.exists():
        return False
    plan = Plan.load(plan_file)  # a large plan is read whole only when submitted
    doc = slurmctl.engine_status_doc(plan, sd.path)
    if as_json:
        typer.echo(json.dumps({"runs": doc, "host": None, "notes": []}, indent=2))
    else:
        con = console()
        con.print(slurm_status_view(doc, con.width))
    return True


def stop_export(sd: StateDir) -> bool:
    """`migbench stop PLAN` for a submitted sweep (state directory `sd`): scancel its jobs. False
    when there is none."""
    from migbench.export import slurmctl

    if not slurmctl.has_submission(sd.path) or sd.db.exists():
        return False
    ids = slurmctl.cancel(sd.path)
    console().print(f"scancel {' '.join(ids)}: Slurm signals the tasks (SIGTERM, SIGKILL after KillWait); `migbench status` shows them CANCELLED")
    return True
