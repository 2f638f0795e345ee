"""Hardware behind one protocol: NVML for reading, nvidia-smi for changing, and the simulated driver.

`open_backend()` picks the simulated host when `MIGBENCH_SIM` names a state directory, the real
driver otherwise. Only this package imports pynvml or subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

from migbench.backend.base import HostState
from migbench.errors import HardwareError, MigbenchError


def sim_dir() -> Path | None:
    """The simulated host's state directory, if MIGBENCH_SIM is set."""
    v = os.environ.get("MIGBENCH_SIM")
    return Path(v).resolve() if v else None


def _install_sim(path: Path) -> None:
    from migbench.backend.sim import fake_nvml

    if not (path / "host.json").exists():
        raise MigbenchError(
            f"MIGBENCH_SIM={path} is not a simulated host",
            hint=f"create one with `migbench sim init {path} --gpu A100-SXM4-80GB --count 4`",
        )
    fake_nvml.install(str(path))


def reader():  # type: ignore[no-untyped-def]
    """An NVML reader for the current host (simulated under MIGBENCH_SIM)."""
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


def read_host_if_available() -> HostState | None:
    """The host's state, or None when there is no NVIDIA driver (and no MIGBENCH_SIM)."""
    if sim_dir() is not None:
        return read_host()
    try:
        return read_host()
    except HardwareError:
        return None
    except OSError:
        return None


def open_backend(*, dry_run: bool = False):  # type: ignore[no-untyped-def]
    """A Backend (reader + writer + lock path) for the current host, real or simulated."""
    import tempfile

    from migbench.backend.base import Backend
    from migbench.backend.smi_writer import SmiWriter, sim_smi_command

    sim = sim_dir()
    if sim is not None:
        r = reader()
        w = SmiWriter(dry_run=dry_run, smi_cmd=sim_smi_command(), env={"MIGBENCH_SIM": str(sim)}, sim_dir=sim)
        return Backend(r, w, True, f"simulated host {sim}", str(sim / "apply.lock"))
    r = reader()
    w = SmiWriter(dry_run=dry_run)
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() and os.access("/run/lock", os.W_OK) else Path(tempfile.gettempdir())
    return Backend(r, w, False, "this host's NVIDIA driver", str(lock_dir / "migbench-apply.lock"))
