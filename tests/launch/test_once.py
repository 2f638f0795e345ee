"""Exactly once when migbench's own processes die (issue 19 items 1-4): an adopted shim killed, the
launcher and every shim killed together (`pkill -9 -f migbench`), a shim killed in its final
moments, the state directory deleted after runs finished. Real launchers, shims, waiters and runs;
each run is held at a gate file until the test lets it finish, so no wait depends on speed."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.launch.test_trust import QUICK
from tests.support.launchkit import Rig, gone, pkill_migbench

pytestmark = pytest.mark.slow  # real launchers, shims and runs: seconds each

GATED = """
version: 1
name: gated
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: g
    shell: true
    command: while [ ! -e "$TOY_LEDGER.go-$MIGBENCH_RUN_ID" ]; do sleep 0.02; done; echo "$MIGBENCH_RUN_ID $MIGBENCH_ATTEMPT resume=${MIGBENCH_RESUME:-0}" >> "$TOY_LEDGER"  # {i}
    parameters: {i: [0, 1, 2]}
    memory: 9GiB
    compute: 0.1
"""


def _done(r: Rig) -> Counter:
    return Counter(line.split()[0] for line in r.ledger_lines())


def _go(r: Rig, *rids: str) -> None:
    for rid in rids:
        Path(f"{r.ledger}.go-{rid}").touch()


def _started(r: Rig, rid: str, attempt: int = 1) -> bool:
    return (r.state_dir / rid / f"attempt-{attempt}" / "started").exists()


def _all_at_work(r: Rig) -> bool:
    rows = r.rows()
    return bool(rows) and all(v["state"] == "running" and v["shim_pid"] and _started(r, k) for k, v in rows.items())


def _child(r: Rig, rid: str, attempt: int = 1) -> dict:
    return json.loads((r.state_dir / rid / f"attempt-{attempt}" / "child.json").read_text())


def _pkill_migbench(r: Rig) -> list[int]:
    """`pkill -9 -f migbench`, limited to this rig's processes (their MIGBENCH_SIM names its host)."""
    return pkill_migbench(r.sim, r.procs)


def test_a_killed_adopted_shim_never_starts_a_second_copy_of_its_run(rig):
    """Guards issue 19 item 1: kill -9 of an adopted shim re-queued its run ("shim disappeared
    without a result") and started attempt 2 while attempt 1 still ran; both finished."""
    r = rig(GATED)
    p1 = r.start()
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    os.kill(p1.pid, signal.SIGKILL)
    p1.wait()
    p2 = r.start()
    r.wait_for(lambda: "resuming:" in r.output(p2), what="the second launcher adopting the runs")
    rid = next(iter(r.rows()))
    os.kill(r.rows()[rid]["shim_pid"], signal.SIGKILL)
    r.wait_for(lambda: f"{rid}: attempt 1's shim" in r.output(p2), what="the launcher noticing the shim's death")
    _go(r, *r.rows())
    assert p2.wait(timeout=60) == 0, r.output(p2)
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"}, r.output(p2)
    assert _done(r) == Counter({k: 1 for k in rows}), r.ledger_lines()
    assert rows[rid]["attempt"] == 1 and not (r.state_dir / rid / "attempt-2").exists()
    assert json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())["recorded_by"] == "launcher"


def test_launcher_and_shims_killed_together_runs_are_adopted_and_finished_ones_kept(rig):
    """Guards issue 19 item 2: after `pkill -9 -f migbench` a run that finished while nothing of
    migbench lived was run again, and runs still working were killed and restarted."""
    r = rig(GATED)
    r.start()
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    rids = list(r.rows())
    waiters = {rid: _child(r, rid).get("waiter_pid") for rid in rids}
    killed = _pkill_migbench(r)
    assert len(killed) == 1 + len(rids), killed  # the launcher and every shim
    # the runs' parents live on, and no `pkill -f migbench` matches them (asserted at the end)
    survived = {
        rid: bool(w) and not gone(w) and b"migbench" not in Path(f"/proc/{w}/cmdline").read_bytes() and Path(f"/proc/{w}/comm").read_text().strip() == "mb-wait"
        for rid, w in waiters.items()
    }
    first = rids[0]
    _go(r, first)  # it finishes while nothing of migbench runs
    r.wait_for(lambda: first in _done(r) and gone(_child(r, first)["pid"]), what="the run's end")
    p2 = r.start()
    r.wait_for(lambda: "resuming:" in r.output(p2), what="the second launcher resuming")
    _go(r, *rids[1:])
    assert p2.wait(timeout=60) == 0, r.output(p2)
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"}, r.output(p2)
    assert sorted(r.ledger_lines()) == sorted(f"{k} 1 resume=0" for k in rids), r.ledger_lines()
    assert all(v["attempt"] == 1 for v in rows.values())
    assert all(survived.values()), survived
    assert "waiting for 2 run(s) whose shim is gone, took 1 result(s)" in r.output(p2), r.output(p2)
    assert (r.state_dir / first / "attempt-1" / "wait.json").exists()


def test_a_run_whose_waiter_died_too_is_unknown_never_rerun_and_resumable_on_request(rig):
    """Guards issue 19 item 2 (its last case): with the run's waiter killed as well, or the run's
    directory deleted while nothing of migbench ran, the run's end has no record: it was re-queued
    and run again silently; now it is `unknown`, shown by status, and runs again (with
    MIGBENCH_RESUME=1) only with `launch --resume-unknown`."""
    r = rig(GATED)
    r.start()
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    rids = list(r.rows())
    first = rids[0]
    _pkill_migbench(r)
    child = _child(r, first)
    os.kill(child["waiter_pid"], signal.SIGKILL)
    r.wait_for(lambda: gone(child["waiter_pid"]), what="the waiter gone")
    _go(r, first)
    r.wait_for(lambda: gone(child["pid"]), what="the unrecorded run's end")
    second = rids[1]  # its record deleted with its directory while nothing of migbench runs
    pid2 = _child(r, second)["pid"]
    _go(r, second)
    r.wait_for(lambda: second in _done(r) and gone(pid2), what="the second run's end")
    shutil.rmtree(r.state_dir / second)
    _go(r, *rids[2:])
    rc, out = r.launch()
    assert rc == 1 and f"{first}: attempt 1: outcome unknown" in out and "--resume-unknown" in out, out
    assert f"{second}: attempt 1: outcome unknown (its attempt directory" in out, out
    states = r.states()
    assert states[first] == states[second] == "unknown" and all(states[k] == "succeeded" for k in rids[2:]), states
    assert _done(r) == Counter({k: 1 for k in rids}), r.ledger_lines()
    st = r.cli("status", str(r.plan_path), "--json")
    doc = json.loads(st.stdout)["runs"]
    assert doc["counts"]["unknown"] == 2 and "--resume-unknown" in next(x for x in doc["runs"] if x["id"] == first)["last_error"]
    assert "unknown" in r.cli("status", str(r.plan_path)).stdout
    rc, out = r.launch()  # a plain launch leaves it alone
    assert rc == 1 and _done(r) == Counter({k: 1 for k in rids}), out
    rc, out = r.launch("--resume-unknown", cli=True)
    assert rc == 0, out
    assert r.states()[first] == r.states()[second] == "succeeded", out
    assert {f"{first} 2 resume=1", f"{second} 2 resume=1"} <= set(r.ledger_lines()), r.ledger_lines()


def test_a_shim_killed_after_its_run_exited_before_exit_json_keeps_the_outcome(rig):
    """Guards issue 19 item 3: a shim killed after its run exited, before it wrote exit.json,
    made the finished run a failed attempt (with retries: 0, failed although it succeeded)."""
    r = rig(GATED)
    p = r.start(extra_env={"MIGBENCH_SHIM_TEST_PAUSE": "after-exit"})
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    shims = {rid: row["shim_pid"] for rid, row in r.rows().items()}
    _go(r, *shims)
    for rid, pid in shims.items():  # each shim stops itself at that moment; kill it there
        r.wait_for(lambda pid=pid: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what=f"{rid}'s shim at its final moment")
        assert not (r.state_dir / rid / "attempt-1" / "exit.json").exists()
        os.kill(pid, signal.SIGKILL)
    assert p.wait(timeout=60) == 0, r.output(p)
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"} and all(v["attempt"] == 1 for v in rows.values()), r.output(p)
    assert _done(r) == Counter({k: 1 for k in rows})
    for rid in rows:
        doc = json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())
        assert doc["returncode"] == 0 and doc["recorded_by"] == "launcher"


def test_a_state_dir_deleted_after_runs_finished_does_not_run_them_again(rig):
    """Guards issue 19 item 4: the state dir deleted after the runs finished, before the launcher
    recorded them: they were re-queued as "vanished before the run started" although their shims
    exited 0, and the next launch ran all of them again."""
    r = rig(GATED)
    p = r.start()
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    shims = [row["shim_pid"] for row in r.rows().values()]
    bindings = (r.state_dir / "bindings.json").read_bytes()
    os.kill(p.pid, signal.SIGSTOP)
    try:
        _go(r, *r.rows())
        r.wait_for(lambda: all(gone(pid) for pid in shims), what="every shim done")
        shutil.rmtree(r.state_dir)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    rc = p.wait(timeout=60)
    out = r.output(p)
    assert rc == 1 and "deleted or replaced while the launcher ran" in out and "vanished" not in out, out
    (r.state_dir / "bindings.json").write_bytes(bindings)  # as `migbench apply` again would
    rc, out = r.launch()
    assert rc == 0, out
    assert {v["state"] for v in r.rows().values()} == {"succeeded"}, out
    assert _done(r) == Counter({k: 1 for k in r.rows()}), r.ledger_lines()


def test_a_killed_waiter_under_a_live_launcher_loses_nothing(rig):
    """With the launcher alive, `kill -9` of a run's waiter alone loses nothing: the run is
    re-parented to the launcher (its subreaper), which waits for it and records its outcome."""
    r = rig(GATED)
    p = r.start()
    r.wait_for(lambda: _all_at_work(r), what="every run at work")
    rid = next(iter(r.rows()))
    os.kill(_child(r, rid)["waiter_pid"], signal.SIGKILL)
    r.wait_for(lambda: f"{rid}: attempt 1's shim died" in r.output(p), what="the launcher taking the run over")
    _go(r, *r.rows())
    assert p.wait(timeout=60) == 0, r.output(p)
    rows = r.rows()
    assert {v["state"] for v in rows.values()} == {"succeeded"} and rows[rid]["attempt"] == 1, r.output(p)
    assert _done(r) == Counter({k: 1 for k in rows})
    assert json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())["recorded_by"] == "launcher"


QUICK2 = QUICK  # two quick runs, as the trust tests use


def test_an_attempt_dir_without_cmd_json_is_a_run_that_never_started(rig):
    """Regression: a launcher killed between making `attempt-1/` and writing its `cmd.json` (the
    shim is started only after) left a run marked `unknown` ("its attempt directory was deleted"),
    never run, exit 1. Such an attempt never started: the run is started, once."""
    r = rig(QUICK2)
    rid = sorted(x.id for x in r.plan.runs)[0]
    adir = r.state_dir / rid / "attempt-1"
    adir.mkdir(parents=True)
    for d in (adir.parent, adir):
        os.chmod(d, 0o700)
    rc, out = r.launch()
    assert rc == 0 and "outcome unknown" not in out and "0 outcome(s) unknown" in out, out
    assert set(r.states().values()) == {"succeeded"}, r.states()
    assert _done(r) == Counter({x.id: 1 for x in r.plan.runs}), r.ledger_lines()


def test_a_waiter_killed_before_it_became_mb_wait_costs_no_attempt(rig):
    """Regression: the waiter still carries the shim's command line between its fork and its exec of
    `mb-wait`; `pkill -9 -f migbench` there ended the shim with code 125 and the run, which never
    started, counted as a failed attempt (with `retries: 0`, failed; three in a minute tripped the
    flapping guard). The run never ran: it is started again, attempt 1 not counted as a failure."""
    r = rig(QUICK2)
    p = r.start(extra_env={"MIGBENCH_SHIM_TEST_PAUSE": "waiter-before-exec@attempt-1"})
    r.wait_for(lambda: all(row["shim_pid"] for row in r.rows().values()) and len(r.rows()) == 2, what="both shims")
    for rid, row in r.rows().items():

        def held(shim: int = row["shim_pid"]) -> list[psutil.Process]:
            return [c for c in psutil.Process(shim).children() if c.status() == psutil.STATUS_STOPPED]

        r.wait_for(lambda: bool(held()), what=f"{rid}'s waiter held before its exec")
        os.kill(held()[0].pid, signal.SIGKILL)
    assert p.wait(timeout=60) == 0, r.output(p)
    assert set(r.states().values()) == {"succeeded"}, r.states()
    assert _done(r) == Counter({x.id: 1 for x in r.plan.runs}), r.ledger_lines()
    assert "its waiter died before the run started" in r.output(p)
