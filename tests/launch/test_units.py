"""The launcher's pure parts: launch-time macros, the environment of a run, the queue policy (the
same decisions as `engine.replay`), OOM escalation, and the state store."""

from __future__ import annotations

import heapq
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from migbench.duration import Demand, DurationModel, Slot
from migbench.duration.replay import replay
from migbench.errors import InputError
from migbench.fsutil import reserve_file
from migbench.launch.prepare import start_order
from migbench.launch.queue import Queues, Waiting
from migbench.launch.shim import child_env, record_exit
from migbench.launch.spec import build_spec, check_run_id, substitute
from migbench.launch.store import RunRow, Store
from migbench.plan import Assignment, Finished, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo
from migbench.sweep.model import LaunchSettings
from tests.support.faults import full_disk

VALUES = {"run_id": "r-1", "run_dir": "/s/r-1", "attempt": "2"}


# -- macros ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, protected, want",
    [
        ("${run_dir}/ckpt", [], "/s/r-1/ckpt"),
        ("--id=${run_id}-${attempt}", [], "--id=r-1-2"),
        ("${run_dir}", ["${run_dir}"], "${run_dir}"),  # the whole element is a parameter value
        ("--note=x${run_id}y", ["x${run_id}y"], "--note=x${run_id}y"),
        ("${run_dir}/${HOME}", [], "/s/r-1/${HOME}"),  # not a launch macro: left alone
        ("$${run_dir}", [], "$/s/r-1"),
        ("plain", ["${run_dir}"], "plain"),
    ],
)
def test_substitute_only_outside_parameter_values(text, protected, want):
    assert substitute(text, VALUES, protected) == want


def test_substitute_quotes_in_shell_mode():
    assert substitute("cd ${run_dir} && echo ${run_id}", {"run_id": "a b", "run_dir": "/x y", "attempt": "1"}, quote=True) == ("cd '/x y' && echo 'a b'")


def _plan(tmp_path: Path, runs: list[PlanRun], instances: list[PlanInstance], launch: LaunchSettings | None = None) -> Plan:
    p = Plan(
        name="t",
        sweep_file=None,
        sweep_sha256="",
        fleet=[PlanGpu(0, "A100-SXM4-80GB")],
        instances=instances,
        runs=runs,
        unplaced=[],
        solver=SolverInfo("OPTIMAL", "x", 0, 0, 0.0),
        duration_model=DurationModel(),
        launch=launch or LaunchSettings(env={"G": "${run_id}", "CUDA_VISIBLE_DEVICES": "0"}, stop_grace_s=7),
        models={},
    )
    p.path = str(tmp_path / "plan.yaml")
    return p


def _run(rid: str, argv: tuple[str, ...] = ("train", "--x", "${run_dir}"), **kw) -> PlanRun:  # type: ignore[no-untyped-def]
    base = dict(group="g", memory_mib=1024, memory_source="", argv=argv, shell=False, env={}, workdir=".", params={})
    base.update(duration_s=None, compute=1.0, max_runs_per_instance=1, profiles=None, retries=None, timeout_s=None)
    at = {"gpu": 0, "profile": "1g.10gb", "start": 0, "wave": 0}
    at.update({k: kw.pop(k) for k in ("gpu", "profile", "start", "wave", "est_start_s", "est_end_s") if k in kw})
    base.update(kw)
    return PlanRun(id=rid, at=Assignment(**at), **base)  # type: ignore[arg-type]


def test_build_spec_pins_one_device_and_sets_the_launch_environment(tmp_path):
    inst = PlanInstance(0, "1g.10gb", 0, 9728, 1 / 7, ("g-1",))
    run = _run(
        "g-1",
        ("train", "--x", "${run_id}"),
        env={"CUDA_VISIBLE_DEVICES": "1,2", "R": "${run_dir}"},
        workdir="sub",
        params={"x": "${run_id}"},
    )
    plan = _plan(tmp_path, [run], [inst])
    s1 = build_spec(plan, run, instance=inst.key, mig_uuid="MIG-abc", attempt=1, state_dir=tmp_path / "st")
    rdir = str((tmp_path / "st" / "g-1").absolute())
    assert {k: v for k, v in s1.env.items() if not k.startswith("WANDB_")} == {  # W&B's: tests/launch/test_wandb.py
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "MIG-abc",
        "G": "g-1",
        "MIGBENCH_ATTEMPT": "1",
        "MIGBENCH_RUN_DIR": rdir,
        "MIGBENCH_RUN_ID": "g-1",
        "R": rdir,
    }
    # the argv's `${run_id}` is the parameter value (params x), so it stays literal
    assert s1.argv == ("train", "--x", "${run_id}")
    assert s1.workdir == str(tmp_path / "sub") and s1.stop_grace_s == 7.0
    s2 = build_spec(plan, _run("g-1"), instance=inst.key, mig_uuid="MIG-abc", attempt=2, state_dir=tmp_path / "st")
    assert s2.argv == ("train", "--x", rdir) and s2.env["MIGBENCH_RESUME"] == "1" and s2.env["MIGBENCH_ATTEMPT"] == "2"


def test_env_passthrough_gives_a_run_only_the_allowed_variables_of_the_launcher(tmp_path):
    """Guards: runs inherited the launcher's whole environment, with no way to give them a clean one."""
    inst = PlanInstance(0, "1g.10gb", 0, 9728, 1 / 7, ("g-1",))
    run = _run("g-1", env={"R": "1"})
    plan = _plan(tmp_path, [run], [inst], LaunchSettings(env_passthrough=("PATH", "LC_*")))
    spec = build_spec(plan, run, instance=inst.key, mig_uuid="MIG-abc", attempt=1, state_dir=tmp_path / "st")
    cmd = spec.cmd_doc()
    assert cmd["env_passthrough"] == ["PATH", "LC_*"] and cmd["state_mode"] == 0o600
    launcher = {"PATH": "/bin", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "HOME": "/root", "MIGBENCH_SIM": "/sim"}
    env = child_env(cmd, launcher)
    assert env == {"PATH": "/bin", "LC_ALL": "C", "MIGBENCH_SIM": "/sim", **spec.env}
    assert child_env(dict(cmd, env_passthrough=None), launcher)["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"  # the default: inherit


def test_a_shim_records_its_outcome_in_the_reserved_space_when_the_disk_is_full(tmp_path, monkeypatch):
    reserve_file(tmp_path / "exit.reserve")
    full_disk(monkeypatch)
    rc = record_exit(tmp_path, {"run_id": "r", "attempt": 1}, 123, 0, 1.0, exec_error="x" * 5000)
    doc = json.loads((tmp_path / "exit.json").read_text())
    assert rc == 0 and doc["returncode"] == 0 and doc["run_id"] == "r" and len(doc["exec_error"]) == 1000


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "", "-x", "a b"])
def test_run_ids_must_be_plain_names(bad):
    with pytest.raises(InputError):
        check_run_id(bad)


def test_start_order_is_wave_then_estimated_start(tmp_path):
    a = PlanInstance(0, "3g.40gb", 4, 40192, 3 / 7, ("r1", "r3"))
    b = PlanInstance(0, "1g.10gb", 0, 9728, 1 / 7, ("r2", "r4"))
    runs = [
        _run("r1", profile="3g.40gb", start=4, wave=0, est_start_s=0),
        _run("r2", wave=0, est_start_s=0),
        _run("r3", profile="3g.40gb", start=4, wave=1, est_start_s=50),
        _run("r4", wave=1, est_start_s=20),
    ]
    assert [r.id for r in start_order(_plan(tmp_path, runs, [a, b]))] == ["r1", "r2", "r4", "r3"]


def test_a_run_a_grown_plan_marks_done_is_never_started_again(tmp_path):
    """Guards (issue 21): a grown plan keeps its finished runs on their instances; a launch with
    another state directory would have started them a second time."""
    a = PlanInstance(0, "1g.10gb", 0, 9728, 1 / 7, ("r1", "r2"))
    runs = [_run("r1", wave=0, est_start_s=0), _run("r2", wave=1, est_start_s=50)]
    runs[0] = replace(runs[0], finished=Finished("succeeded", "0:1g.10gb@0"))
    assert [r.id for r in start_order(_plan(tmp_path, runs, [a]))] == ["r2"]


# -- the queue ---------------------------------------------------------------------------------


def _inst(key_start: int, mib: int, profile: str = "1g.10gb") -> PlanInstance:
    return PlanInstance(0, profile, key_start, mib, 0.5, ())


def _w(rid: str, queue: str, rank: int, mib: int = 1000, cap: int = 1, ready: bool = True, profiles=None) -> Waiting:  # type: ignore[no-untyped-def]
    return Waiting(rid, Demand(rid, mib, 1.0, 0.01, cap, profiles), queue, rank, ready)


def test_queue_is_fifo_per_instance_and_memory_aware():
    q = Queues([_inst(0, 10000)], lend=False)
    k = q.order[0]
    ws = [_w("a", k, 0, 4000, cap=4), _w("b", k, 1, 7000, cap=4), _w("c", k, 2, 1000, cap=4)]
    assert q.pick(ws, {}) == [("a", k)]  # b does not fit next to a, and c waits behind b
    assert q.pick(ws[1:], {k: [ws[0].job]}, [k]) == []
    assert q.pick(ws[1:], {}, [k]) == [("b", k), ("c", k)]
    # a sharing cap of 1: one at a time however much memory is free
    ws1 = [_w("x", k, 0, 100), _w("y", k, 1, 100)]
    assert q.pick(ws1, {}) == [("x", k)]


def test_a_run_in_backoff_steps_aside_and_keeps_its_place():
    q = Queues([_inst(0, 10000)], lend=False)
    k = q.order[0]
    ws = [_w("a", k, 0, 4000, cap=2, ready=False), _w("b", k, 1, 4000, cap=2), _w("c", k, 2, 4000, cap=2)]
    assert q.pick(ws, {}) == [("b", k), ("c", k)]
    ws = [_w("a", k, 0, 4000, cap=2), _w("c", k, 2, 4000, cap=2)]
    assert q.pick(ws, {}) == [("a", k), ("c", k)]


def test_lending_takes_only_blocked_heads_of_other_queues():
    q = Queues([_inst(0, 10000), _inst(1, 10000)])
    k0, k1 = q.order
    busy = {k0: [Demand("r", 1000, 1.0, 0.01, 1)]}
    ws = [_w("a", k0, 0), _w("b", k0, 1)]
    assert q.pick(ws, busy, [k1]) == [("a", k1)]  # a cannot start at home: k1 (idle, empty) takes it
    # at home it can: a starts there; then b, blocked behind it, is lent to the idle k1
    assert q.pick(ws, {}, None) == [("a", k0), ("b", k1)]
    no = Queues([_inst(0, 10000), _inst(1, 10000)], lend=False)
    assert no.pick(ws, busy, [k1]) == []
    own = [_w("a", k0, 0), _w("c", k1, 0, ready=False)]
    assert q.pick(own, busy, [k1]) == []  # k1 has a run of its own waiting out a backoff
    prof = [_w("a", k0, 0, profiles=("3g.40gb",))]
    assert q.pick(prof, busy, [k1]) == []  # the run's profiles exclude k1
    planned = [Waiting("a", Demand("a", 1000, 1.0, 0.01, 1), k0, 0, planned_start_s=30.0)]
    assert q.pick(planned, busy, [k1], elapsed_s=10.0) == [] and q.deferred_until_s == 30.0  # on schedule
    assert q.pick(planned, busy, [k1], elapsed_s=31.0) == [("a", k1)] and q.deferred_until_s is None  # late


def test_oom_escalation_picks_a_larger_instance_that_can_start_soonest():
    small, mid1, mid2, big = _inst(0, 9728), _inst(1, 19968, "2g.20gb"), _inst(3, 19968, "2g.20gb"), _inst(4, 40192, "3g.40gb")
    q = Queues([small, mid1, mid2, big])
    w = _w("x", small.key, 0, 9729)
    busy = {mid1.key: [Demand("r", 1000, 1.0, 0.01, 1)]}
    assert q.escalation_target(w, small.key, [], busy) == mid2.key
    assert q.escalation_target(w, small.key, [], {}) == mid1.key
    assert q.escalation_target(w, big.key, [], {}) is None
    assert q.escalation_target(_w("x", small.key, 0, 9729, profiles=("1g.10gb", "3g.40gb")), small.key, [], {}) == big.key


def _virtual_launcher(
    slots: list[Slot], queues: dict[str, list[str]], jobs: dict[str, Demand], insts: list[PlanInstance], planned: dict[str, float]
) -> dict[str, tuple[float, str]]:
    """Drive `Queues.pick` with the events `replay` sees (one finish at a time)."""
    q = Queues(insts)
    rank = {jid: n for k, ids in queues.items() for n, jid in enumerate(ids)}
    queue_of = {jid: k for k, ids in queues.items() for jid in ids}
    waiting = {jid for ids in queues.values() for jid in ids}
    running: dict[str, list[Demand]] = {s.key: [] for s in slots}
    out: dict[str, tuple[float, str]] = {}
    heap: list[tuple[float, str, str]] = []

    def step(t: float, touched):  # type: ignore[no-untyped-def]
        ws = [Waiting(j, jobs[j], queue_of[j], rank[j], planned_start_s=planned[j]) for j in sorted(waiting)]
        for jid, k in q.pick(ws, running, touched, elapsed_s=t):
            waiting.discard(jid)
            running[k].append(jobs[jid])
            out[jid] = (t, k)
            heapq.heappush(heap, (t + jobs[jid].duration_s, jid, k))

    step(0.0, None)
    while heap:
        t, jid, k = heapq.heappop(heap)
        running[k] = [j for j in running[k] if j.id != jid]
        step(t, [k])
    return out


@pytest.mark.parametrize("seed", range(60))
def test_queue_makes_the_same_decisions_as_engine_replay(seed):
    """Exclusive instances (sharing cap 1), mixed memory: the same run on the same instance at the
    same time as `replay`. (With sharing, the launcher may start a run earlier: see below.)"""
    rng = random.Random(seed)
    insts = [PlanInstance(0, "1g.10gb", n, rng.choice([4000, 8000, 16000]), 1.0, ()) for n in range(rng.randint(2, 4))]
    slots = [Slot(i.key, i.memory_mib, 1.0) for i in insts]
    jobs: dict[str, Demand] = {}
    queues: dict[str, list[str]] = {i.key: [] for i in insts}
    for n in range(rng.randint(4, 14)):
        home = rng.choice(insts)
        jid = f"j{n:02d}"
        jobs[jid] = Demand(jid, rng.randint(500, home.memory_mib), rng.uniform(1.0, 9.0), 0.001, 1)
        queues[home.key].append(jid)
    # half the runs have a planned start: on schedule, they are not lent
    planned = {j: (rng.uniform(0.0, 15.0) if rng.random() < 0.5 else 0.0) for j in sorted(jobs)}
    want = replay(list(jobs.values()), slots, queues, lend=lambda j, s: True, planned_start=planned)
    got = _virtual_launcher(slots, queues, jobs, insts, planned)
    assert {j: k for j, (_, k) in got.items()} == want.slot_of
    assert all(abs(got[j][0] - want.start_s[j]) < 1e-6 for j in jobs)


def test_after_lending_its_head_a_shared_instance_starts_the_next_run_at_once():
    """Where the launcher is deliberately more eager than `replay`: once the blocked head of a queue
    is lent away, the next run that fits beside what runs at home starts now, not at the home
    instance's next finish."""
    q = Queues([_inst(0, 10000), _inst(1, 10000)])
    k0, k1 = q.order
    home_busy = {k0: [Demand("r", 1000, 1.0, 0.01, 2)]}
    ws = [_w("solo", k0, 0, cap=1), _w("pair", k0, 1, cap=2)]
    assert q.pick(ws, home_busy, [k1]) == [("solo", k1), ("pair", k0)]


# -- the store ---------------------------------------------------------------------------------


def test_store_round_trips_runs_and_the_launcher(tmp_path):
    st = Store.create(tmp_path / "launch.db")
    with st.transaction():
        st.save_runs([RunRow(id="a", ord=1, state="queued", need_mib=5), RunRow(id="b", ord=0, state="running", attempt=2, shim_pid=7)])
        st.set_launcher(pid=123, stop_requested=1)
        st.set_meta("plan_sha256", "abc")
    with pytest.raises(RuntimeError):
        with st.transaction():
            st.save_runs([RunRow(id="c", ord=2)])
            raise RuntimeError("rolled back")
    st.close(checkpoint=True)
    ro = Store.open_readonly(tmp_path / "launch.db")
    rows = ro.runs()
    assert list(rows) == ["b", "a"] and rows["b"].shim_pid == 7 and rows["a"].need_mib == 5
    assert ro.launcher().stop_requested == 1 and ro.meta("plan_sha256") == "abc"
    assert ro.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ro.close()


# -- the waiter and the run states -----------------------------------------------------------------


@pytest.mark.parametrize("reserve, how, want", [(True, "exit 3", (3, None)), (False, "kill -9 $$", (None, 9))])
def test_the_waiter_records_its_runs_exit_durably_and_sends_it(tmp_path, reserve, how, want):
    """The run's parent (`mb-wait`) writes wait.json (into the reserved space, else a new file)
    and the same record to its pipe, then reaps the run."""
    import os
    import subprocess
    import sys

    from migbench.launch.waiter import WAIT_PENDING, read_record, wait_status

    if reserve:
        reserve_file(tmp_path / WAIT_PENDING)
    script = f"""
import os, sys
from migbench.launch.waiter import exec_waiter
d = os.open({str(tmp_path)!r}, os.O_RDONLY | os.O_DIRECTORY)
pid = os.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", {how!r}])
exec_waiter("r-1", pid, d, sys.stdout.fileno())
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rec = read_record(tmp_path)
    assert rec is not None and (rec["exit_code"], rec["signal"]) == want
    first, last = p.stdout.splitlines()
    assert int(first.split()[0]) == rec["pid"] and int(first.split()[1]) > 0  # the run's PID and start time, then
    assert json.loads(last) == rec  # the pipe's copy of the record
    status = wait_status(rec)
    assert (os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, os.WTERMSIG(status) if os.WIFSIGNALED(status) else None) == want
    assert not (tmp_path / WAIT_PENDING).exists() and (tmp_path / "wait.json").stat().st_mode & 0o077 == 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_state_db_from_before_the_unknown_state_takes_it(tmp_path):
    """A launch.db whose runs table's CHECK predates `unknown` is rebuilt, rows kept."""
    import sqlite3

    from migbench.launch import store

    old = sqlite3.connect(tmp_path / "launch.db")
    old.executescript(store.SCHEMA.replace(", 'unknown'", ""))
    old.execute("INSERT INTO runs (id, ord, state) VALUES ('a', 0, 'succeeded')")
    old.commit()
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("INSERT INTO runs (id, ord, state) VALUES ('b', 1, 'unknown')")
    old.close()
    st = Store.create(tmp_path / "launch.db")
    with st.transaction():
        st.save_runs([RunRow(id="b", ord=1, state="unknown")])
    assert {k: v.state for k, v in st.runs().items()} == {"a": "succeeded", "b": "unknown"}
    st.close()


def test_a_shims_exit_code_0_is_evidence_of_success_when_every_record_is_gone(tmp_path):
    """Issue 19 item 4: the attempt directory deleted, no piped result: our shim's exit code 0
    (it exits 0 only when its run did) still says the run succeeded; another code says nothing."""
    from types import SimpleNamespace

    from migbench.launch.children import Active, Children

    gone = tmp_path / "deleted" / "attempt-1"
    for rc, want in ((0, 0), (3, None), (None, None)):
        a = Active("r", 1, "0:1g.10gb@0", gone, 1, None, popen=SimpleNamespace(returncode=rc))  # type: ignore[arg-type]
        res = Children(lambda text: None, 0.0).result(a)
        assert (res.returncode if res else None) == want


def test_a_detached_launcher_that_died_of_an_unexpected_exception_is_an_internal_error(tmp_path: Path):
    """Guards: a detached launcher (`launch --detach`, the bench `submit` starts) that died at its
    start of an unexpected exception had its traceback printed as the error, not an internal error
    with a hint to report it; an earlier launcher's lines in the same log do not count."""
    from migbench.launch.detach import exit_error

    log = tmp_path / "launcher.log"
    log.write_text(
        "--- 2026-01-01T00:00:00 detached launcher for a.plan.yaml\nTraceback (most recent call last):\nKeyError: 'x'\n"
        "--- 2026-01-01T00:01:00 detached launcher for a.plan.yaml\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: not enough values to unpack (expected 3, got 2)\n'
    )
    err = exit_error(1, log)
    assert err.message == "internal error (the detached launcher exited with code 1: ValueError: not enough values to unpack (expected 3, got 2))"
    assert err.hint and "bug in migbench" in err.hint and str(log) in err.hint and "Traceback" not in err.render()
    log.write_text(
        "--- 2026-01-01T00:00:00 detached launcher for a.plan.yaml\nTraceback (most recent call last):\nKeyError: 'x'\n--- 2026-01-01T00:01:00 detached launcher for a.plan.yaml\nError: the plan is damaged\n"
    )
    err = exit_error(1, log)
    assert err.message.startswith("the detached launcher exited with code 1:") and "Error: the plan is damaged" in err.message and err.hint == f"see {log}"


def test_a_command_that_cannot_start_is_said_with_its_control_characters_escaped():
    """Guards: a sweep command whose program holds an escape sequence (`"\\e]0;title\\a"`) could not
    start, and the launcher's message (printed, and shown by `status` as the run's note) carried the
    sequence raw to the terminal."""
    from migbench.launch.shim import start_failure
    from migbench.names import printable

    msg, code = start_failure(FileNotFoundError(2, "No such file or directory"), "program", "\x1b]0;pwned\x07", "/w\nd")
    assert code == 127 and msg == "migbench: cannot start \\x1b]0;pwned\\x07 in /w\\nd: command not found on PATH", msg
    assert printable("plain text, é") == "plain text, é" and printable("a\x1b[2Jb\tc") == "a\\x1b[2Jb\\tc"
