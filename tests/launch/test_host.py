"""One host, several launches: one launch per plan whatever its state directory, no instance bound
to two launches, no apply of another plan under a live launch, and a start whose MIG device is gone
held back without using an attempt (the host's launch register, `migbench.apply.bookings`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from migbench.apply import HostLock
from migbench.apply.bookings import Register
from migbench.backend.sim.host import SimHost
from migbench.plan import Plan
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.sweep import load_sweep
from tests.support.launchkit import Rig, db_query, db_runs
from tests.support.simhelp import sim_backend

pytestmark = pytest.mark.slow  # real launchers, shims and runs: seconds each

BLOCKING = """
version: 1
name: {name}
launch: {{retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}}
groups:
  - name: w
    shell: true
    command: "while [ ! -e {release} ]; do sleep 0.05; done"
    parameters: {{i: [0, 1]}}
    memory: 9GiB
    compute: 0.1
"""


def _blocking(tmp: Path, name: str = "a") -> str:
    return BLOCKING.format(name=name, release=tmp / "release")


def _running(r: Rig, n: int) -> bool:
    return sum(1 for row in r.rows().values() if row["state"] == "running") == n


def _plan_beside(r: Rig, text: str, gpus: int = 1) -> Path:
    """Plan the sweep `text` (its own name) for the rig's host, in the rig's work directory."""
    f = r.plan_path.parent / "other.yaml"
    f.write_text(text)
    sweep = load_sweep(f)
    plan = make_plan(sweep, build_fleet([FleetSpec("A100-SXM4-80GB", gpus)]), SolveOptions(time_limit_s=5.0))
    out = r.plan_path.parent / f"{sweep.name}.plan.yaml"
    plan.save(out)
    return out


def test_one_plan_runs_once_per_host_whatever_the_state_dir(rig, tmp_path):
    """Guards: the launcher lock was per state dir, so `launch p.yaml` and `launch p.yaml --state-dir
    other` (and `run` of its sweep with another --state-dir) ran every run twice on the same instances."""
    r = rig(_blocking(tmp_path))
    p = r.start(cli=True)
    r.wait_for(lambda: _running(r, 2), what="both runs running")
    other = tmp_path / "other"
    assert r.cli("apply", str(r.plan_path), "--state-dir", str(other)).returncode == 0  # the layout is there: it binds
    rc, out = r.launch("--state-dir", str(other), cli=True, timeout=30)
    assert rc == 1 and "already running" in out and f"PID {p.pid}" in out and str(r.state_dir) in out, out
    assert not (other / "launch.db").exists()  # refused before its state was touched
    copy = tmp_path / "copy.plan.yaml"  # the same plan under another name
    copy.write_bytes(r.plan_path.read_bytes())
    assert r.cli("apply", str(copy), "--state-dir", str(tmp_path / "copy")).returncode == 0
    res = r.cli("launch", str(copy), "--state-dir", str(tmp_path / "copy"))
    assert res.returncode == 1 and f"the same plan, as {r.plan_path}" in res.stderr, res.stdout + res.stderr
    res = r.cli("run", str(r.plan_path.parent / "sweep.yaml"), "--state-dir", str(tmp_path / "third"), "--time-limit", "2")
    assert res.returncode == 1 and "already running" in res.stderr and f"PID {p.pid}" in res.stderr, res.stdout + res.stderr
    assert not (tmp_path / "third").exists()
    (tmp_path / "release").touch()
    assert p.wait(timeout=30) == 0
    assert [e for e in Register(r.sim / "launches").entries()] == []  # its entry went with it


def test_a_killed_launchers_runs_keep_the_plan_until_its_state_dir_adopts_them(rig, tmp_path):
    """Guards: after kill -9 of a launcher (its runs go on), a launch of the plan from another state
    dir ran every run again beside them. Its entry stays live while its runs do: another state dir
    is refused, the launch from its own state dir adopts the runs and replaces the entry."""
    r = rig(_blocking(tmp_path))
    p = r.start(cli=True)
    r.wait_for(lambda: _running(r, 2), what="both runs running")
    reg = r.sim / "launches"
    r.wait_for(lambda: len(json.loads(next(reg.glob("*.json")).read_text())["processes"]) >= 2, what="the runs' processes recorded")
    assert [json.loads(f.read_text())["pid"] for f in reg.glob("*.json")] == [p.pid]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    other = tmp_path / "other"
    assert r.cli("apply", str(r.plan_path), "--state-dir", str(other)).returncode == 0
    rc, out = r.launch("--state-dir", str(other), cli=True, timeout=30)
    assert rc == 1 and f"its launcher (PID {p.pid}) is gone but its runs still run" in out and f"--state-dir {r.state_dir}" in out, out
    q = r.start(cli=True)
    r.wait_for(lambda: [json.loads(f.read_text())["pid"] for f in reg.glob("*.json")] == [q.pid], what="the stale entry replaced")
    (tmp_path / "release").touch()
    assert q.wait(timeout=30) == 0, r.output(q)


def _attempts(db: Path) -> list[dict]:
    return db_query(db, "SELECT * FROM attempts ORDER BY run_id, attempt")


def _b_rows(db: Path) -> dict[str, dict]:
    return db_runs(db)


def test_a_second_sweep_waits_for_the_instances_of_a_live_launch_and_never_runs_beside_it(rig, tmp_path):
    """Guards: `run B.yaml` of a sweep shaped like a running sweep A found A's layout applied, bound
    the same MIG uuids and ran its runs on A's instances at the same time (issue 19); and then (issue
    21) B was refused outright although its runs could run once A let the instances go."""
    r = rig(_blocking(tmp_path))
    p = r.start(cli=True)
    r.wait_for(lambda: _running(r, 2), what="A's runs running")
    b = r.plan_path.parent / "b.yaml"
    b.write_text(_blocking(tmp_path, "b"))
    res = r.cli("run", str(b), "--time-limit", "2", "--detach")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"planned beside 1 other live launch(es) on this host (the launch of {r.plan_path}" in out, out
    bdb = r.plan_path.parent / "runs" / "b" / "launch.db"
    # B's runs are queued on A's instances (the whole GPU is A's), each saying whom it waits for
    r.wait_for(lambda: len(_b_rows(bdb)) == 2 and all("bound to the launch of" in (x["last_error"] or "") for x in _b_rows(bdb).values()), what="B waiting")
    assert {x["state"] for x in _b_rows(bdb).values()} == {"queued"} and _running(r, 2) and p.poll() is None
    bplan = r.plan_path.parent / "b.plan.yaml"
    assert {i.key for i in Plan.load(bplan).instances if i.runs} == {i.key for i in r.plan.instances if i.runs}  # queued behind A's
    # the plain commands too: the same plan twice is refused; apply leaves A's instances alone
    res = r.cli("launch", str(bplan))
    assert res.returncode == 1 and "is already running on this host" in res.stderr, res.stdout + res.stderr
    (tmp_path / "release").touch()
    assert p.wait(timeout=60) == 0, r.output(p)
    r.wait_for(lambda: {x["state"] for x in _b_rows(bdb).values()} == {"succeeded"}, timeout=60, what="B's runs done")
    a_end = {x["instance"]: x["end_at"] for x in r.attempts()}
    for att in _attempts(bdb):  # no B run started on an instance before A's run there ended
        assert att["start_at"] >= a_end[att["instance"]], (att, a_end)


TWO_GPUS = """
version: 1
name: a
launch: {{retries: 1, backoff: 3600, stop_grace: 5, flapping_max: 50}}
groups:
  - name: hold
    shell: true
    command: "while [ ! -e {release} ]; do sleep 0.05; done"
    memory: 60GiB
    compute: 1.0
  - name: retry
    shell: true
    command: "exit 3"
    memory: 60GiB
    compute: 1.0
"""

SMALL_B = """
version: 1
name: b
groups:
  - name: s
    command: "true {i}"
    parameters: {i: [0, 1, 2, 3, 4, 5, 6]}
    memory: 9GiB
    compute: 0.1
"""


def test_apply_of_another_plan_leaves_an_instance_with_a_queued_retry(rig, tmp_path):
    """Guards: while plan A's launcher ran, `apply B.yaml --gpus 1` re-cut the GPU whose instance was
    idle but held A's queued retry, which then started on a MIG uuid that no longer existed."""
    r = rig(TWO_GPUS.format(release=tmp_path / "release"), gpus=2)
    p = r.start(cli=True)

    def waiting_retry() -> bool:
        rows = r.rows()
        return any(x["state"] == "queued" and x["attempt"] == 1 and x["not_before"] for x in rows.values()) and _running(r, 1)

    r.wait_for(waiting_retry, what="one run running, the other waiting out its backoff")
    retry = next(x for x in r.rows().values() if x["state"] == "queued")
    gpu = int(retry["queue"].split(":")[0])

    def layout() -> list[tuple[str, list[str]]]:
        st = sim_backend(r.sim).reader.read().gpu(gpu)
        return [(str(gi.placement), [d.uuid for d in st.devices_of(gi.id)]) for gi in st.instances]

    before = layout()
    bplan = _plan_beside(r, SMALL_B, gpus=2)
    res = r.cli("apply", str(bplan), "--gpus", str(gpu), "--yes")
    err = res.stdout + res.stderr
    assert res.returncode == 1 and "bound to the launch of" in err and str(r.plan_path) in err and f"PID {p.pid}" in err, err
    assert retry["queue"] in err and "nothing was changed" in err and "migbench stop" in err
    assert layout() == before  # (host.json itself may change: the simulator forgets ended processes)
    assert r.cli("apply", str(bplan), "--gpus", str(gpu), "--yes", "--dry-run").returncode == 1  # the dry run says so too
    assert p.poll() is None


GONE = """
version: 1
name: gone
launch: {{retries: 1, backoff: 0, stop_grace: 5, flapping_max: 50}}
groups:
  - name: g
    command: sh {script}
    memory: 60GiB
    compute: 1.0
"""


def test_a_start_whose_device_is_gone_is_held_back_without_using_an_attempt(rig, tmp_path):
    """Guards: a retry started on a MIG uuid that no longer existed (its GPU re-cut behind the
    launcher's back) and burned its attempts; the launcher now checks the device before each start."""
    script = tmp_path / "first-fails.sh"  # attempt 1 waits for `go`, then fails; attempt 2 would succeed
    script.write_text(f'test "$MIGBENCH_ATTEMPT" != 1 || {{ while [ ! -e {tmp_path / "go"} ]; do sleep 0.05; done; exit 3; }}\n')
    r = rig(GONE.format(script=script))
    p = r.start(cli=True)
    r.wait_for(lambda: _running(r, 1), what="attempt 1 running")
    (row,) = r.rows().values()
    lock = HostLock(r.sim / "apply.lock").take()  # as an apply would: the launcher cannot start while it is held
    try:
        (tmp_path / "go").touch()
        r.wait_for(lambda: next(iter(r.rows().values()))["state"] == "queued", what="attempt 1 failed, the retry queued")
        host = SimHost(r.sim)  # its GPU re-cut behind the launcher's back (nvidia-smi by hand)
        st = sim_backend(r.sim).reader.read().gpu(0)
        gi = next(g for g in st.instances if str(g.placement) == row["queue"].split(":", 1)[1])
        for ci in list(gi.compute_instances):
            host.destroy_compute_instance(0, gi.id, ci.id)
        host.destroy_gpu_instance(0, gi.id)
    finally:
        lock.release()
    assert p.wait(timeout=30) == 1
    out = r.output(p)
    (after,) = r.rows().values()
    assert after["state"] == "queued" and after["attempt"] == 1, after
    assert "gone from the host" in (after["last_error"] or "") and row["mig_uuid"] in after["last_error"]
    assert [a["attempt"] for a in r.attempts()] == [1]
    assert "not started" in out and "gone from the host" in out
    status = r.cli("status", "--all")
    assert "held back" in status.stdout, status.stdout


def test_a_register_others_may_write_is_not_used_and_the_launch_goes_on(rig, tmp_path):
    """A register directory other users may write is not trusted: the launcher says so and runs
    without it (as where a non-root launcher cannot use root's register)."""
    r = rig(_blocking(tmp_path))
    reg = tmp_path / "open-register"
    reg.mkdir()
    reg.chmod(0o777)
    (tmp_path / "release").touch()
    rc, out = r.launch(cli=True, extra_env={"MIGBENCH_LAUNCHES_DIR": str(reg)})
    assert rc == 0 and "other users may write into it" in out and "not kept apart" in out, out
    assert list(reg.iterdir()) == []


HELD = """
version: 1
name: held
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: q
    command: {toy} --steps 2 --step-seconds 0.05 --memory 1GiB --hold-file {hold} --i {i}
    parameters: {i: [0, 1]}
    memory: 9GiB
    compute: 0.1
"""


@pytest.mark.slow
def test_a_launch_the_register_does_not_list_is_still_seen_by_the_processes_on_its_devices(rig, tmp_path):
    """Regression: with the launch register bypassed (a second shell with another
    MIGBENCH_LAUNCHES_DIR, or root's register entries deleted while runs live), `launch` of the same
    plan from another state dir started every run a second time, at once, on the same instances. A
    launch now refuses devices that run processes which are not runs of its own state directory."""
    hold = tmp_path / "release"
    r = rig(HELD.replace("{hold}", str(hold)))
    p1 = r.start(extra_env={"MIGBENCH_LAUNCHES_DIR": str(tmp_path / "reg1")})
    r.wait_for(lambda: sorted(r.states().values()) == ["running", "running"], what="both runs at work")
    other = tmp_path / "other-state"
    res = r.cli("apply", str(r.plan_path), "--state-dir", str(other), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr  # the layout is there already: nothing changes
    p2 = r.start("--state-dir", str(other), extra_env={"MIGBENCH_LAUNCHES_DIR": str(tmp_path / "reg2")})
    assert p2.wait(timeout=120) == 1
    out = r.output(p2)
    assert "in use by processes that are not runs of this launch" in out and "toy_trainer.py" in out, out
    hold.touch()
    assert p1.wait(timeout=120) == 0, r.output(p1)
    assert sorted(line.split()[0] for line in r.ledger_lines()) == sorted(x.id for x in r.plan.runs)
