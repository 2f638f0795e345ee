"""The launcher with real processes on a simulated host: pinning, crash recovery, retries, OOM moves,
staged shutdown and resume, one launcher per plan. Runs are the toy trainer (CPU only)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from migbench.backend.select import read_host

pytestmark = pytest.mark.slow  # real launchers, shims and runs: seconds each

SWARM = """
version: 1
name: swarm
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: s
    command: {toy} --steps 3 --step-seconds 0.4 --memory {mem} --i {i}
    parameters: {i: [0, 1, 2, 3, 4, 5, 6, 7, 8], mem: [1GiB]}
    memory: 2GiB
    duration: 3s
    compute: 0.1
  - name: m
    command: {toy} --steps 3 --step-seconds 0.4 --memory 6GiB --hold-file {hold} --i {i}
    parameters: {i: [0, 1, 2]}
    memory: 7GiB
    duration: 3s
    compute: 0.1
"""


def _uuid_by_instance() -> dict[str, str]:
    """What the simulated host reports: instance key (gpu:profile@start) -> MIG device uuid."""
    out = {}
    for g in read_host().gpus:
        for gi in g.instances:
            for d in g.devices_of(gi.id):
                out[f"{g.index}:{gi.placement}"] = d.uuid
    return out


def test_swarm_every_run_pinned_to_its_instance(rig, tmp_path):
    hold = tmp_path / "release-m-runs"
    r = rig(SWARM.replace("{hold}", str(hold)))
    plan = r.plan
    assert len(plan.placed_runs()) > len(plan.instances), "the test needs more runs than instances"
    p = r.start(cli=True)
    # The m runs hold their 6 GiB until a sample has seen one of them (no race with the sampler
    # on a loaded machine: once in ~50 suites beside a busy loop no footprint was seen at all).
    r.wait_for(lambda: any((row["peak_mib"] or 0) > 0 for rid, row in r.rows().items() if rid.startswith("m-")), what="a sampled 6 GiB footprint")
    hold.touch()
    rc = p.wait(timeout=120)
    out = r.output(p)
    assert rc == 0, out
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"}
    assert Counter(line.split()[0] for line in r.ledger_lines()) == Counter({rid: 1 for rid in rows})
    host_uuid = _uuid_by_instance()
    for rid, row in rows.items():
        rec = r.toy_record(rid)
        env = rec["env"]
        assert env["CUDA_VISIBLE_DEVICES"] == host_uuid[row["instance"]] == row["mig_uuid"]
        assert "," not in env["CUDA_VISIBLE_DEVICES"]
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["MIGBENCH_RUN_ID"] == rid and env["MIGBENCH_ATTEMPT"] == "1"
        assert env["MIGBENCH_RUN_DIR"] == str(r.state_dir / rid)
        assert "MIGBENCH_RESUME" not in env
        assert rec["cwd"] == str(r.plan_path.parent)
        # logs layout: attempt dir, latest pointer, exit.json
        assert (r.state_dir / rid / "stdout.log").read_text().strip().endswith("done")
        ex = json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())
        assert ex["returncode"] == 0 and ex["oom"] is False
    # Peak memory from NVML: sampling is periodic, so a run sampled only before the trainer declared
    # its footprint shows the shim's 0 MiB attach; otherwise exactly its declared footprint, never
    # anything else.
    peaks = {rid: row["peak_mib"] for rid, row in rows.items() if row["peak_mib"] is not None}
    assert peaks, "no run was sampled"
    for rid, peak in peaks.items():
        assert peak in (0, 6144 if rid.startswith("m-") else 1024), (rid, peak)
    assert any(p > 0 for p in peaks.values())
    # status: runs and host in one JSON document
    st = r.cli("status", str(r.plan_path), "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["runs"]["counts"]["succeeded"] == len(rows) and doc["host"]["simulated"] is True
    one = next(iter(rows))
    logs = r.cli("logs", one, str(r.plan_path))
    assert logs.returncode == 0 and logs.stdout.strip().endswith("done")


KILL = """
version: 1
name: crashy
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: k
    command: {toy} --steps 4 --step-seconds 0.15 --memory 1GiB --i {i}
    parameters: {i: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    memory: 9GiB
    duration: 3s
    compute: 0.1
"""


def _finished_exactly_once(r) -> None:  # type: ignore[no-untyped-def]
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"}, r.states()
    done = Counter(line.split()[0] for line in r.ledger_lines())
    assert done == Counter({rid: 1 for rid in rows}), done
    for rid, row in rows.items():
        # a re-queued start resumes exactly when an earlier attempt's run started (never ran: no resume)
        ran_before = any((r.state_dir / rid / f"attempt-{k}" / "child.json").exists() for k in range(1, row["attempt"]))
        assert r.toy_record(rid, row["attempt"])["env"].get("MIGBENCH_RESUME") == ("1" if ran_before else None), rid


def test_kill9_at_several_points_then_restart_finishes_each_run_once(rig):
    r = rig(KILL)
    n = len(r.plan.placed_runs())
    # 1. right after start: the first runs are up
    p = r.start()
    r.wait_for(lambda: any(s == "running" for s in r.states().values()), what="a run to start")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # 2. mid-swarm, on a restarted launcher that adopted the survivors
    p = r.start()
    r.wait_for(lambda: 2 <= sum(s == "succeeded" for s in r.states().values()) <= n - 4, what="mid-swarm")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # 3. while the last runs finish
    p = r.start()
    r.wait_for(lambda: sum(s == "succeeded" for s in r.states().values()) >= n - 2, what="the last runs")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    rc, out = r.launch()
    assert rc == 0, out
    _finished_exactly_once(r)


@pytest.mark.parametrize("point", ["before-spawn", "after-spawn"])
def test_launcher_dying_inside_a_start_recovers(rig, point):
    """Guards: a crash between committing "starting" and spawning the shim made the next start
    attempt 2 with MIGBENCH_RESUME=1 although attempt 1 never ran. The two windows kill -9 rarely
    hits: a start committed with no shim yet, and a shim spawned whose PID is not recorded yet
    (found again by its command line)."""
    r = rig(KILL.replace("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "[0, 1, 2]"))
    rc, out = r.launch(extra_env={"MIGBENCH_LAUNCH_CRASH_AT": point})
    assert rc == 99, out
    assert "starting" in r.states().values()
    rc, out = r.launch()
    assert rc == 0, out
    _finished_exactly_once(r)
    starts = {row["id"]: row["attempt"] for row in r.rows().values()}
    if point == "after-spawn":  # the one shim spawned is adopted; the others never started
        assert "adopted 1 running run" in out and sorted(starts.values()) == [1, 2, 2]
    else:
        assert sorted(starts.values()) == [2, 2, 2]


RETRY = """
version: 1
name: retry
launch: {retries: 2, backoff: 0.1s, stop_grace: 5, flapping_max: 50}
groups:
  - name: ok
    command: {toy} --steps 3 --step-seconds 0.1 --memory 1GiB --i {i}
    parameters: {i: [0, 1, 2]}
    memory: 2GiB
    duration: 3s
    compute: 0.1
  - name: bad
    command: {toy} --steps 4 --step-seconds 0.1 --crash-at 3 --fail-attempts 1 --memory 1GiB
    parameters: {i: [0]}
    memory: 2GiB
    duration: 3s
    compute: 0.1
  - name: hang
    command: {toy} --steps 100 --step-seconds 0.1
    parameters: {i: [0]}
    memory: 2GiB
    compute: 0.1
    timeout: 1s
    retries: 0
"""


def test_crashing_run_is_retried_with_resume_and_others_untouched(rig):
    r = rig(RETRY)
    rc, out = r.launch()
    assert rc == 1, out  # the hanging run times out
    rows = r.rows()
    bad = next(k for k in rows if k.startswith("bad-"))
    assert rows[bad]["state"] == "succeeded" and rows[bad]["attempt"] == 2 and rows[bad]["failures"] == 1
    first = json.loads((r.state_dir / bad / "attempt-1" / "exit.json").read_text())
    assert first["returncode"] == 1 and not first["oom"]
    assert "RuntimeError: toy crash at step 3" in (r.state_dir / bad / "attempt-1" / "stderr.log").read_text()
    env2 = r.toy_record(bad, 2)["env"]
    assert env2["MIGBENCH_ATTEMPT"] == "2" and env2["MIGBENCH_RESUME"] == "1"
    assert "resumed from step 2" in (r.state_dir / bad / "stdout.log").read_text()  # latest attempt
    hang = next(k for k in rows if k.startswith("hang-"))
    assert rows[hang]["state"] == "failed" and rows[hang]["attempt"] == 1 and "timed out after 1 s" in rows[hang]["last_error"]
    assert json.loads((r.state_dir / hang / "attempt-1" / "exit.json").read_text())["timed_out"] is True
    for rid, row in rows.items():
        if rid not in (bad, hang):
            assert row["state"] == "succeeded" and row["attempt"] == 1 and row["failures"] == 0
            assert "MIGBENCH_RESUME" not in r.toy_record(rid)["env"]
    assert sorted(a["outcome"] for a in r.attempts() if a["run_id"] == bad) == ["failed", "succeeded"]


OOM = """
version: 1
name: oom
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: grows
    command: {toy} --steps 2 --step-seconds 0.1 --memory 0
    parameters: {i: [0]}
    memory: 5GiB
    duration: 3s
    compute: 0.1
  - name: huge
    command: {toy} --steps 2 --step-seconds 0.1 --memory 100GiB
    parameters: {i: [0]}
    memory: 5GiB
    duration: 3s
    compute: 0.1
  - name: big
    command: {toy} --steps 2 --step-seconds 0.1 --memory 20GiB
    parameters: {i: [0]}
    memory: 30GiB
    duration: 3s
    compute: 0.3
"""


def test_oom_moves_to_a_larger_instance_or_is_reported(rig):
    r = rig(OOM)
    plan = r.plan
    mem = {i.key: i.memory_mib for i in plan.instances}
    # wherever the planner put `grows`, make it need 1 GiB more than that instance has
    runs = []
    for run in plan.runs:
        if run.id.startswith("grows-"):
            home = mem[run.instance_key]
            assert any(m > home for m in mem.values()), "the test needs a larger instance in the plan"
            argv = list(run.argv)
            argv[argv.index("--memory") + 1] = str(home + 1024)
            run = dataclasses.replace(run, argv=tuple(argv))
        runs.append(run)
    plan.runs = runs
    plan.save(r.plan_path)
    rc, out = r.launch()
    assert rc == 1, out  # the huge run cannot fit anywhere
    rows = r.rows()
    grows = next(v for k, v in rows.items() if k.startswith("grows-"))
    huge = next(v for k, v in rows.items() if k.startswith("huge-"))
    assert grows["state"] == "succeeded" and grows["attempt"] == 2
    assert mem[grows["instance"]] > mem[grows["home"]] >= 5 * 1024
    first = [a for a in r.attempts() if a["run_id"] == grows["id"] and a["attempt"] == 1][0]
    assert first["outcome"] == "oom" and first["instance"] == grows["home"]
    assert huge["state"] == "oom"
    largest = max(mem.values())
    assert huge["instance"] in [k for k, v in mem.items() if v == largest]
    assert f"{largest} MiB instance" in huge["last_error"] and "no larger instance" in huge["last_error"]
    st = json.loads(r.cli("status", str(r.plan_path), "--json").stdout)
    assert st["runs"]["counts"]["oom"] == 1


SLOW = """
version: 1
name: slow
launch: {retries: 0, backoff: 0, stop_grace: 10, flapping_max: 50}
groups:
  - name: w
    command: {toy} --steps 20 --step-seconds 0.1 --memory 1GiB --i {i}
    parameters: {i: [0, 1, 2, 3, 4]}
    profiles: [2g.20gb]
    memory: 9GiB
    duration: 3s
    compute: 0.1
"""


def test_ctrl_c_interrupts_runs_and_the_next_launch_resumes_them(rig):
    r = rig(SLOW)
    p = r.start(cli=True)
    busy = len({run.instance_key for run in r.plan.placed_runs()})
    assert len(r.plan.placed_runs()) > busy
    r.wait_for(lambda: sum(s == "running" for s in r.states().values()) == busy, what="every instance busy")
    first_run = next(k for k, v in r.rows().items() if v["state"] == "running")
    r.wait_for(lambda: (r.state_dir / first_run / "checkpoint.json").exists(), what="a checkpoint")
    os.kill(p.pid, signal.SIGINT)
    assert p.wait(timeout=20) == 130, r.output(p)
    states = r.states()
    assert "running" not in states.values() and "starting" not in states.values()
    interrupted = [k for k, v in states.items() if v == "interrupted"]
    assert len(interrupted) == busy and set(states.values()) == {"interrupted", "queued"}
    assert all(a["outcome"] == "interrupted" for a in r.attempts())
    lr = r.launcher_row()
    assert lr["state"] == "exited" and lr["exit_code"] == 130 and "SIGINT" in lr["stop_reason"]
    rc, out = r.launch()
    assert rc == 0, out
    _finished_exactly_once(r)
    rec = r.toy_record(first_run, 2)
    assert rec["env"]["MIGBENCH_RESUME"] == "1"
    assert "resumed from step" in (r.state_dir / first_run / "attempt-2" / "stdout.log").read_text()


STUBBORN = """
version: 1
name: stubborn
launch: {retries: 0, backoff: 0, stop_grace: 60, flapping_max: 50}
groups:
  - name: t
    shell: true
    command: trap '' TERM; echo up; sleep 30 & wait; sleep 30
    parameters: {i: [0, 1]}
    memory: 9GiB
    compute: 0.1
"""


def test_second_ctrl_c_kills_at_once_and_two_launchers_cannot_run(rig):
    r = rig(STUBBORN)
    p = r.start(cli=True)
    r.wait_for(lambda: list(r.states().values()).count("running") == 2, what="2 runs running")
    # each run ignores SIGTERM from its first line on: wait for the line it prints after its trap
    r.wait_for(lambda: all("up" in _text(r.state_dir / rid / "attempt-1" / "stdout.log") for rid in r.rows()), what="the runs' traps set")
    # one launcher per plan: a second one fails at once, naming the first
    rc, out = r.launch(timeout=20)
    assert rc == 1 and f"PID {p.pid}" in out and "already running" in out
    os.kill(p.pid, signal.SIGINT)
    time.sleep(0.5)
    assert p.poll() is None  # the runs ignore SIGTERM; the grace is 60 s
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    assert p.wait(timeout=10) == 130
    assert time.monotonic() - t0 < 5
    assert set(r.states().values()) == {"interrupted"}
    for row in r.rows().values():
        assert json.loads((r.state_dir / row["id"] / "attempt-1" / "exit.json").read_text())["signal"] == signal.SIGKILL


def _text(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""
