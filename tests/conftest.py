"""Fixtures shared by several test files."""

from __future__ import annotations

import subprocess

import pytest

from migbench.backend.sim import fake_nvml


@pytest.fixture
def sleeper():
    """Spawn real `sleep 60` processes (to attach to simulated devices); killed afterwards."""
    procs: list[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """`rig(sweep_text, **kw)`: a simulated host, a planned and applied sweep, ready to launch."""
    from tests.support.launchkit import make_rig

    made = []

    def make(sweep: str, **kw):  # type: ignore[no-untyped-def]
        r = make_rig(tmp_path, monkeypatch, sweep, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.cleanup()
    fake_nvml.uninstall()
