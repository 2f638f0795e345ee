"""Another user winning a race against migbench's own `mkdir`."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

OTHER = 12345  # a uid no one on the test machine uses: "eve"


def shared_sticky(tmp_path: Path) -> Path:
    """`shared/`: a directory every user may create files in (sticky, as /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def eve_makes_runs_first(monkeypatch: pytest.MonkeyPatch, module: ModuleType, shared: Path) -> None:
    """`module.make_dirs` (the mkdir migbench does after its checks) finds that another user made
    `shared/runs` just before it: the check passed, her directory is there when migbench creates
    what is below it. Needs root (chown)."""
    real = module.make_dirs

    def racing(path):  # type: ignore[no-untyped-def]
        (shared / "runs").mkdir()  # she wins the race
        os.chown(shared / "runs", OTHER, OTHER)
        return real(path)

    monkeypatch.setattr(module, "make_dirs", racing)
