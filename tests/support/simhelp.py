"""Helpers for tests that drive migbench against a simulated host."""

from __future__ import annotations

import io
from pathlib import Path

from migbench.backend.base import Backend
from migbench.backend.nvml import NvmlReader
from migbench.backend.select import sim_smi_command, simulated_privileges
from migbench.backend.sim import fake_nvml
from migbench.backend.sim.smi_cli import main as smi_main
from migbench.backend.smi_writer import SmiWriter


def inprocess_runner(state: Path):  # type: ignore[no-untyped-def]
    """Run the simulated nvidia-smi of `state` in this process (argv[0] is 'nvidia-smi')."""

    def run(argv: list[str]) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = smi_main(argv[1:], stdout=out, stderr=err, state_dir=state)
        return rc, (out.getvalue() + err.getvalue()).strip()

    return run


def sim_backend(state: Path, *, subprocess: bool = False, dry_run: bool = False) -> Backend:
    """A Backend over the simulated host in `state` (MIGBENCH_SIM must name it for the smi side)."""
    fake_nvml.install(str(state))
    reader = NvmlReader(simulated=True)
    writer = SmiWriter(
        dry_run=dry_run,
        smi_cmd=sim_smi_command(),
        env={"MIGBENCH_SIM": str(state)},
        privileges=simulated_privileges(state),
        runner=None if subprocess else inprocess_runner(state),
    )
    return Backend(reader, writer, True, f"simulated host {state}", str(state / "apply.lock"))
