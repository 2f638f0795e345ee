"""apply when it cannot finish: signals between steps, a kill -9 found again and finished or rolled
back, bindings that follow a rollback, a second fault during a rollback, and the host lock that keeps
apply and the launchers' starts apart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from migbench.apply import HostLock, apply_plan, reconcile, verify
from migbench.apply.recovery import ApplyInterrupted, InterruptedApplyPending
from migbench.backend.sim.host import SimHost, init_host
from migbench.catalog import Placement
from migbench.errors import MigbenchError
from migbench.launch.gate import HostGate
from migbench.launch.prepare import preflight
from migbench.plan import Plan
from migbench.state import load_bindings, state_dir_for
from tests.apply.test_reconcile import make_plan, shape
from tests.support import REPO
from tests.support.cli import migbench
from tests.support.simhelp import sim_backend
from tests.support.statedir import sd_of

MODEL = "A100-SXM4-40GB"
START = {0: (Placement("3g.20gb", 0), Placement("3g.20gb", 4))}
TARGET = {0: (Placement("2g.10gb", 0), Placement("1g.5gb", 2), Placement("1g.5gb", 3), Placement("3g.20gb", 4))}


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A 1-GPU simulated host laid out as START by an applied plan `start` (same name and file as
    the TARGET plan, as when a plan file is edited and applied again)."""
    state = tmp_path / "host"
    init_host(state, MODEL, 1, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(state))
    plan = make_plan(MODEL, START, tmp_path)
    plan.save(tmp_path / "plan.yaml")
    apply_plan(plan, sim_backend(state), state_dir=sd_of(plan))
    yield state
    from migbench.backend.sim import fake_nvml

    fake_nvml.uninstall()


def _target(tmp_path) -> Plan:  # type: ignore[no-untyped-def]
    plan = make_plan(MODEL, TARGET, tmp_path)
    plan.save(tmp_path / "plan.yaml")
    return Plan.load(tmp_path / "plan.yaml")


def _bound_uuids(plan: Plan) -> dict[str, str]:
    return {k: v["uuid"] for k, v in (load_bindings(plan) or {})["instances"].items()}


def _host_uuids(state) -> dict[str, str]:  # type: ignore[no-untyped-def]
    g = sim_backend(state).reader.read().gpu(0)
    return {f"0:{gi.placement}": g.devices_of(gi.id)[0].uuid for gi in g.instances}


def test_a_signal_between_steps_restores_every_gpu(host, tmp_path, monkeypatch):
    """Guards: Ctrl-C / SIGTERM during apply left the GPUs half-configured, with no output."""
    before = shape(host)
    real = reconcile._Executor.run_step
    done = []

    def step(self, s, created):  # type: ignore[no-untyped-def]
        real(self, s, created)
        done.append(s)
        if len(done) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    def reached_the_test(*_):  # type: ignore[no-untyped-def]
        raise RuntimeError("the signal was not deferred to a step boundary")

    monkeypatch.setattr(reconcile._Executor, "run_step", step)
    old = signal.signal(signal.SIGINT, reached_the_test)
    try:
        with pytest.raises(ApplyInterrupted) as ei:
            apply_plan(t := _target(tmp_path), sim_backend(host), state_dir=sd_of(t))
    finally:
        signal.signal(signal.SIGINT, old)
    assert ei.value.exit_code == 130 and "interrupted by SIGINT" in ei.value.message
    assert "Every GPU was restored" in ei.value.message
    assert len(done) == 3 and shape(host) == before
    cp = json.loads((state_dir_for(_target(tmp_path)) / "checkpoint.json").read_text())
    assert cp["status"] == "rolled-back"


def test_a_rollback_rebinds_the_instances_it_recreated(host, tmp_path):
    """Guards: a rollback gave the restored instances new MIG uuids while bindings.json kept the dead ones."""
    plan = _target(tmp_path)
    old = _bound_uuids(plan)
    assert old == _host_uuids(host)
    SimHost(host).inject_fault("*", 4, "UNKNOWN")  # after 3g.20gb@0 was destroyed
    with pytest.raises(MigbenchError) as ei:
        apply_plan(plan, sim_backend(host), state_dir=sd_of(plan))
    assert "restored" in ei.value.message and "Bindings updated" in ei.value.message
    now = _host_uuids(host)
    assert now["0:3g.20gb@0"] != old["0:3g.20gb@0"]  # re-created: a new MIG device
    assert _bound_uuids(plan) == now
    applied = make_plan(MODEL, START, tmp_path)
    assert preflight(applied, sd_of(applied)).uuid_of == now  # launch accepts the plan again


def test_a_second_fault_during_the_rollback_is_reported_once_per_gpu(host, tmp_path):
    """Guards: the rollback's failure read "GPU 0: GPU 0: ..."."""
    SimHost(host).inject_fault("*", 4, "UNKNOWN")
    SimHost(host).inject_fault("*", 5, "UNKNOWN")  # the restore's first change
    with pytest.raises(MigbenchError) as ei:
        apply_plan(t := _target(tmp_path), sim_backend(host), state_dir=sd_of(t))
    assert "Restoring the checkpoint also failed" in ei.value.message
    assert "GPU 0: GPU 0:" not in ei.value.message
    assert "--rollback" in (ei.value.hint or "")
    cp = json.loads((state_dir_for(_target(tmp_path)) / "checkpoint.json").read_text())
    assert cp["status"] == "rollback-failed"
    target = _target(tmp_path)
    assert apply_plan(target, sim_backend(host), state_dir=sd_of(target), resume="rollback").messages[0].startswith("rolled back")


KILLER = """
import os, sys
from migbench.apply import reconcile
from migbench.backend.select import open_backend
from migbench.plan import Plan
from migbench.state import StateDir
real, n = reconcile._Executor.run_step, []
def step(self, s, created):
    real(self, s, created)
    n.append(s)
    if len(n) == int(sys.argv[2]):
        os._exit(137)  # as kill -9 would: no handler, no rollback, the lock left with its note
reconcile._Executor.run_step = step
plan = Plan.load(sys.argv[1])
reconcile.apply_plan(plan, open_backend(), confirm=None, state_dir=StateDir.of(plan))
"""


@pytest.mark.slow
@pytest.mark.parametrize("then", ["rollback", "finish"])
def test_an_apply_killed_half_way_is_found_described_and_resolved(host, tmp_path, then):
    """Guards: after kill -9 of apply, checkpoint.json was never read back: nothing noticed the
    half-configured GPU."""
    before = shape(host)
    plan = _target(tmp_path)
    p = subprocess.run([sys.executable, "-c", KILLER, plan.path, "4"], cwd=REPO, env=dict(os.environ), capture_output=True, text=True)
    assert p.returncode == 137, p.stderr
    assert shape(host) != before
    chk = migbench("check", str(plan.path), keep_sim=True)
    assert chk.returncode == 1 and "half-configured" in chk.stdout and "--rollback" in chk.stdout, chk.stdout
    with pytest.raises(InterruptedApplyPending) as ei:
        apply_plan(plan, sim_backend(host), state_dir=sd_of(plan))
    assert "GPU 0: half-configured" in ei.value.message and "--finish" in (ei.value.hint or "")
    assert shape(host) != before  # refusing changed nothing
    res = migbench("apply", str(plan.path), f"--{then}", keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    if then == "rollback":
        assert shape(host) == before and "rolled back" in res.stdout
    else:
        assert verify(plan, sim_backend(host).reader.read(), [0]) == [] and "finishing the interrupted apply" in res.stdout
    assert migbench("check", str(plan.path), keep_sim=True).returncode == (1 if then == "rollback" else 0)
    again = migbench("apply", str(plan.path), "--rollback", keep_sim=True)
    assert again.returncode == 2 and "no interrupted apply" in again.stderr


def test_apply_and_a_launcher_exclude_each_other(host, tmp_path, monkeypatch):
    """Guards: launch during apply was safe only because the driver refused; they shared no lock."""
    plan = _target(tmp_path)
    lock_path = host / "apply.lock"
    starting = HostLock(lock_path, shared=True)  # a launcher in the middle of its starts
    assert starting.acquire()
    monkeypatch.setattr(reconcile, "LAUNCHER_WAIT_S", 0.2)
    try:
        with pytest.raises(MigbenchError) as ei:
            apply_plan(plan, sim_backend(host), state_dir=sd_of(plan))
    finally:
        starting.release()
    assert f"a migbench launcher (PID {os.getpid()}) is starting runs" in ei.value.message
    applied = make_plan(MODEL, START, tmp_path)
    said: list[str] = []
    with HostLock(lock_path, note={"plan_file": str(tmp_path / "plan.yaml")}):  # an apply in progress
        with pytest.raises(MigbenchError) as ei:
            preflight(applied, sd_of(applied))
        assert f"migbench apply of {tmp_path / 'plan.yaml'} (PID {os.getpid()}) is changing" in ei.value.message
        gate = HostGate(lock_path, state_dir_for(applied) / "bindings.json", {}, said.append)
        assert gate.enter() is False and "waiting" in said[0]
    assert gate.enter() is True
    gate.leave()


def test_a_symlink_planted_at_the_host_lock_is_refused(host, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (host / "apply.lock").unlink(missing_ok=True)
    (host / "apply.lock").symlink_to(victim)
    with pytest.raises(MigbenchError) as ei:
        apply_plan(t := _target(tmp_path), sim_backend(host), state_dir=sd_of(t))
    assert "symbolic link" in ei.value.message and victim.read_text() == "precious"


def test_the_gate_follows_bindings_that_changed_under_a_running_launcher(tmp_path):
    """Guards: a running launcher kept pinning later runs to MIG uuids a rollback had replaced."""
    b = tmp_path / "bindings.json"
    b.write_text(json.dumps({"instances": {"0:3g.20gb@0": {"uuid": "MIG-old"}, "0:3g.20gb@4": {"uuid": "MIG-b"}}}))
    uuid_of = {"0:3g.20gb@0": "MIG-old", "0:3g.20gb@4": "MIG-b"}
    said: list[str] = []
    gate = HostGate(tmp_path / "host.lock", b, uuid_of, said.append)
    assert gate.enter() and uuid_of["0:3g.20gb@0"] == "MIG-old" and not said
    gate.leave()
    b.write_text(json.dumps({"instances": {"0:3g.20gb@0": {"uuid": "MIG-new"}}}))
    assert gate.enter()
    gate.leave()
    assert uuid_of["0:3g.20gb@0"] == "MIG-new" and gate.unbound == {"0:3g.20gb@4"}
    assert "0:3g.20gb@0 -> MIG-new" in said[0]


@pytest.mark.slow
def test_the_hint_for_another_plans_interrupted_apply_rolls_it_back(host, tmp_path):
    """Regression: after a killed `apply a.yaml`, `apply b.yaml` told the user to run `migbench apply
    b.yaml --rollback`, which answered "no interrupted apply to rollback on this host". The hint's
    rollback command names the interrupted plan and its state dir, and it works."""
    import re
    import shlex

    before = shape(host)
    plan = _target(tmp_path)
    p = subprocess.run([sys.executable, "-c", KILLER, plan.path, "4"], cwd=REPO, env=dict(os.environ), capture_output=True, text=True)
    assert p.returncode == 137, p.stderr
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = make_plan(MODEL, START, other_dir)
    other.save(other_dir / "b.yaml")
    res = migbench("apply", str(other_dir / "b.yaml"), "--yes", keep_sim=True)
    assert res.returncode == 1 and "an earlier apply of" in res.stderr, res.stdout + res.stderr
    hint = " ".join(res.stderr.split())
    cmd = re.search(r"`(migbench apply [^`]* --rollback)`", hint)
    assert cmd is not None and "b.yaml" not in cmd.group(1), hint
    again = migbench(*shlex.split(cmd.group(1))[1:], keep_sim=True)
    assert again.returncode == 0 and "rolled back" in again.stdout, again.stdout + again.stderr
    assert shape(host) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "gpus, extra",
    [
        ({"0": {}}, {}),
        ({"x": {"instances": [], "mig_current": True, "mig_pending": True}}, {}),
        ({"0": {"instances": [{"placement": "zz"}], "mig_current": True, "mig_pending": True}}, {}),
        ({"0": {"instances": "abc", "mig_current": True, "mig_pending": True}}, {}),
        ({}, {"started_at": "yesterday"}),
    ],
)
def test_a_damaged_checkpoint_of_an_unfinished_apply_is_said_in_words(host, tmp_path, gpus, extra):
    """Regression: a checkpoint.json saying `applying` whose GPUs are not as apply writes them made
    check, apply and apply --rollback end in 'internal error (KeyError: ...)'. Each says which file
    and what is wrong, and how to go on; a damaged checkpoint of an apply that ended is not read."""
    plan = _target(tmp_path)
    cp = state_dir_for(plan) / "checkpoint.json"
    cp.write_text(json.dumps({"status": "applying", "gpus": gpus, **extra}))
    before = shape(host)
    for args in (("check", str(plan.path)), ("apply", str(plan.path), "--yes"), ("apply", str(plan.path), "--rollback")):
        res = migbench(*args, keep_sim=True)
        assert res.returncode == 1 and "internal error" not in res.stderr, res.stderr
        assert f"{cp} is not a checkpoint apply wrote" in " ".join(res.stderr.split()) and "move it aside" in res.stderr, res.stderr
    assert shape(host) == before
    cp.write_text(json.dumps({"status": "applied", "gpus": gpus, **extra}))
    assert migbench("apply", str(plan.path), "--yes", keep_sim=True).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_the_confirmation_prompt_ends_the_apply_at_once(host, tmp_path, sig):
    """Guards: Ctrl-C or SIGTERM while apply asked `Proceed? [y/N]` was only recorded (signals wait
    for a step boundary): the prompt kept waiting, holding the host lock, until someone answered."""
    before = shape(host)
    answered = []
    r, w = os.pipe()
    os.write(w, b"y\n")  # what a user types after the signal (the old prompt went on reading)

    def confirm(text: str) -> bool:
        os.kill(os.getpid(), sig)
        answered.append(os.read(r, 2))
        return True

    try:
        with pytest.raises(ApplyInterrupted) as ei:
            apply_plan(t := _target(tmp_path), sim_backend(host), confirm=confirm, state_dir=sd_of(t))
    finally:
        os.close(r)
        os.close(w)
    assert answered == [] and ei.value.exit_code == 128 + sig, answered
    assert shape(host) == before
    assert not HostLock(sim_backend(host).lock_path).is_held()


def test_apply_lets_launchers_start_runs_while_it_waits_for_an_answer(host, tmp_path):
    """Guards: apply held the host lock while `Proceed? [y/N]` waited for a person, so every
    launcher on the host waited (then gave up) to start runs until someone answered."""
    lock_path = sim_backend(host).lock_path
    seen = []

    def confirm(text: str) -> bool:
        launcher = HostLock(lock_path, shared=True)  # what a launcher takes to start runs
        seen.append(launcher.acquire())
        launcher.release()
        return True

    apply_plan(t := _target(tmp_path), sim_backend(host), confirm=confirm, state_dir=sd_of(t))
    assert seen == [True]
    assert verify(t, sim_backend(host).reader.read(), [0]) == []  # the confirmed steps were made


def test_a_run_started_while_apply_waited_for_its_answer_stops_it_with_nothing_changed(host, tmp_path, sleeper):
    """The host is read again once the answer comes: a run that started meanwhile on an instance
    the confirmed steps destroy (or any other change) ends the apply with the GPUs untouched."""
    uuid = _host_uuids(host)["0:3g.20gb@0"]  # destroyed by the steps asked about

    def confirm(text: str) -> bool:
        assert "3g.20gb" in text
        SimHost(host).attach(uuid, sleeper().pid, 100)  # a launcher started a run there meanwhile
        return True

    before = shape(host)
    with pytest.raises(MigbenchError) as ei:
        apply_plan(t := _target(tmp_path), sim_backend(host), confirm=confirm, state_dir=sd_of(t))
    assert shape(host) == before, ei.value
    assert "3g.20gb@0" in str(ei.value) and "in use" in str(ei.value), ei.value
    assert not HostLock(sim_backend(host).lock_path).is_held()


def test_other_steps_after_the_answer_are_not_made(host, tmp_path):
    """The steps made are the steps confirmed: a GPU changed by hand while apply waited (an
    instance destroyed) gives other steps, and the apply ends with nothing changed."""

    by_hand = []

    def confirm(text: str) -> bool:
        h = SimHost(host)
        g = h.read().gpus[0]
        gi = next(i for i in g.gpu_instances if i.start == 4)
        for ci in list(gi.compute_instances):
            h.destroy_compute_instance(0, gi.id, ci.id)
        h.destroy_gpu_instance(0, gi.id)  # someone's nvidia-smi meanwhile
        by_hand.append(shape(host))
        return True

    before = shape(host)
    with pytest.raises(MigbenchError, match="changed while apply waited for your answer; nothing was changed"):
        apply_plan(t := _target(tmp_path), sim_backend(host), confirm=confirm, state_dir=sd_of(t))
    assert by_hand and by_hand[0] != before and shape(host) == by_hand[0]  # only the change made by hand
