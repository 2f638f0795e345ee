"""Which driver migbench talks to: the host's NVIDIA driver, or the simulated one.

The one place that reads `MIGBENCH_SIM` (the simulated host's state directory, made with `migbench
sim init`) and the only way into `migbench.backend.sim` for the rest of migbench: readers and
writers for the current host, the live profile tables, the simulated nvidia-smi as a subprocess,
and attaching a launched run's process to its simulated MIG device.

`python -m migbench.backend.select ARGS` (and the `migbench-nvidia-smi` console script) is the
simulated nvidia-smi of the host in `$MIGBENCH_SIM`.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # imported where used: the per-run shim imports this module and must start fast
    from migbench.backend.base import Backend, HostState
    from migbench.backend.nvml import NvmlReader
    from migbench.catalog import GpuModel

SIM_ENV = "MIGBENCH_SIM"
"""The environment variable naming the simulated host's state directory."""

SIM_HINT = "create one with `migbench sim init DIR --gpu A100-SXM4-80GB --count 2` and `export MIGBENCH_SIM=DIR`"

SIM_DIR_NAME = ".migbench-sim"
"""The simulated host `migbench run` creates next to a sweep (and its plan) when no GPU is present."""


def sim_dir() -> Path | None:
    """The simulated host's state directory, if `MIGBENCH_SIM` is set."""
    v = os.environ.get(SIM_ENV)
    return Path(v).resolve() if v else None


def use_simulated_host(path: str | os.PathLike[str] | None) -> None:
    """Point this process, and every process it starts (shims, runs, nvidia-smi), at the simulated
    host in `path` (absolute, so children started elsewhere find it); None points back at the driver."""
    if path is None:
        os.environ.pop(SIM_ENV, None)
    else:
        os.environ[SIM_ENV] = str(Path(path).resolve())
    live_models.cache_clear()


def simulated_host_near(*dirs: str | os.PathLike[str] | None) -> Path | None:
    """The first `<dir>/.migbench-sim` of `dirs` that holds a simulated host (what `run` creates)."""
    for d in dirs:
        if d is None:
            continue
        cand = Path(d).resolve() / SIM_DIR_NAME
        if is_simulated_host(cand):
            return cand
    return None


def adopt_simulated_host_near(*dirs: str | os.PathLike[str] | None) -> str | None:
    """Where `MIGBENCH_SIM` is unset and no NVIDIA driver answers, use the simulated host `migbench
    run` left next to the plan (`<dir>/.migbench-sim`, the first of `dirs` that has one), so that
    `check`, `status`, `apply` and `launch` see what `run` did. Returns what it did, for the user
    (None when it did nothing: a simulated host is set, a driver is present, or none is near)."""
    if sim_dir() is not None:
        return None
    found = simulated_host_near(*dirs)
    if found is None or read_host_if_available() is not None:
        return None
    require_own_simulated_host(found)
    use_simulated_host(found)
    return (
        f"no NVIDIA driver and {SIM_ENV} is unset: using the simulated host next to the plan, {found} "
        f"(export {SIM_ENV}={shlex.quote(str(found))} to choose it yourself)"
    )


def require_own_simulated_host(path: str | os.PathLike[str]) -> None:
    """Refuse the simulated host migbench found (or would create) by its name, `<dir>/.migbench-sim`,
    when another user could change it (`fsutil.untrusted_reason`, for the directory and its
    host.json): in a shared directory she could make one that decides what migbench takes for the
    GPUs, and that holds the host lock and launch register."""
    from migbench.errors import MigbenchError
    from migbench.fsutil import untrusted_reason

    p = Path(path)
    why = untrusted_reason(p) or untrusted_reason(p / "host.json")
    if why is not None:
        raise MigbenchError(
            f"refusing the simulated host {p}: {why}, so another user could decide what migbench takes for this host's GPUs",
            hint=f"remove it if you did not make it (`rm -r {shlex.quote(str(p))}`), or make one of your own "
            f"(`migbench sim init DIR --gpu MODEL --count N`) and `export {SIM_ENV}=DIR`",
        )


def _install_sim(path: Path) -> None:
    from migbench.backend.sim import fake_nvml
    from migbench.errors import MigbenchError

    if not (path / "host.json").is_file():
        raise MigbenchError(f"{SIM_ENV}={path} is not a simulated host", hint=SIM_HINT.replace("DIR", str(path)))
    fake_nvml.install(str(path))


def reader() -> NvmlReader:
    """An NVML reader for the current host (the simulated driver under `MIGBENCH_SIM`)."""
    from migbench.backend.nvml import NvmlReader

    sim = sim_dir()
    if sim is not None:
        _install_sim(sim)
        return NvmlReader(simulated=True)
    return NvmlReader()


def read_host() -> HostState:
    r = reader()
    try:
        return r.read()
    finally:
        r.close()


def present_devices(uuids: Sequence[str]) -> set[str]:
    """Which of the device uuids (MIG or GPU) the host has now: a handle lookup by uuid each
    (`NvmlReader.device_usage`, as the memory sampler reads), not a read of every GPU."""
    r = reader()
    try:
        return set(r.device_usage(list(uuids)))
    finally:
        r.close()


def device_processes(uuids: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The compute processes (PIDs) NVML lists on each of the devices (MIG or GPU uuids) that
    exist; a device that is gone is left out."""
    r = reader()
    try:
        return {u: tuple(pid for pid, _ in use.processes) for u, use in r.device_usage(list(uuids)).items()}
    finally:
        r.close()


def read_host_if_available() -> HostState | None:
    """The host's state, or None when there is no NVIDIA driver (and no simulated host)."""
    from migbench.errors import HardwareError

    if sim_dir() is not None:
        return read_host()
    try:
        return read_host()
    except (HardwareError, OSError):
        return None


@cache
def live_models() -> dict[str, GpuModel]:
    """The profile tables NVML reports per model (real or simulated); {} without a driver. Whenever
    they are reachable they replace the built-in catalogue's, so a driver's real memory wins."""
    host = read_host_if_available()
    if host is None:
        return {}
    return {g.model.key: g.model for g in host.gpus if g.model is not None}


def host_models() -> list[tuple[int, GpuModel]]:
    """(index, live model) of every MIG-capable GPU the host has; [] without a driver."""
    host = read_host_if_available()
    if host is None:
        return []
    return [(g.index, g.model) for g in host.gpus if g.model is not None]


def simulated_privileges(state: Path) -> Callable[[], None]:
    """The simulated host's answer to "may this caller change MIG configuration?" (raises if not)."""

    def check() -> None:
        from migbench.backend.sim.host import load_host
        from migbench.errors import MigbenchError

        if not load_host(state).privileged:
            raise MigbenchError(
                "changing MIG configuration needs root privileges (the simulated host runs unprivileged)",
                hint="run with sudo on a real host; on the simulator: migbench sim set --privileged",
            )

    return check


def simulated_host_facts() -> dict[str, Any] | None:
    """What the simulated host in `MIGBENCH_SIM` knows that NVML does not show (None on a real
    host): its directory, whether the caller is privileged, VM passthrough, and the non-CUDA
    clients holding each GPU (`migbench doctor` reports them as a real host's device holders)."""
    sim = sim_dir()
    if sim is None:
        return None
    from migbench.backend.sim.host import load_host

    st = load_host(sim)
    return {
        "dir": str(sim),
        "privileged": st.privileged,
        "vm": st.vm,
        "clients": {g.index: list(g.clients) for g in st.gpus},
    }


def sim_smi_command() -> list[str]:
    """How to run the simulated nvidia-smi as a real subprocess: this interpreter, importing migbench
    from where this process did, never from the working directory (`python -m` puts it first on the
    path, so a `migbench/` another user left in a shared directory such as /tmp ran as the caller)."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    code = f"import sys; sys.path = [{root!r}, *(p for p in sys.path if p != '')]; from migbench.backend.select import main; main()"
    return [sys.executable, "-c", code]


def open_backend(*, dry_run: bool = False) -> Backend:
    """A Backend (reader + writer + lock path) for the current host, real or simulated."""
    from migbench.backend.base import Backend
    from migbench.backend.smi_writer import SmiWriter

    sim = sim_dir()
    if sim is not None:
        r = reader()
        w = SmiWriter(dry_run=dry_run, smi_cmd=sim_smi_command(), env={SIM_ENV: str(sim)}, privileges=simulated_privileges(sim))
        return Backend(r, w, True, f"simulated host {sim}", str(host_lock_path()))
    r = reader()
    w = SmiWriter(dry_run=dry_run)
    return Backend(r, w, False, "this host's NVIDIA driver", str(host_lock_path()))


def host_lock_path() -> Path:
    """The lock `apply` and the launchers share on this host: in the simulated host's directory, or
    in `/run/migbench/` (created by root's apply, not writable by others: a lock in a world-writable
    directory such as /run/lock can be planted)."""
    sim = sim_dir()
    if sim is not None:
        return sim / "apply.lock"
    if Path("/run").is_dir():
        return Path("/run/migbench/host.lock")
    import tempfile

    return Path(tempfile.gettempdir()) / "migbench-host.lock"


def instance_compute_share(mig_uuid: str) -> float | None:
    """The compute share of the MIG device `mig_uuid` as NVML reports it (real or simulated): its GPU
    instance's SMs over the full-GPU profile's, from the live profile table; None when the host has
    no such device or the table lacks SM counts. What a run learns of its instance's speed."""
    from migbench.duration import instance_capacity

    host = read_host_if_available()
    for g in host.gpus if host is not None else ():
        for gi in g.instances:
            if g.model is not None and any(d.uuid == mig_uuid for d in g.devices_of(gi.id)):
                return instance_capacity(g.model, g.model.profile(gi.profile))
    return None


LAUNCHES_ENV = "MIGBENCH_LAUNCHES_DIR"
"""Overrides where the host's register of live launches is kept (`launches_dir`)."""


def launches_dir() -> Path:
    """The host's register of live launches (`migbench.apply.bookings`): beside the host lock (in the
    simulated host's directory, or `/run/migbench/launches`, made by root, not writable by others),
    or `$MIGBENCH_LAUNCHES_DIR`."""
    env = os.environ.get(LAUNCHES_ENV)
    if env:
        return Path(env).resolve()
    lock = host_lock_path()
    if lock.parent.name == "migbench" or sim_dir() is not None:
        return lock.parent / "launches"
    return lock.parent / f"migbench-launches-{os.geteuid()}"


def attach_run(mig_uuid: str, pid: int, name: str) -> str | None:
    """Under the simulated driver, put a launched run's process on its MIG device with 0 MiB (so it
    shows in NVML process lists and blocks the instance's destruction, as a CUDA process does on a
    real GPU). A no-op on a real host. Returns an error text, or None."""
    sim = sim_dir()
    if sim is None or not mig_uuid:
        return None
    try:
        from migbench.backend.sim.host import SimHost

        SimHost(sim).attach(mig_uuid, pid, 0, name=name)
    except Exception as exc:  # noqa: BLE001 - the run itself will meet the same problem; report and go on
        return f"simulated attach of PID {pid} to {mig_uuid} failed: {exc}"
    return None


def init_simulated_host(path: str | os.PathLike[str], model: str, count: int, driver: str | None = None, *, mig: bool = False) -> Path:
    """Create a simulated host of `count` GPUs of `model`, MIG off unless `mig` (as `migbench sim init`)."""
    from migbench.backend.sim.host import init_host

    return init_host(path, model, count, driver=driver, mig=mig).dir


def is_simulated_host(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "host.json").is_file()


def simulated_nvidia_smi(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The simulated nvidia-smi of the host in `$MIGBENCH_SIM` (the `migbench-nvidia-smi` script)."""
    from migbench.backend.sim import smi_cli

    args = list(sys.argv[1:] if argv is None else argv)
    return smi_cli.main(args, stdout=stdout, stderr=stderr, state_dir=os.environ.get(SIM_ENV))


def main() -> None:  # the console script
    sys.exit(simulated_nvidia_smi())


if __name__ == "__main__":
    main()
