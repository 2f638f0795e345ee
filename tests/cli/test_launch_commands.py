"""The launcher's commands end to end: dry run, injection corpus, flapping guard, drain, detach +
status + stop, and the refusals (plan not applied, state from another plan)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost
from migbench.cli import app
from tests.support.launchkit import tree


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


SMALL = """
version: 1
name: small
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50, env: {GLOBAL_X: "g-${run_id}"}}
groups:
  - name: a
    command: {toy} --steps 2 --step-seconds 0.05 --out ${run_dir}/ckpt --try ${attempt} --lr {lr}
    parameters: {lr: [0.1, 0.01, 0.001]}
    env: {RUN_X: "r-${run_id}", NOTE: "{lr}"}
    memory: 2GiB
    compute: 0.1
"""


def test_dry_run_prints_each_start_and_changes_nothing(rig, tmp_path):
    r = rig(SMALL)
    before, host_before = tree(tmp_path), (r.sim / "host.json").read_bytes()
    res = invoke("launch", str(r.plan_path), "--dry-run")
    assert res.exit_code == 0, res.output
    assert tree(tmp_path) == before and (r.sim / "host.json").read_bytes() == host_before
    assert not r.db.exists() and not [p for p in r.state_dir.iterdir() if p.is_dir()]
    uuids = r.bindings()["instances"]
    plan = r.plan
    for run in plan.placed_runs():
        rdir = r.state_dir / run.id
        assert f"# {run.id} attempt 1 on GPU" in res.output
        assert f"export CUDA_VISIBLE_DEVICES={uuids[run.instance_key]['uuid']}" in res.output
        assert f"export MIGBENCH_RUN_DIR={rdir}" in res.output
        assert f"export RUN_X=r-{run.id}" in res.output and f"export GLOBAL_X=g-{run.id}" in res.output
        assert f"--out {rdir}/ckpt --try 1 --lr {run.params['lr']}" in res.output
    assert "MIGBENCH_RESUME" not in res.output
    # an unapplied plan: still nothing is created, the uuids are placeholders
    (r.state_dir / "bindings.json").rename(tmp_path / "bindings.json")
    state_parent = r.state_dir.parent
    import shutil

    shutil.rmtree(state_parent)
    res = invoke("launch", str(r.plan_path), "--dry-run")
    assert res.exit_code == 0 and "<MIG uuid of 0:" in res.output and "not applied" in res.output
    assert not state_parent.exists()


def test_launch_refuses_an_unapplied_plan_and_a_vanished_device(rig, tmp_path):
    r = rig(SMALL)
    bindings = r.state_dir / "bindings.json"
    doc = json.loads(bindings.read_text())
    key = next(iter(doc["instances"]))
    doc["instances"][key]["uuid"] = "MIG-00000000-0000-0000-0000-000000000000"
    bindings.write_text(json.dumps(doc))
    res = r.cli("launch", str(r.plan_path))
    assert res.returncode == 1 and "no longer exists on the host" in res.stderr and "migbench apply" in res.stderr
    bindings.unlink()
    res = r.cli("launch", str(r.plan_path))
    assert res.returncode == 1 and "not applied" in res.stderr and "migbench apply" in res.stderr
    assert "Traceback" not in res.stderr


INJECT = r"""
version: 1
name: inject
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: argv
    command: {toy} --steps 1 --step-seconds 0 --note {note}
    parameters:
      note:
        values: ["; rm -rf ~ #", "$(touch pwned)", "`touch pwned2`", "../../etc/passwd", "--help", "a\nb", "${run_dir}", "${run_id}x${attempt}"]
    memory: 2GiB
    compute: 0.1
  - name: sh
    shell: true
    command: {toy} --steps 1 --step-seconds 0 --note {note}
    parameters:
      note:
        values: ["$(touch pwned3)", "`touch pwned4`", "${run_dir}", "x; touch pwned5"]
    memory: 2GiB
    compute: 0.1
"""


@pytest.mark.slow
def test_injection_corpus_reaches_the_program_as_literal_arguments(rig, tmp_path):
    r = rig(INJECT)
    rc, out = r.launch()
    assert rc == 0, out
    rows = r.rows()
    assert len(rows) == 12
    for rid, _row in rows.items():
        note = r.plan.run(rid).params["note"]
        argv = r.toy_record(rid)["argv"]
        assert argv == ["--steps", "1", "--step-seconds", "0", "--note", note], argv
    created = sorted(p.name for p in tmp_path.rglob("pwned*"))
    assert created == []
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == []


FLAP = """
version: 1
name: flap
launch: {retries: 3, backoff: 0, stop_grace: 5, flapping_max: 2, flapping_window: 1m}
groups:
  - name: bad
    command: {toy} --steps 1 --step-seconds 0 --crash-at 1
    parameters: {i: [0, 1, 2, 3, 4, 5]}
    memory: 30GiB
    compute: 0.1
    profiles: [3g.40gb]
"""


@pytest.mark.slow
def test_flapping_guard_stops_new_launches_and_says_why(rig):
    r = rig(FLAP)
    assert len({run.instance_key for run in r.plan.placed_runs()}) == 2  # two runs at once, four queued
    rc, out = r.launch()
    assert rc == 3, out
    states = r.states()
    assert list(states.values()).count("queued") >= 2 and "running" not in states.values()
    lr = r.launcher_row()
    assert lr["flapping"] and "failed within 60 s of their start" in lr["flapping"]
    res = r.cli("status", str(r.plan_path))
    assert res.returncode == 0 and "flapping guard" in res.stdout


DRAIN = """
version: 1
name: drain
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: w
    command: {toy} --steps 10 --step-seconds 0.1 --memory 1GiB --i {i}
    parameters: {i: [0, 1, 2]}
    memory: 30GiB
    compute: 0.1
    profiles: [3g.40gb]
"""


@pytest.mark.slow
def test_drain_lets_running_runs_finish_and_starts_nothing_new(rig):
    r = rig(DRAIN)
    p = r.start("--drain")
    r.wait_for(lambda: list(r.states().values()).count("running") == 2, what="2 runs running")
    os.kill(p.pid, signal.SIGINT)
    assert p.wait(timeout=20) == 130
    assert sorted(r.states().values()) == ["queued", "succeeded", "succeeded"]
    assert "draining" in r.output(p)


@pytest.mark.slow
def test_detach_status_stop_and_a_changed_plan(rig):
    r = rig(DRAIN.replace("--steps 10", "--steps 100000"))  # runs until stopped, however loaded the machine
    res = r.cli("launch", str(r.plan_path), "--detach")
    assert res.returncode == 0, res.stderr
    assert "in the background" in res.stdout and "launcher.log" in res.stdout
    r.wait_for(lambda: list(r.states().values()).count("running") == 2, what="2 runs running")
    # a run shows on its device once its shim has attached it (just after the launcher records it)
    r.wait_for(lambda: len(SimHost(r.sim).read().processes) >= 2, what="2 runs attached to their devices")
    st = json.loads(r.cli("status", "--json").stdout)  # found under ./runs without PLAN
    la = st["runs"]["launcher"]
    assert la["alive"] is True and st["runs"]["counts"]["running"] == 2
    running = [x for x in st["runs"]["runs"] if x["state"] == "running"]
    attached = {p["pid"] for g in st["host"]["gpus"] for d in g["devices"] for p in d["processes"]}
    assert all(x["mig_uuid"] for x in running) and attached
    # a second launch while it runs: refused, naming the PID
    again = r.cli("launch", str(r.plan_path))
    assert again.returncode == 1 and f"PID {la['pid']}" in again.stderr
    # stop --now: SIGKILL at once, runs interrupted, launcher gone
    stop = r.cli("stop", str(r.plan_path), "--now", "--wait")
    assert stop.returncode == 0, stop.stderr
    assert set(r.states().values()) == {"interrupted", "queued"}
    assert "launcher done (exit 130)" in (r.state_dir / "launcher.log").read_text()
    none = r.cli("stop", str(r.plan_path))
    assert none.returncode == 1 and "no launcher is running" in none.stderr
    # the plan file changes: refused without --force; --force keeps the runs (ids unchanged)
    r.plan_path.write_text(r.plan_path.read_text() + "\n# edited\n")
    res = r.cli("launch", str(r.plan_path), "--dry-run")
    assert "different plan" in res.stdout
    bad = r.cli("launch", str(r.plan_path))
    assert bad.returncode == 1 and "different plan" in bad.stderr and "--force" in bad.stderr
    # SIGKILLed processes leave the simulated device once they are gone
    r.wait_for(lambda: not SimHost(r.sim).read().processes, what="the killed runs to leave their devices")


@pytest.mark.slow
def test_relaunch_never_reruns_finished_runs_and_force_keeps_them(rig):
    r = rig(SMALL)
    rc, out = r.launch()
    assert rc == 0, out
    done = sorted(r.ledger_lines())
    rc, out = r.launch()  # nothing left to do
    assert rc == 0 and "start " not in out
    r.plan_path.write_text(r.plan_path.read_text() + "# edited\n")
    rc, out = r.launch()
    assert rc == 1 and "different plan" in out
    rc, out = r.launch("--force")
    assert rc == 0 and "start " not in out, out
    assert sorted(r.ledger_lines()) == done
    assert {v["attempt"] for v in r.rows().values()} == {1}


@pytest.mark.slow
def test_run_plans_applies_and_launches_then_is_idempotent(tmp_path, monkeypatch):
    from migbench.backend.sim.host import init_host
    from tests.support.launchkit import PY, TOY_CMD

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True)
    sweep = tmp_path / "exp" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(SMALL.replace("{toy}", TOY_CMD))
    env = dict(os.environ, MIGBENCH_SIM=str(sim), MIGBENCH_POLL_S="0.05", HOME=str(tmp_path))
    run = [PY, "-m", "migbench", "run", str(sweep), "--fleet", "A100-SXM4-80GB:1", "--time-limit", "3"]
    import subprocess

    first = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (sweep.parent / "small.plan.yaml").exists() and "plan written to" in first.stdout
    assert first.stdout.count("done small") == 0 and first.stdout.count("succeeded in") == 3
    second = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "nothing to launch" in second.stdout and "applied" not in second.stdout
    assert "start " not in second.stdout
    fake_nvml.uninstall()


@pytest.mark.parametrize("detach", [False, True])
def test_a_launch_of_a_plan_in_a_directory_whose_name_is_not_utf8_is_refused_in_words(tmp_path, detach):
    """Guards: `run`, `launch` and `submit` of a plan in a directory whose name is not UTF-8 text
    died with "internal error (UnicodeEncodeError ...)" once the launcher recorded the plan's path
    in its launch state (`--detach`: a traceback from the detached launcher)."""
    import subprocess
    import sys
    from pathlib import Path

    from migbench.backend.sim.host import init_host
    from tests.support.cli import migbench

    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/d\xfe"))
    odd.mkdir(mode=0o700)
    (odd / "s.yaml").write_text("version: 1\nname: s\ncommand: 'true {x}'\nparameters: {x: [1]}\nmemory: 1GiB\nduration: 1s\n")
    env = {"MIGBENCH_SIM": str(tmp_path / "sim")}
    assert migbench("plan", "s.yaml", "-o", "s.plan.yaml", cwd=odd, env=env, keep_sim=True).returncode == 0
    apply = [sys.executable, "-m", "migbench", "apply", "s.plan.yaml", "--yes"]  # a process: its output holds the path's byte as it is
    p = subprocess.run(apply, cwd=odd, env=dict(os.environ, LC_ALL="C.UTF-8", **env), capture_output=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    r = migbench("launch", "s.plan.yaml", *(["--detach"] if detach else []), cwd=odd, env=env, keep_sim=True)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "not UTF-8 text" in r.stderr and "d\\xfe" in r.stderr and "internal error" not in out and "Traceback" not in out, out


def test_launch_detach_with_state_dir_says_commands_that_find_it(rig):
    """Guards: `launch --detach --state-dir DIR` said `follow it: migbench status PLAN --watch` and
    `stop it: migbench stop PLAN`, which look in the plan's own state directory: the one showed 'no
    launch yet', the other 'no launch state' while the launcher ran on."""
    import shlex

    r = rig(DRAIN.replace("--steps 10", "--steps 100000"))  # runs until stopped
    other = r.plan_path.parent / "elsewhere dir"
    assert r.cli("apply", str(r.plan_path), "--yes", "--state-dir", str(other)).returncode == 0
    res = r.cli("launch", str(r.plan_path), "--detach", "--state-dir", str(other))
    assert res.returncode == 0, res.stderr
    follow = next(line for line in res.stdout.splitlines() if "follow it:" in line).split("follow it:")[1].split("(or:")[0].strip()
    stop = next(line for line in res.stdout.splitlines() if "stop it:" in line).split("stop it:")[1].strip()
    assert follow == f"migbench status {shlex.quote(str(r.plan_path))} --watch --state-dir {shlex.quote(str(other))}", follow
    status = r.cli(*shlex.split(follow)[1:-3], *shlex.split(follow)[-2:])  # the same command, without --watch
    assert status.returncode == 0 and "no launch yet" not in status.stdout and str(other) in status.stdout, status.stdout
    res = r.cli(*shlex.split(stop)[1:], "--now", "--wait")
    assert res.returncode == 0 and "the launcher has exited" in res.stdout, res.stdout + res.stderr
