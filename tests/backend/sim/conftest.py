"""Fixtures of the simulator's tests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from migbench.backend.select import simulated_nvidia_smi


@pytest.fixture
def smi(monkeypatch):  # type: ignore[no-untyped-def]
    """smi(state_dir, *args) -> (exit status, stdout lines) of the simulated nvidia-smi."""

    def run(state: Path, *args: str) -> tuple[int, list[str]]:
        monkeypatch.setenv("MIGBENCH_SIM", str(state))
        buf = io.StringIO()
        rc = simulated_nvidia_smi(list(args), stdout=buf)
        return rc, buf.getvalue().splitlines()

    return run
