"""Blackwell and GH200 on the simulated driver (issue 14, item 2): `sim init` works and shows what is inferred,
and the host applies every maximal layout of each new model and reads it back through NVML (RTX PRO 6000 in
the quick loop, the 78-layout models slow)."""

from __future__ import annotations

import pytest

from migbench.apply import apply_plan, verify
from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost, init_host
from migbench.catalog import Catalog
from migbench.duration import DurationModel
from migbench.plan import Plan, PlanGpu, PlanInstance, SolverInfo
from migbench.types import LaunchSettings
from tests.support.cli import migbench
from tests.support.simhelp import sim_backend

CAT = Catalog.load(include_user=False)


@pytest.mark.slow
def test_sim_init_blackwell_shows_the_unverified_values(tmp_path):
    r = migbench("sim", "init", str(tmp_path / "b"), "--gpu", "B200", "--count", "2", "--mig", "on")
    assert r.returncode == 0, r.stderr
    assert "2 x NVIDIA B200 (B200), driver 570.133.20, MIG on" in r.stdout
    assert "unverified: placements: no B200 -lgipp published" in r.stdout
    assert "3g.90gb (id, starts, memory, engines)" in r.stdout
    for key, driver in [("GB200", "570.133.20"), ("GH200-144GB", "550.90.07"), ("RTX-PRO-6000-BLACKWELL", "575.51.03")]:
        assert init_host(tmp_path / key, key, 1).read().driver == driver
    r = migbench("sim", "init", str(tmp_path / "g"), "--gpu", "GH200-96GB")
    assert r.returncode == 1 and "does not know the memory of GH200-96GB" in r.stderr


@pytest.mark.parametrize("key", ["RTX-PRO-6000-BLACKWELL"] + [
    pytest.param(k, marks=pytest.mark.slow) for k in ("B200", "GB200", "GH200-144GB")])
def test_every_maximal_layout_applies_and_reads_back(key, tmp_path, monkeypatch):
    state = tmp_path / "host"
    init_host(state, key, 1, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(state))
    backend = sim_backend(state)
    model = CAT.model(key)
    try:
        for lay in model.layouts():
            host = SimHost(state)
            for gi in host.read().gpus[0].gpu_instances:
                for ci in gi.compute_instances:
                    host.destroy_compute_instance(0, gi.id, ci.id)
                host.destroy_gpu_instance(0, gi.id)
            plan = Plan(
                name="t", sweep_file=None, sweep_sha256="", fleet=[PlanGpu(0, key)],
                instances=[PlanInstance(0, p.profile, p.start, model.profile(p.profile).memory_mib or 0, 1.0, ())
                           for p in lay],
                runs=[], unplaced=[], solver=SolverInfo("OPTIMAL", "runs_at_once", 0, 0, 0.0),
                duration_model=DurationModel(), launch=LaunchSettings(), models={},
            )
            plan.path = str(tmp_path / "plan.yaml")
            apply_plan(plan, backend, state_dir=tmp_path / "sd")
            read = backend.reader.read()
            assert read.gpu(0).layout() == lay
            assert verify(plan, read, [0]) == []
            devices = SimHost(state).read().mig_devices(0)
            assert sorted(d.memory_mib for d in devices) == sorted(model.profile(p.profile).memory_mib for p in lay)
    finally:
        fake_nvml.uninstall()
