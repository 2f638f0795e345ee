"""The `StateDir` a command's edge makes, for tests that call an entry point (apply, launch, report,
export) directly: the one place the tests build one from a plan or a path."""

from __future__ import annotations

import os

from migbench.plan import Plan
from migbench.state import StateDir


def sd_of(plan: Plan) -> StateDir:
    """The plan's own state directory (no `--state-dir`)."""
    return StateDir.of(plan)


def sd_at(path: str | os.PathLike[str]) -> StateDir:
    """The state directory `--state-dir PATH` names."""
    return StateDir.at(path)
