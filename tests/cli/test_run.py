"""`migbench run` is idempotent (issue 10, item 4): a sweep that grows launches only its new runs,
finished runs are carried forward by id, and the simulated host `run` creates is found by the
commands that come after it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pynvml
import pytest

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost, init_host
from migbench.plan import Plan
from tests.cli.test_launch_commands import SMALL
from tests.support.cli import migbench
from tests.support.launchkit import PY, TOY_CMD

pytestmark = pytest.mark.slow


def _run(sweep: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [PY, "-m", "migbench", "run", str(sweep), "--time-limit", "10", *args]
    return subprocess.run(cmd, env=env, cwd=sweep.parent.parent, capture_output=True, text=True, timeout=120)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        MIGBENCH_POLL_S="0.05",
        HOME=str(tmp_path),
        TOY_LEDGER=str(tmp_path / "ledger"),
        MIGBENCH_CATALOG=str(tmp_path / "none.yaml"),
        MIGBENCH_WIDTH="200",
        **extra,
    )
    env.pop("MIGBENCH_SIM", None)
    env.update(extra)
    return env


def _ledger(tmp_path: Path) -> list[str]:
    f = tmp_path / "ledger"
    return sorted(f.read_text().split("\n")[:-1]) if f.exists() else []


@pytest.fixture
def no_simulated_library():
    """In-process CLI tests leave pynvml on a simulated library; a host without a driver has none."""
    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()
    yield
    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()


def test_adding_a_seed_launches_only_the_new_run(tmp_path):
    """Guards: after adding a value to a sweep that already ran, `run` re-planned, applied commands
    to the GPUs, then refused to launch ("made from a different plan file; pass --force"); and
    (issue 21) wrote a plan of the new run alone and re-cut the GPU for it, though an idle instance fit."""
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True)
    sweep = tmp_path / "exp" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(SMALL.replace("{toy}", TOY_CMD))
    env = _env(tmp_path, MIGBENCH_SIM=str(sim))
    first = _run(sweep, env, "--fleet", "A100-SXM4-80GB:1")
    assert first.returncode == 0, first.stdout + first.stderr
    done = _ledger(tmp_path)
    assert len(done) == 3
    # a new value: three runs keep their ids, one is new
    sweep.write_text(SMALL.replace("{toy}", TOY_CMD).replace("[0.1, 0.01, 0.001]", "[0.1, 0.01, 0.001, 0.0001]"))
    second = _run(sweep, env, "--fleet", "A100-SXM4-80GB:1")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "3 of the sweep's 4 runs finished there (3 succeeded), carried forward by id" in out
    # issue 21: the plan keeps every run; the new run goes on an idle instance as the host has it
    grown = Plan.load(sweep.parent / "small.plan.yaml")
    assert len(grown.runs) == 4 and sorted(r.done or "" for r in grown.runs) == ["", "succeeded", "succeeded", "succeeded"]
    assert "applied: every GPU already matches the plan" in out  # 0 commands
    assert "1 new run to start on the idle " in out and "; no re-cut" in out
    assert "plan written to" in out and ": 4 runs (3 finished earlier, kept and marked done; 1 to start)" in out
    after = _ledger(tmp_path)
    assert len(after) == 4 and set(done) <= set(after)  # the old three did not run again
    status = migbench("status", str(sweep.parent / "small.plan.yaml"), "--json", env={"MIGBENCH_SIM": str(sim)})
    assert '"succeeded": 4' in status.stdout, status.stdout + status.stderr
    # nothing left: no plan, no apply, no launch; the GPUs are not touched
    host = (sim / "host.json").read_bytes()
    plan = (sweep.parent / "small.plan.yaml").read_bytes()
    third = _run(sweep, env, "--fleet", "A100-SXM4-80GB:1")
    assert third.returncode == 0 and "nothing to launch" in third.stdout, third.stdout + third.stderr
    assert "applied" not in third.stdout
    assert (sim / "host.json").read_bytes() == host and (sweep.parent / "small.plan.yaml").read_bytes() == plan
    assert _ledger(tmp_path) == after


def test_a_running_launcher_is_refused_before_anything_changes(tmp_path):
    """`run` reads the launch state first: a launcher running the sweep stops it before a plan is
    written or a GPU is changed."""
    from migbench.launch.options import LOCK_NAME
    from migbench.launch.procs import LauncherLock
    from migbench.launch.store import Store, db_path

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=False)
    sweep = tmp_path / "exp" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(SMALL.replace("{toy}", TOY_CMD))
    sd = sweep.parent / "runs" / "small"
    sd.mkdir(parents=True)
    Store.create(db_path(sd)).close()
    host = (sim / "host.json").read_bytes()
    with LauncherLock(sd / LOCK_NAME):
        res = _run(sweep, _env(tmp_path, MIGBENCH_SIM=str(sim)), "--fleet", "A100-SXM4-80GB:1")
    assert res.returncode == 1 and "already running" in res.stderr, res.stdout + res.stderr
    assert (sim / "host.json").read_bytes() == host
    assert not (sweep.parent / "small.plan.yaml").exists()


def test_the_simulated_host_run_creates_is_found_next_to_the_plan(tmp_path, no_simulated_library):
    """Guards: the simulated host `run` creates was invisible to later commands (`check` said NVML
    was not found; `status` showed no GPU) and `run` did not say how to reach it."""
    sweep = tmp_path / "exp" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(SMALL.replace("{toy}", TOY_CMD).replace("launch:", "fleet: [{gpu: A100-SXM4-80GB, count: 1}]\nlaunch:"))
    res = _run(sweep, _env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    sim = (sweep.parent / ".migbench-sim").resolve()
    assert SimHost(sim).exists()
    assert f"export MIGBENCH_SIM={sim}\n" in res.stdout
    plan = sweep.parent / "small.plan.yaml"
    check = migbench("check", str(plan))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "the host matches" in check.stdout and f"using the simulated host next to the plan, {sim}" in check.stderr
    dry = migbench("apply", str(plan), "--dry-run")
    assert dry.returncode == 0 and "nothing to do" in dry.stdout, dry.stdout + dry.stderr
    for args, cwd in (((str(plan),), tmp_path), ((), sweep.parent)):
        st = migbench("status", *args, cwd=cwd)
        assert st.returncode == 0, st.stderr
        assert "3 succeeded" in st.stdout and "(simulated)" in st.stdout and str(sim) in st.stdout
    # a simulated host that is set, or a driver that answers, wins: nothing is adopted
    other = tmp_path / "other-sim"
    init_host(other, "A100-SXM4-80GB", 1, mig=True)
    res = migbench("check", str(plan), env={"MIGBENCH_SIM": str(other)})
    assert "next to the plan" not in res.stderr and res.returncode == 1


SWARM = SMALL.replace("[0.1, 0.01, 0.001]", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]")
"""Fourteen small runs: the planner cuts both GPUs of an A100 pair into small instances."""
BIG = """
  - name: big
    command: {toy} --steps 2 --step-seconds 0.05 --out ${run_dir}/ckpt --seed {seed}
    parameters: {seed: [0]}
    memory: 60GiB
"""


def _gpu(sim: Path, index: int) -> list[tuple[int, int, list[str]]]:
    """A GPU's instances on the simulated host: start, GPU instance id and compute instance uuids."""
    g = SimHost(sim).read().gpus[index]
    return [(gi.start, gi.id, [c.uuid for c in gi.compute_instances]) for gi in g.gpu_instances]


def test_a_grown_sweep_needing_a_bigger_instance_re_cuts_only_an_idle_gpu(tmp_path):
    """Guards (issue 21): a run added to a finished sweep re-partitioned every GPU and the plan file kept
    the new run alone; now one idle GPU is re-cut for it, the other is untouched, every run is kept and
    runs once, and a running launcher is still refused before anything changes."""
    from migbench.launch.options import LOCK_NAME
    from migbench.launch.procs import LauncherLock

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 2, mig=True)
    sweep = tmp_path / "exp" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(SWARM.replace("{toy}", TOY_CMD))
    env = _env(tmp_path, MIGBENCH_SIM=str(sim))
    first = _run(sweep, env, "--fleet", "A100-SXM4-80GB:2")
    assert first.returncode == 0, first.stdout + first.stderr
    plan_file = sweep.parent / "small.plan.yaml"
    old = Plan.load(plan_file)
    assert len(_ledger(tmp_path)) == 14 and all(i.profile != "7g.80gb" for i in old.instances)
    sweep.write_text((SWARM + BIG).replace("{toy}", TOY_CMD))
    untouched = {g: _gpu(sim, g) for g in (0, 1)}
    second = _run(sweep, env, "--fleet", "A100-SXM4-80GB:2")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert _gpu(sim, 1) == untouched[1] and _gpu(sim, 0) != untouched[0]
    grown = Plan.load(plan_file)
    assert len(grown.runs) == 15 and sum(r.done == "succeeded" for r in grown.runs) == 14
    assert grown.layout(1) == old.layout(1) and [str(p) for p in grown.layout(0)] == ["7g.80gb@0"]
    assert "1 new run to start on the idle 7g.80gb@0 of GPU 0; re-cut only GPU(s) 0" in out
    assert "GPU 0 (every instance idle) re-cut from " in out and " to 7g.80gb@0" in out
    after = _ledger(tmp_path)
    assert len(after) == 15 and len(set(after)) == 15  # every run once
    status = migbench("status", str(plan_file), "--json", env={"MIGBENCH_SIM": str(sim)})
    assert '"succeeded": 15' in status.stdout, status.stdout + status.stderr
    # a launcher running the sweep: growing it again is refused before the plan or a GPU changes
    sweep.write_text((SWARM + BIG).replace("{toy}", TOY_CMD).replace("[0]", "[0, 1]"))
    host, plan = (sim / "host.json").read_bytes(), plan_file.read_bytes()
    with LauncherLock(sweep.parent / "runs" / "small" / LOCK_NAME):
        res = _run(sweep, env, "--fleet", "A100-SXM4-80GB:2")
    assert res.returncode == 1 and "already running" in res.stderr, res.stdout + res.stderr
    assert (sim / "host.json").read_bytes() == host and plan_file.read_bytes() == plan


LONG = """
version: 1
name: live
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: a
    command: {toy} --steps 3 --step-seconds 0.1 --hold-file {hold} --out ${run_dir}/ckpt --lr {lr}
    parameters: {lr: [0.1, 0.01, 0.001]}
    memory: 2GiB
    compute: 0.1
"""


def test_a_sweep_grown_while_its_runs_live_queues_on_existing_instances_and_touches_no_busy_one(rig, tmp_path):
    """Guards (issue 21): a grown sweep was planned from scratch and applied over instances whose
    runs still ran (a killed launcher's runs, which the next launcher adopts). Now the new run queues
    on an existing instance, a run that needs a whole GPU waits unplaced instead of a re-cut, nothing
    on the GPU changes, and every run runs once."""
    hold = tmp_path / "release"  # the runs hold after their first step until the new launcher has adopted them
    r = rig(LONG.replace("{hold}", str(hold)), gpus=1)
    p = r.start()
    r.wait_for(lambda: list(r.states().values()) == ["running"] * 3, what="the three runs to run")
    os.kill(p.pid, signal.SIGKILL)  # their shims live on; the rows still say running
    p.wait()
    host = SimHost(r.sim).read()
    before = [(gi.start, gi.id, [c.uuid for c in gi.compute_instances]) for gi in host.gpus[0].gpu_instances]
    sweep = r.plan_path.parent / "sweep.yaml"
    grown = LONG.replace("{hold}", str(hold)).replace("[0.1, 0.01, 0.001]", "[0.1, 0.01, 0.001, 0.0001]")
    sweep.write_text((grown + BIG.replace("--seed", "--steps 2 --seed")).replace("{toy}", TOY_CMD))
    log = tmp_path / "run.log"
    with open(log, "wb") as f:
        q = subprocess.Popen(
            [PY, "-m", "migbench", "run", str(sweep), "--time-limit", "10"], env=r.env, cwd=sweep.parent.parent, stdout=f, stderr=subprocess.STDOUT
        )
    r.wait_for(lambda: "resuming: adopted" in log.read_text() or q.poll() is not None, timeout=120, what="the new launcher to adopt")
    hold.touch()
    q.wait(timeout=120)
    out = log.read_text()
    res = subprocess.CompletedProcess(q.args, q.returncode, out, "")
    assert res.returncode == 1 and "launcher done (exit 1): 1 abandoned, 4 succeeded" in out, out  # the unplaced run
    assert _gpu(r.sim, 0) == before  # no busy instance destroyed, moved or re-cut: no instance at all
    plan = Plan.load(r.plan_path)
    (big,) = [x for x in plan.runs if x.group == "big"]
    assert big.gpu is None and [u.id for u in plan.unplaced] == [big.id]
    # every instance is busy: the new run waits behind a live run, on an instance as it is
    assert "1 new run to start on the busy " in out and "; no re-cut" in out
    assert ": 5 runs (3 still live, kept where they run; 1 to start) on " in out and "adopted 3 running run(s)" in out
    assert "fit no instance and no idle GPU can be re-cut for them: unplaced" in out
    assert "applied: every GPU already matches the plan" in out
    states = r.states()
    assert sorted(states.values()) == ["abandoned"] + ["succeeded"] * 4, states
    assert Counter(line.split()[0] for line in r.ledger_lines()) == {rid: 1 for rid, s in states.items() if s == "succeeded"}
