"""Helpers shared by the tests: paths, the simulated-host backend (`simhelp`), launch rigs (`launchkit`)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
WRITTEN_BESIDE = (".plan.yaml", ".footprints.yaml")
"""What migbench writes beside a sweep (`run`, `plan`, `profile`): not sweeps."""


def sweep_files(*dirs: str) -> list[Path]:
    """The sweep files the repo ships in `dirs` (e.g. "examples", "sweeps"), without the plans and
    footprints that trying them writes beside them (the README's first command leaves
    examples/toy-sweep.plan.yaml)."""
    return sorted(p for d in dirs for p in (REPO / d).glob("*.yaml") if not p.name.endswith(WRITTEN_BESIDE))


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
