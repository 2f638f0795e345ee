"""migbench apply against the simulated driver: exact read-back, idempotence, safety, rollback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from migbench.apply import HostLock, apply_plan, diff_gpu, verify
from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost, init_host
from migbench.catalog import Catalog, Placement
from migbench.duration import DurationModel
from migbench.errors import HardwareError, MigbenchError, UnsafeError
from migbench.plan import Plan, PlanGpu, PlanInstance, SolverInfo
from migbench.sweep.model import LaunchSettings
from tests.support.simhelp import sim_backend
from tests.support.statedir import sd_at

CAT = Catalog.load(include_user=False)
SIMULABLE = [k for k in CAT.keys() if all(p.memory_mib for p in CAT.model(k).profiles)]


def geometry(key: str) -> tuple:
    """What the simulated driver's placement rules see of a model: profile ids, slices, starts, maximums."""
    return tuple(sorted((p.id, p.compute_slices, p.memory_slices, p.starts, p.max_count, p.media, p.variant) for p in CAT.model(key).profiles))


FULL = {geometry(k): k for k in reversed(SIMULABLE)}
"""One model per geometry (the first by name) is tried with every maximal layout; the others share
its rules and differ in names and memory, so they are tried with `placement_cover` of their layouts."""


def placement_cover(layouts: list[tuple[Placement, ...]]) -> list[tuple[Placement, ...]]:
    """Layouts (greedily chosen, in catalogue order) in which every placement of every profile appears."""
    todo = {p for lay in layouts for p in lay}
    out = []
    while todo:
        best = max(layouts, key=lambda lay: len(todo.intersection(lay)))
        out.append(best)
        todo -= set(best)
    return out


def make_plan(model_key: str, layouts: dict[int, tuple[Placement, ...]], tmp_path) -> Plan:
    model = CAT.model(model_key)
    instances = [PlanInstance(g, p.profile, p.start, model.profile(p.profile).memory_mib, 1.0, ()) for g, lay in sorted(layouts.items()) for p in lay]
    plan = Plan(
        name="t",
        sweep_file=None,
        sweep_sha256="",
        fleet=[PlanGpu(g, model_key) for g in sorted(layouts)],
        instances=instances,
        runs=[],
        unplaced=[],
        solver=SolverInfo("OPTIMAL", "runs_at_once", 0, 0, 0.0),
        duration_model=DurationModel(),
        launch=LaunchSettings(),
        models={},
    )
    plan.path = str(tmp_path / "plan.yaml")
    return plan


@pytest.fixture
def sim(tmp_path, monkeypatch):
    def make(model: str, count: int = 1, **kw):
        state = tmp_path / "host"
        init_host(state, model, count, **kw)
        monkeypatch.setenv("MIGBENCH_SIM", str(state))
        return state

    yield make
    fake_nvml.uninstall()


def shape(state) -> list:
    """What 'the same state' means: per GPU, MIG mode and the instances' placements and CIs."""
    st = SimHost(state).read()
    out = []
    for g in st.gpus:
        out.append(
            (
                g.mig_current,
                g.mig_pending,
                sorted((gi.start, gi.profile_id, tuple((ci.profile_id, ci.start) for ci in gi.compute_instances)) for gi in g.gpu_instances),
            )
        )
    return out


def test_the_placement_cover_holds_every_placement_and_one_model_per_geometry_is_tried_in_full():
    for key in SIMULABLE:
        layouts = CAT.model(key).layouts()
        cover = placement_cover(layouts)
        assert {p for lay in cover for p in lay} == {p for lay in layouts for p in lay}
        assert len(cover) < len(layouts) or len(layouts) <= 6, (key, len(cover))
    assert {"A30", "A100-PCIE-40GB", "RTX-PRO-6000-BLACKWELL"} <= set(FULL.values())


@pytest.mark.parametrize("model_key", [m if m in ("A30", "H100-SXM5-80GB") else pytest.param(m, marks=pytest.mark.slow) for m in SIMULABLE])
def test_every_maximal_layout_reads_back_exactly_from_empty_and_from_another_layout(model_key, sim, tmp_path):
    """Every maximal layout of the model (or, for a model whose geometry another is tried with in
    full, layouts that hold every placement): applied to an empty GPU, then another layout applied on
    top of it (reconcile), each read back exactly with each device's memory, and a second apply
    changes nothing."""
    model = CAT.model(model_key)
    layouts = model.layouts() if FULL[geometry(model_key)] == model_key else placement_cover(model.layouts())
    state = sim(model_key, 1, mig=True)
    backend = sim_backend(state)
    n = len(layouts)
    for i, lay in enumerate(layouts):
        # from empty
        host = SimHost(state)
        for gi in host.read().gpus[0].gpu_instances:
            for ci in gi.compute_instances:
                host.destroy_compute_instance(0, gi.id, ci.id)
            host.destroy_gpu_instance(0, gi.id)
        plan = make_plan(model_key, {0: lay}, tmp_path)
        apply_plan(plan, backend, state_dir=sd_at(tmp_path / "sd"))
        read = backend.reader.read()
        assert read.gpu(0).layout() == lay, (i, lay)
        assert verify(plan, read, [0]) == []
        devices = SimHost(state).read().mig_devices(0)
        assert sorted(d.memory_mib for d in devices) == sorted(model.profile(p.profile).memory_mib for p in lay)
        # from a different layout: reconcile to another one
        other = layouts[(i + n // 2 + 1) % n]
        plan2 = make_plan(model_key, {0: other}, tmp_path)
        apply_plan(plan2, backend, state_dir=sd_at(tmp_path / "sd"))
        assert backend.reader.read().gpu(0).layout() == other
        # a second apply is a no-op
        before = backend.writer.log[:]
        report = apply_plan(plan2, backend, state_dir=sd_at(tmp_path / "sd"))
        assert not report.changed and backend.writer.log == before


@pytest.mark.slow
def test_apply_through_a_real_subprocess_of_the_simulated_nvidia_smi(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 2)  # MIG off: apply must enable it
    backend = sim_backend(state, subprocess=True)
    lay = (Placement("3g.20gb", 0), Placement("2g.10gb", 4), Placement("1g.5gb", 6))
    plan = make_plan("A100-SXM4-40GB", {0: lay, 1: (Placement("7g.40gb", 0),)}, tmp_path)
    report = apply_plan(plan, backend, state_dir=sd_at(tmp_path / "sd"))
    assert [r.argv[:4] for r in report.commands][0] == ["nvidia-smi", "-i", "0", "-mig"]
    assert all(r.rc == 0 for r in report.commands)
    host = backend.reader.read()
    assert host.gpu(0).layout() == lay and host.gpu(1).layout() == (Placement("7g.40gb", 0),)
    # bindings: every planned instance has the MIG uuid the host reports
    b = report.bindings
    for _key, inst in b["instances"].items():
        g = host.gpu(inst["gpu"])
        assert inst["uuid"] in {d.uuid for d in g.devices}


def test_reconcile_keeps_instances_the_plan_keeps(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, mig=True)
    backend = sim_backend(state)
    a = (Placement("3g.20gb", 0), Placement("3g.20gb", 4))
    apply_plan(make_plan("A100-SXM4-40GB", {0: a}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    keep = backend.reader.read().gpu(0).instance_at(Placement("3g.20gb", 4))
    uuid_before = backend.reader.read().gpu(0).devices_of(keep.id)[0].uuid
    b = (Placement("2g.10gb", 0), Placement("1g.5gb", 2), Placement("1g.5gb", 3), Placement("3g.20gb", 4))
    report = apply_plan(make_plan("A100-SXM4-40GB", {0: b}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    d = report.diffs[0]
    assert d.keep == [Placement("3g.20gb", 4)] and d.destroy == [Placement("3g.20gb", 0)]
    after = backend.reader.read().gpu(0)
    kept = after.instance_at(Placement("3g.20gb", 4))
    assert after.devices_of(kept.id)[0].uuid == uuid_before  # untouched, same MIG device


def test_refuses_to_destroy_an_instance_in_use_and_changes_nothing(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, mig=True)
    backend = sim_backend(state)
    apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    dev = backend.reader.read().gpu(0).devices[0]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        SimHost(state).attach(dev.uuid, proc.pid, 1024)
        before = shape(state)
        with pytest.raises(UnsafeError) as ei:
            apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("3g.20gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
        msg = ei.value.message
        assert "GPU 0" in msg and "7g.40gb@0" in msg and str(proc.pid) in msg and "nothing was changed" in msg
        assert shape(state) == before
    finally:
        proc.kill()
        proc.wait()
    # once the process is gone the same apply goes through
    apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("3g.20gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert backend.reader.read().gpu(0).layout() == (Placement("3g.20gb", 0),)


def test_pending_mode_with_a_client_holding_the_gpu_stops_with_the_reason_and_restores(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 2, clients=("nvidia-persistenced",))
    backend = sim_backend(state)
    before = shape(state)
    plan = make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path)
    with pytest.raises(HardwareError) as ei:
        apply_plan(plan, backend, state_dir=sd_at(tmp_path / "sd"))
    err = ei.value
    assert "pending" in err.message and "In use by another client" in err.message
    assert "nvidia-smi -i 0 --gpu-reset" in err.hint and "nvidia-persistenced" in err.hint
    assert "restored" in err.message
    assert shape(state) == before
    # GPU 1 was not in the plan: never reset, never touched
    assert not any("-i 1" in " ".join(r.argv) for r in backend.writer.log)


def test_pending_mode_in_a_vm_where_reset_is_not_supported(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, vm=True)
    backend = sim_backend(state)
    before = shape(state)
    with pytest.raises(HardwareError) as ei:
        apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert "Not Supported" in ei.value.message and "reboot" in ei.value.hint
    assert shape(state) == before


def test_hopper_enables_mig_without_a_reset(sim, tmp_path):
    state = sim("H100-SXM5-80GB", 1, clients=("nvidia-persistenced",))
    backend = sim_backend(state)
    apply_plan(make_plan("H100-SXM5-80GB", {0: (Placement("7g.80gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert not any("--gpu-reset" in r.argv for r in backend.writer.log)
    assert backend.reader.read().gpu(0).layout() == (Placement("7g.80gb", 0),)


def test_unprivileged_apply_fails_before_any_change(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, privileged=False)
    backend = sim_backend(state)
    before = shape(state)
    with pytest.raises(MigbenchError) as ei:
        apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert "root" in ei.value.message and "sudo" in ei.value.hint
    assert backend.writer.log == [] and shape(state) == before


def test_dry_run_prints_the_commands_and_changes_nothing(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, mig=True)
    backend = sim_backend(state, dry_run=True)
    before = shape(state)
    lay = (Placement("4g.20gb", 0), Placement("3g.20gb", 4))
    report = apply_plan(make_plan("A100-SXM4-40GB", {0: lay}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    lines = [r.line() for r in report.commands]
    assert lines[0].startswith("nvml nvmlDeviceCreateGpuInstanceWithPlacement gpu=0 profile=5 start=0 size=4")
    assert "nvidia-smi mig -i 0 -cgi 5:0" in lines[0]
    assert lines[1] == "nvidia-smi mig -i 0 -gi '<id of 4g.20gb@0>' -cci"
    assert len(lines) == 4
    assert shape(state) == before and not (tmp_path / "sd").exists()


def test_two_applies_cannot_interleave(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, mig=True)
    backend = sim_backend(state)
    with HostLock(state / "apply.lock"):
        with pytest.raises(MigbenchError) as ei:
            apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert "another migbench apply" in ei.value.message


def test_plan_for_another_model_is_refused(sim, tmp_path):
    state = sim("A30", 1, mig=True)
    backend = sim_backend(state)
    with pytest.raises(MigbenchError) as ei:
        apply_plan(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), backend, state_dir=sd_at(tmp_path / "sd"))
    assert "the plan was made for A100-SXM4-40GB" in ei.value.message


def _count_ops(state, plan, tmp_path) -> int:
    backend = sim_backend(state)
    report = apply_plan(plan, backend, state_dir=sd_at(tmp_path / "count"))
    return len(report.commands)


def test_a_failure_at_each_step_leaves_every_gpu_as_it_was(sim, tmp_path, monkeypatch):
    """Two GPUs: GPU 0 changes layout (destroys + creates), GPU 1 needs MIG enabled. A fault is
    injected at step k for every k; each time the apply fails and every GPU is restored."""
    start = {0: (Placement("3g.20gb", 0), Placement("3g.20gb", 4))}
    target = {
        0: (Placement("2g.10gb", 0), Placement("1g.5gb", 2), Placement("1g.5gb", 3), Placement("3g.20gb", 4)),
        1: (Placement("4g.20gb", 0), Placement("2g.10gb", 4), Placement("1g.5gb", 6)),
    }

    def fresh(name: str):
        st = tmp_path / name
        init_host(st, "A100-SXM4-40GB", 2)
        monkeypatch.setenv("MIGBENCH_SIM", str(st))
        h = SimHost(st)
        h.set_mig_mode(0, True)
        b = sim_backend(st)
        apply_plan(make_plan("A100-SXM4-40GB", start, tmp_path), b, gpus=[0], state_dir=sd_at(tmp_path / "sd"))
        return st

    st = fresh("count")
    n_ops = _count_ops(st, make_plan("A100-SXM4-40GB", target, tmp_path), tmp_path)
    assert n_ops >= 10
    for k in range(1, n_ops + 1):
        st = fresh(f"k{k}")
        before = shape(st)
        SimHost(st).inject_fault("*", k, "UNKNOWN")
        with pytest.raises(MigbenchError) as ei:
            apply_plan(make_plan("A100-SXM4-40GB", target, tmp_path), sim_backend(st), state_dir=sd_at(tmp_path / f"sd{k}"))
        assert "restored" in ei.value.message, (k, ei.value.message)
        assert shape(st) == before, k


def test_diff_marks_a_gpu_with_pending_enable(sim, tmp_path):
    state = sim("A100-SXM4-40GB", 1, clients=("dcgm",))
    SimHost(state).set_mig_mode(0, True)  # stays pending: dcgm holds the GPU
    backend = sim_backend(state)
    g = backend.reader.read().gpu(0)
    assert g.mig_current is False and g.mig_pending is True
    d = diff_gpu(make_plan("A100-SXM4-40GB", {0: (Placement("7g.40gb", 0),)}, tmp_path), g)
    assert d.mode == "pending-enable"


def test_a_bindings_file_whose_instances_are_not_a_mapping_is_an_error_not_a_traceback(tmp_path):
    """Guards (issue 23): a bindings.json whose `instances` is a list crashed `launch --dry-run` with
    an AttributeError; it is read as what `apply` writes or refused with a hint to apply again."""
    import json

    from migbench.launch.prepare import dry_run

    plan = make_plan("A100-SXM4-80GB", {0: (Placement("7g.80gb", 0),)}, tmp_path)
    sd = tmp_path / "state"
    sd.mkdir(mode=0o700)
    doc = {"version": 1, "plan": plan.name, "instances": ["0:7g.80gb@0"], "runs": {}}
    (sd / "bindings.json").write_text(json.dumps(doc))
    with pytest.raises(MigbenchError, match=r"bindings\.json is not a bindings file") as err:
        dry_run(plan, sd_at(sd))
    assert "migbench apply PLAN" in (err.value.hint or "")
