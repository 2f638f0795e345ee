"""`migbench sim ...`: create and drive a simulated MIG host (the simulated NVIDIA driver).

`init` and `show` take the state directory as an argument; the other commands read it from `--state`
or `$MIGBENCH_SIM`. The simulator's own commands are the one part of the CLI that reaches into
`migbench.backend.sim` (lazily, so other commands start without it).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Optional

import typer

from migbench.errors import MigbenchError, UsageError
from migbench.units import MEMORY_HINT, parse_memory_mib

sim_app = typer.Typer(
    help="A simulated NVIDIA driver: try migbench without a GPU (nvidia-smi text and NVML, from real captures).",
    no_args_is_help=True,
)

STATE_OPTION = typer.Option(None, "--state", help="Simulated host directory (default: $MIGBENCH_SIM).")


if TYPE_CHECKING:
    from migbench.backend.sim.host import SimHost


def _host(state: Optional[str]) -> SimHost:
    from migbench.backend.select import sim_dir
    from migbench.backend.sim.host import SimHost

    d = state or sim_dir()
    if not d:
        raise MigbenchError(
            "no simulated host given",
            hint="pass --state DIR or set MIGBENCH_SIM=<state dir> (created with `migbench sim init`)",
        )
    h = SimHost(d)
    if not h.exists():
        raise MigbenchError(
            f"no simulated host in {h.dir}",
            hint=f"create one with `migbench sim init {h.dir} --gpu A100-SXM4-40GB --count 1`",
        )
    return h


@sim_app.command("init")
def init(
    state: str = typer.Argument(..., help="Directory for the simulated host (created; an existing host needs --force)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Catalogue model, e.g. A100-SXM4-40GB, H100-SXM5-80GB, A30."),
    from_capture: Optional[str] = typer.Option(
        None,
        "--from",
        help="Build the host from a real host's captures (`migbench doctor --capture DIR` writes them): "
        "its GPUs, driver, profile table, MIG mode, instances and compute instances.",
    ),
    count: int = typer.Option(1, "--count", help="Number of identical GPUs."),
    driver: Optional[str] = typer.Option(None, "--driver", help="Driver version (default: newest in the catalogue)."),
    mig: str = typer.Option("off", "--mig", help="Initial MIG mode: on or off."),
    vm: bool = typer.Option(False, "--vm", help="VM passthrough: no GPU reset (Ampere mode changes stay pending)."),
    unprivileged: bool = typer.Option(False, "--unprivileged", help="The caller is not root."),
    seed: int = typer.Option(0, "--seed", help="Seed for the GPU UUIDs."),
    client: list[str] = typer.Option([], "--client", help="A non-CUDA client holding every GPU (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace a simulated host already in STATE (its instances and processes are lost)."),
) -> None:
    """Create a simulated host of COUNT identical GPUs, or (--from) the host a capture describes."""
    from migbench.backend.sim.host import init_host
    from migbench.backend.sim.state import STATE_FILE

    if not force and os.path.isfile(os.path.join(state, STATE_FILE)):
        raise MigbenchError(
            f"{state} already holds a simulated host ({STATE_FILE}); `sim init` would wipe its GPUs, instances and processes",
            hint=f"pass --force to replace it, or `migbench sim show` with MIGBENCH_SIM={state} to look at it",
        )

    if from_capture is not None:
        _init_from(state, from_capture, gpu=gpu, driver=driver, vm=vm, unprivileged=unprivileged, seed=seed)
        return
    if gpu is None:
        raise UsageError("sim init needs --gpu MODEL (or --from CAPTURE_DIR)", hint="e.g. --gpu A100-SXM4-80GB --count 2")
    if mig not in ("on", "off"):
        raise UsageError(f"--mig must be on or off, not {mig!r}")
    h = init_host(state, gpu, count, driver, mig == "on", vm=vm, privileged=not unprivileged, clients=client, seed=seed)
    st = h.read()
    typer.echo(
        f"Simulated host in {h.dir}: {count} x {st.product_name} ({st.model_key}), driver {st.driver}, "
        f"MIG {'on' if mig == 'on' else 'off'}{', VM passthrough' if vm else ''}"
        f"{', unprivileged' if unprivileged else ''}."
    )
    typer.echo(f"Use it with: export MIGBENCH_SIM={os.path.abspath(h.dir)}")
    model = st.model
    marked = [f"{p.name} ({', '.join(p.unverified)})" for p in model.profiles if p.unverified]
    for note in model.unverified:
        typer.echo(f"unverified: {note}")
    if marked:
        typer.echo("unverified profile values: " + "; ".join(marked))


CAPTURED_FROM = "captured-from"
"""In a simulated host made by `sim init --from`: the capture directory's path (`plan --check`'s
hint rebuilds the bench from it)."""


def _init_from(state: str, capture: str, *, gpu: Optional[str], driver: Optional[str], vm: bool, unprivileged: bool, seed: int) -> None:
    from migbench.backend.sim.captured import host_from_capture

    if gpu is not None:
        raise UsageError("--from takes the GPU model from the capture; drop --gpu")
    h, notes = host_from_capture(capture, state, driver=driver, privileged=not unprivileged, vm=vm, seed=seed)
    (h.dir / CAPTURED_FROM).write_text(os.path.abspath(capture) + "\n")
    st = h.read()
    gis = sum(len(g.gpu_instances) for g in st.gpus)
    modes = sorted({("on" if g.mig_current else "off") + ("" if g.mig_current == g.mig_pending else " (change pending)") for g in st.gpus})
    typer.echo(
        f"Simulated host in {h.dir} from the capture in {capture}: {len(st.gpus)} x {st.product_name} "
        f"({st.model_key}), driver {st.driver}, MIG {', '.join(modes)}, {gis} GPU instance(s), "
        f"{len(st.all_mig_devices())} MIG device(s){', profile table from the capture' if st.model_spec else ''}."
    )
    for n in notes:
        typer.echo(f"note: {n}")
    typer.echo(f"Use it with: export MIGBENCH_SIM={os.path.abspath(h.dir)}")


def state_summary(st: Any) -> dict:
    """`host.json` plus the derived MIG devices (what `show --json` prints)."""
    d = st.to_json()
    d["product_name"] = st.product_name
    d["mig_devices"] = [
        {"gpu": m.gpu, "index": m.index, "gpu_instance": m.gi_id, "compute_instance": m.ci_id, "uuid": m.uuid, "profile": m.name, "memory_mib": m.memory_mib}
        for m in st.all_mig_devices()
    ]
    return d


@sim_app.command("show")
def show(
    state: Optional[str] = typer.Argument(None, help="Simulated host directory (default: $MIGBENCH_SIM)."),
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Show the simulated host: GPUs, MIG mode, instances, MIG devices, processes, clients, faults."""
    from migbench.backend.sim.host import error_string

    st = _host(state).read()
    if as_json:
        typer.echo(json.dumps(state_summary(st), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    con = Console(markup=False)  # a name is printed as it is, never read as markup
    extra = f"{', VM passthrough' if st.vm else ''}{', unprivileged caller' if not st.privileged else ''}"
    con.print(Text(st.product_name, style="bold") + Text(f" x {len(st.gpus)} ({st.model_key}), driver {st.driver}{extra}"))
    t = Table("GPU", "UUID", "Bus id", "MIG current", "MIG pending", "Clients")
    for col in (t.columns[1], t.columns[2]):
        col.overflow = "fold"
    for g in st.gpus:
        t.add_row(
            str(g.index), g.uuid, g.bus_id, "Enabled" if g.mig_current else "Disabled", "Enabled" if g.mig_pending else "Disabled", ", ".join(g.clients) or "-"
        )
    con.print(t)
    devs = st.all_mig_devices()
    if any(g.gpu_instances for g in st.gpus):
        t = Table("GPU", "GI", "Profile", "Placement", "CI", "MIG dev", "UUID", "Memory")
        t.columns[6].overflow = "fold"
        for g in st.gpus:
            for gi in sorted(g.gpu_instances, key=lambda x: x.id):
                prof = st.gi_profile(gi)
                mine = [d for d in devs if d.gpu == g.index and d.gi_id == gi.id]
                if not mine:
                    t.add_row(str(g.index), str(gi.id), prof.name, f"{gi.start}:{gi.size}", "-", "-", "-", f"{prof.memory_mib} MiB")
                for d in mine:
                    t.add_row(
                        str(g.index),
                        str(gi.id),
                        d.name,
                        f"{gi.start}:{gi.size}",
                        str(d.ci_id),
                        str(d.index),
                        d.uuid,
                        f"{st.used_memory_mib(g.index, gi.id)}/{d.memory_mib} MiB",
                    )
        con.print(t)
    if st.processes:
        t = Table("PID", "Name", "GPU", "GI", "CI", "Memory")
        for p in sorted(st.processes, key=lambda p: (p.gpu, p.pid)):
            t.add_row(str(p.pid), p.name, str(p.gpu), "-" if p.gi is None else str(p.gi), "-" if p.ci is None else str(p.ci), f"{p.used_memory_mib} MiB")
        con.print(t)
    for f in st.faults:
        con.print(f"pending fault: call {f.remaining} of {f.op} fails with {error_string(f.code)} ({f.code})")


@sim_app.command("attach")
def attach(
    uuid: str = typer.Argument(..., help="MIG device UUID (or GPU UUID / index of a non-MIG GPU)."),
    pid: int = typer.Option(..., "--pid", help="A running local process."),
    memory: Optional[str] = typer.Option(None, "--memory", help="GPU memory it uses, e.g. 2GiB."),
    name: str = typer.Option("python", "--name", help="Process name shown by nvidia-smi."),
    state: Optional[str] = STATE_OPTION,
) -> None:
    """Put a running process on a simulated device (it disappears when the process exits)."""
    mib = 0
    if memory is not None:
        try:
            mib = parse_memory_mib(memory)
        except ValueError as exc:
            raise UsageError(f"--memory: {exc}", hint=MEMORY_HINT) from exc
    p = _host(state).attach(uuid, pid, mib, name)
    where = f"GPU {p.gpu}" + (f" GI {p.gi} CI {p.ci}" if p.gi is not None else "")
    typer.echo(f"pid {p.pid} ({p.name}) on {where}, {p.used_memory_mib} MiB")


@sim_app.command("detach")
def detach(
    pid: int = typer.Option(..., "--pid"),
    state: Optional[str] = STATE_OPTION,
) -> None:
    """Remove a process from the simulated devices."""
    n = _host(state).detach(pid)
    if not n:
        raise MigbenchError(f"pid {pid} is not attached to the simulated host")
    typer.echo(f"pid {pid} detached")


@sim_app.command("reboot")
def reboot(state: Optional[str] = STATE_OPTION) -> None:
    """Reboot: instances and processes vanish; Ampere keeps (applies) its MIG mode, Hopper+ comes back with
    MIG disabled."""
    _host(state).reboot()
    typer.echo("rebooted")


@sim_app.command("client")
def client(
    action: str = typer.Argument(..., help="add or remove"),
    name: str = typer.Argument(..., help="e.g. nvidia-persistenced, dcgm, nvsm, nvidia_drm"),
    gpu: list[int] = typer.Option([], "--gpu", help="GPU index (repeatable; default: all)."),
    state: Optional[str] = STATE_OPTION,
) -> None:
    """Add or remove a non-CUDA client holding GPUs (it blocks GPU resets and Ampere mode changes)."""
    h = _host(state)
    gpus = list(gpu) or None
    if action == "add":
        h.add_client(name, gpus)
    elif action == "remove":
        h.remove_client(name, gpus)
    else:
        raise UsageError(f"client action must be add or remove, not {action!r}")
    typer.echo(f"client {name} {'added' if action == 'add' else 'removed'}")


@sim_app.command("fault")
def fault(
    op: str = typer.Option(
        ..., "--op", help="create_gpu_instance, create_compute_instance, destroy_compute_instance, destroy_gpu_instance, set_mig_mode, reset, or * for any"
    ),
    nth: int = typer.Option(1, "--nth", help="Which future call fails (1 = the next)."),
    code: str = typer.Option(..., "--code", help="NVML error, e.g. IN_USE, INSUFFICIENT_RESOURCES or 23."),
    state: Optional[str] = STATE_OPTION,
) -> None:
    """Make a future driver call fail (for testing what runs on top)."""
    _host(state).inject_fault(op, nth, code)
    from migbench.backend.sim.host import error_string, parse_error_code

    typer.echo(f"call {nth} of {op} will fail with {error_string(parse_error_code(code))}")


@sim_app.command("set")
def set_(
    privileged: bool = typer.Option(..., "--privileged/--unprivileged", help="Whether the caller is root."),
    state: Optional[str] = STATE_OPTION,
) -> None:
    """Change host settings."""
    _host(state).set_privileged(privileged)
    typer.echo("caller is " + ("privileged (root)" if privileged else "unprivileged"))


@sim_app.command(
    "nvidia-smi",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def nvidia_smi(ctx: typer.Context, state: Optional[str] = STATE_OPTION) -> None:
    """Run the simulated nvidia-smi with the given arguments (e.g. `migbench sim nvidia-smi mig -lgip`)."""
    from migbench.backend.sim import smi_cli

    h = _host(state)
    rc = smi_cli.main(list(ctx.args), state_dir=h.dir)
    if rc:
        raise typer.Exit(code=rc)


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim", help="The simulated MIG host: init, show, attach, reboot, faults, and its nvidia-smi.")
