"""The host's bench (issue 21): `migbench submit` hands sweeps to one launcher that places each run
when it starts and re-cuts idle slices; sweeps join it while it runs, a grown sweep adds only its new
runs, every run runs once, and no instance is destroyed while a run is on it."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from migbench.backend.sim.host import init_host
from migbench.sweep import load_sweep
from tests.support import pid_alive
from tests.support.cli import Result, migbench
from tests.support.launchkit import TOY_CMD, db_query, db_runs, kill_leftovers, wait_until

pytestmark = pytest.mark.slow  # real launchers, shims and runs: seconds each

SWEEP = """
version: 1
name: {name}
launch: {{retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}}
groups:
  - name: w
    shell: true
    command: "echo $MIGBENCH_RUN_ID start >> {ledger}; {toy} --steps 1 --step-seconds 0.01 --memory 1GiB --i {{i}}; while [ ! -e {release} ]; do sleep 0.05; done"
    parameters: {{i: {values}}}
    memory: {memory}
    compute: 0.1
    duration: 60s
"""


class Bench:
    def __init__(self, tmp: Path, gpus: int = 2):
        self.tmp = tmp
        self.sim = tmp / "sim"
        init_host(self.sim, "A100-SXM4-80GB", gpus, mig=True)
        (tmp / "home").mkdir()
        self.dir = tmp / "bench"
        self.ledger = tmp / "ledger.txt"
        self.release = tmp / "release"
        self.env = {
            "MIGBENCH_SIM": str(self.sim),
            "MIGBENCH_POLL_S": "0.05",
            "MIGBENCH_MEM_POLL_S": "0.1",
            "HOME": str(tmp / "home"),
            "MIGBENCH_BENCH_DIR": str(self.dir),
            "TOY_LEDGER": str(tmp / "done.txt"),
        }
        self.db = self.dir / "runs" / "bench" / "launch.db"

    def sweep(self, name: str, values: list[int], memory: str = "9GiB") -> Path:
        f = self.tmp / f"{name}.yaml"
        f.write_text(SWEEP.format(name=name, ledger=self.ledger, toy=TOY_CMD, release=self.release, values=values, memory=memory))
        return f

    def cli(self, *args: str) -> Result:
        return migbench(*args, cwd=self.tmp, env=self.env)

    def rows(self) -> dict[str, dict]:
        return db_runs(self.db)

    def query(self, sql: str) -> list[dict]:
        return db_query(self.db, sql)

    def launcher(self) -> dict:
        rows = self.query("SELECT * FROM launcher")
        return rows[0] if rows else {}

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        wait_until(cond, timeout, lambda: f"{what}: {Counter(r['state'] for r in self.rows().values())}")

    def starts(self) -> Counter:
        """How many times each run's command began (its ledger lines)."""
        return Counter(line.split()[0] for line in self.ledger.read_text().splitlines())

    def running(self) -> int:
        return sum(r["state"] == "running" for r in self.rows().values())

    def stop(self) -> None:
        pid = self.launcher().get("pid") if self.db.exists() else None
        if pid:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def bench(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Bench(tmp_path)
    yield b
    b.release.touch()
    b.stop()
    kill_leftovers(tmp_path)


def test_sweeps_join_a_running_bench_grown_sweeps_add_only_new_runs_and_every_run_runs_once(bench: Bench):
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2])))
    assert res.returncode == 0 and "sweep a submitted: 3 new run(s)" in res.stdout, res.stdout + res.stderr
    bench.wait_for(lambda: bench.running() == 3, "a's 3 runs running")
    pid = bench.launcher()["pid"]

    res = bench.cli("submit", str(bench.sweep("b", [0, 1], memory="30GiB")))
    assert res.returncode == 0 and "sweep b submitted: 2 new run(s)" in res.stdout, res.stdout + res.stderr
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2, 3, 4])))  # grown: two new seeds
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "sweep a submitted: 2 new run(s)" in out and "3 started or finished before, kept" in out, out
    # both joined the running bench: runs of b and of the grown a start while a's first runs still run
    bench.wait_for(lambda: {rid.split(".")[0] for rid, r in bench.rows().items() if r["state"] == "running"} == {"a", "b"}, "b's runs running beside a's")
    assert bench.launcher()["pid"] == pid  # one bench: the same launcher took every submission
    res = bench.cli("simulate", str(bench.dir / "bench.plan.yaml"), "--json")  # what is left, played under the bench's scheduler
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["bench"] and doc["runs_left"] == 7 and doc["makespan_s"] >= 60.0 and not doc["unrunnable"], res.stdout + res.stderr
    res = bench.cli("simulate", str(bench.dir / "bench.plan.yaml"), "--sweep", "b", "--json")  # when b ends, a's runs beside it
    one = json.loads(res.stdout)["sweep"]
    assert res.returncode == 0 and one["name"] == "b" and one["runs"] == one["runs_left"] == 2, res.stdout + res.stderr
    assert 0 < one["end_s"] <= doc["makespan_s"] and not one["unrunnable"], one

    bench.release.touch()
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to finish")
    rows = bench.rows()
    assert len(rows) == 7 and Counter(rid.split(".")[0] for rid in rows) == {"a": 5, "b": 2}
    assert {r["state"] for r in rows.values()} == {"succeeded"}, rows
    starts = bench.starts()
    assert sorted(starts) == sorted(rows) and set(starts.values()) == {1}, starts  # each run started once

    # no instance was destroyed while a run was on it: each re-cut against every attempt's interval
    t0 = float(bench.query("SELECT value FROM meta WHERE key = 'sweep_started_at'")[0]["value"])
    history = json.loads(bench.query("SELECT value FROM meta WHERE key = 'layouts'")[0]["value"])
    attempts = bench.query("SELECT * FROM attempts")
    last: dict[int, set[str]] = {}
    recuts = 0
    for t, gpu, text in history:
        now = {p for p in text.split(" + ") if p}
        gone = last.get(gpu, set()) - now
        recuts += bool(gone or (gpu in last and now != last[gpu]))
        for a in attempts:
            g, pl = a["instance"].split(":", 1)
            if int(g) == gpu and pl in gone:
                assert not (a["start_at"] < t0 + t < a["end_at"]), (a, t, gone)
        last[gpu] = now
    assert history and all(last.values()), history
    res = bench.cli("status", str(bench.dir / "bench.plan.yaml"))
    assert res.returncode == 0 and "7 succeeded" in res.stdout, res.stdout + res.stderr
    res = bench.cli("status", "--sweep", "b")  # one sweep of the bench (found in $MIGBENCH_BENCH_DIR)
    assert res.returncode == 0 and "2 succeeded  (of 2)" in res.stdout and "a.w-" not in res.stdout, res.stdout + res.stderr
    res = bench.cli("status", "--sweep", "nope")
    assert res.returncode == 1 and "its sweeps: a, b" in res.stderr, res.stdout + res.stderr
    res = bench.cli("report", str(bench.dir / "bench.plan.yaml"), "-o", str(bench.tmp / "r.html"))
    assert res.returncode == 0 and "Layouts over time" in (bench.tmp / "r.html").read_text(), res.stdout + res.stderr
    res = bench.cli("report", str(bench.dir / "bench.plan.yaml"), "--sweep", "b")  # one sweep's page, next to the bench plan
    page = (bench.dir / "b.report.html").read_text()
    assert res.returncode == 0 and "bench: sweep b" in page and "Layouts over time" in page, res.stdout + res.stderr
    assert all(rid in page for rid in rows if rid.startswith("b.")) and not any(rid in page for rid in rows if rid.startswith("a.")), sorted(rows)
    res = bench.cli("simulate", str(bench.dir / "bench.plan.yaml"), "--sweep", "nope")
    assert res.returncode == 1 and "its sweeps: a, b" in res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("point", ["before-recut", "after-recut"])
def test_a_bench_killed_around_a_recut_is_taken_over_by_the_next_submit_and_runs_each_run_once(bench: Bench, point: str):
    """Guards: a bench launcher killed between re-cutting the GPUs and rewriting its plan left a
    bench plan that no longer matched the host; the next bench must take the host as it is."""
    bench.release.touch()  # the runs end at once
    bench.env["MIGBENCH_LAUNCH_CRASH_AT"] = point
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2])))
    # the bench dies at once: the submit sees it hold its lock first and returns, or sees it exit
    died_first = res.returncode == 1 and "the detached launcher exited with code 99" in res.stderr
    assert died_first or (res.returncode == 0 and "sweep a submitted: 3 new run(s)" in res.stdout), res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("pid") and not pid_alive(int(bench.launcher()["pid"])), "the bench to die at the crash point")
    assert "sweep a submitted: 3 new run(s)" in (bench.dir / "runs" / "bench" / "launcher.log").read_text()
    assert not bench.ledger.exists()  # nothing started
    del bench.env["MIGBENCH_LAUNCH_CRASH_AT"]
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2])))
    assert res.returncode == 0 and "sweep a submitted: 0 new run(s)" in res.stdout, res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the second bench to finish")
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"} and len(bench.rows()) == 3
    starts = bench.starts()
    assert len(starts) == 3 and set(starts.values()) == {1}, starts


def test_a_submission_another_user_could_have_written_is_never_run(bench: Bench):
    """Guards: the bench runs whatever its inbox holds, as its own user (root on a real host): a file
    another user owns there, a link, or an inbox others may write into must not be taken."""
    res = bench.cli("submit", str(bench.sweep("a", [0])))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.running() == 1, "a's run running")
    inbox = bench.dir / "inbox"
    mine = next((inbox / "done").glob("*-a.plan.yaml"))
    evil = mine.read_text().replace("name: a\n", "name: evil\n").replace("id: a.", "id: evil.")
    assert "id: evil." in evil
    planted = inbox / "00000000000000000001-evil.plan.yaml"
    planted.write_text(evil)
    os.chown(planted, 4242, 4242)  # another user's file
    (inbox / "00000000000000000002-link.plan.yaml").symlink_to(mine)
    bench.wait_for(lambda: (inbox / "done" / (planted.name + ".txt")).exists(), "the planted file to be refused")
    assert "refused" in (inbox / "done" / (planted.name + ".txt")).read_text() and "owned by" in (inbox / "done" / (planted.name + ".txt")).read_text()
    # an inbox others may write into: nothing is taken from it, the launcher says why
    os.chmod(inbox, 0o777)
    later = inbox / "00000000000000000003-evil.plan.yaml"
    later.write_text(evil)
    log = bench.dir / "runs" / "bench" / "launcher.log"
    bench.wait_for(lambda: "writable by every user" in log.read_text(), "the launcher to refuse the inbox")
    assert later.exists() and not any(rid.startswith("evil.") for rid in bench.rows())
    later.unlink()
    os.chmod(inbox, 0o700)
    bench.release.touch()
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to finish")
    assert set(bench.rows()) == {rid for rid in bench.rows() if rid.startswith("a.")} and len(bench.rows()) == 1


def test_two_submits_at_once_start_one_bench_that_runs_both_sweeps_once(bench: Bench):
    """Guards: two submits racing on a host with no bench each found no launcher, brought the bench
    plan to the host and started one; one of them failed, or re-cut what the other's bench had cut."""
    import subprocess
    import sys

    env = dict(os.environ, **bench.env)
    env.pop("MIGBENCH_LAUNCH_CRASH_AT", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "migbench", "submit", str(bench.sweep(name, [0, 1]))],
            cwd=bench.tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("bench launcher started" in o for o in outs) == 1, outs  # one of them started it (the runs hold the bench up)
    bench.release.touch()
    bench.wait_for(
        lambda: len(bench.rows()) == 4 and bench.launcher().get("state") == "exited" and not list((bench.dir / "inbox").glob("*.plan.yaml")),
        "both sweeps to finish",
        timeout=120,
    )
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"}
    starts = bench.starts()
    assert len(starts) == 4 and set(starts.values()) == {1}, starts


BIG = """
version: 1
name: {name}
fleet: [{{gpu: A100-SXM4-80GB, count: 2}}]
launch: {{retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}}
groups:
  - name: w
    shell: true
    command: "echo $MIGBENCH_RUN_ID start >> {ledger}; while [ ! -e {release} ]; do sleep 0.05; done"
    memory: 70GiB
    compute: 1.0
"""


def test_a_gpu_re_cut_beside_the_bench_is_taken_as_it_is(bench: Bench):
    """Guards: `migbench run` of another sweep beside a live bench re-cut a GPU whose instances the
    bench had cut but was not using; the bench kept starting runs on MIG devices that no longer
    existed (held back each time) and stopped with "run apply, then launch again"."""
    res = bench.cli("submit", str(bench.sweep("a", [0, 1])))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.running() == 2, "a's runs running")
    # another sweep, planned and launched by `run` beside the bench: one whole GPU, re-cut for it
    other = bench.tmp / "big.yaml"
    other.write_text(BIG.format(name="big", ledger=bench.ledger, release=bench.release))
    res = bench.cli("run", str(other), "--detach")
    assert res.returncode == 0 and "planned beside 1 other live launch(es)" in res.stdout, res.stdout + res.stderr
    big_db = bench.tmp / "runs" / "big" / "launch.db"
    bench.wait_for(lambda: big_db.exists() and any(r["state"] == "running" for r in _rows(big_db).values()), "big's run running")
    big_on = next(iter(_rows(big_db).values()))["instance"]
    # more runs for the bench: it finds GPU 1 re-cut under it and takes the host as it is
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2, 3])))
    assert res.returncode == 0 and "2 new run(s)" in res.stdout, res.stdout + res.stderr
    log = bench.dir / "runs" / "bench" / "launcher.log"
    bench.wait_for(lambda: "re-cut outside the bench: it takes them as they are now" in log.read_text(), "the bench to take the host as it is")
    bench.release.touch()
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to finish")
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"}, bench.rows()
    starts = bench.starts()
    assert set(starts.values()) == {1} and len(starts) == 5, starts
    big_end = next(iter(_rows(big_db).values()))["end_at"] if _rows(big_db) else None
    for a in bench.query("SELECT * FROM attempts"):  # no run of the bench on big's instance while big's run lived
        assert a["instance"] != big_on or big_end is None or a["start_at"] >= big_end, (a, big_on, big_end)


def _rows(db: Path) -> dict[str, dict]:
    return db_runs(db)


def test_launch_detach_adopts_the_runs_a_killed_launcher_left_as_its_hint_says(bench: Bench):
    """Guards: after a `kill -9` of a launcher whose runs live on, `migbench launch PLAN --detach`
    refused ("already running on this host: its launcher is gone but its runs still run") with a
    hint to run that very command: the check before detaching counted the dead launcher of its own
    state directory, which the launch itself takes over."""
    plan = str(bench.dir / "bench.plan.yaml")
    res = bench.cli("submit", str(bench.sweep("a", [0, 1])))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.running() == 2, "a's runs running")
    pid = int(bench.launcher()["pid"])
    booked = lambda: [json.loads(p.read_text()) for p in (bench.sim / "launches").glob("*.json")]  # noqa: E731
    bench.wait_for(lambda: any(len(b["processes"]) >= 2 for b in booked()), "the host's launch register to list a's runs")
    os.kill(pid, signal.SIGKILL)  # the launcher only: its runs live on in their own process groups
    bench.wait_for(lambda: not pid_alive(pid), "the launcher to die")
    res = bench.cli("launch", plan, "--detach", "--force")  # --force: the bench plan changed since that launch began
    assert res.returncode == 0 and "launcher started in the background" in res.stdout, res.stdout + res.stderr
    bench.release.touch()
    bench.wait_for(lambda: bench.launcher().get("state") == "exited" and int(bench.launcher()["pid"]) != pid, "the new launcher to finish")
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"} and len(bench.rows()) == 2
    starts = bench.starts()
    assert len(starts) == 2 and set(starts.values()) == {1}, starts  # adopted, not run again


def test_a_re_cut_the_driver_refuses_is_rolled_back_and_tried_again(bench: Bench):
    """Guards: a re-cut that failed half-way (the driver refused the second instance) left the
    bench deciding nothing more: its runs waited for an event that never came, and it abandoned
    them as never fitting. Apply's rollback must restore the GPU and the bench try again."""
    bench.release.touch()
    res = bench.cli("sim", "fault", "--state", str(bench.sim), "--op", "create_gpu_instance", "--nth", "2", "--code", "INSUFFICIENT_RESOURCES")
    assert res.returncode == 0, res.stdout + res.stderr
    res = bench.cli("submit", str(bench.sweep("a", [0, 1, 2])))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to finish", timeout=120)
    log = (bench.dir / "runs" / "bench" / "launcher.log").read_text()
    assert "not made" in log and "re-cut GPU" in log, log
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"} and len(bench.rows()) == 3, log
    starts = bench.starts()
    assert set(starts.values()) == {1} and len(starts) == 3, starts


OOMY = """
version: 1
name: oomy
launch: {{retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}}
groups:
  - name: liar
    shell: true
    command: "echo $MIGBENCH_RUN_ID start >> {ledger}; {toy} --steps 2 --step-seconds 0.05 --memory 15GiB"
    memory: 9GiB
    compute: 0.1
  - name: fill
    shell: true
    command: "echo $MIGBENCH_RUN_ID start >> {ledger}; {toy} --steps 2 --step-seconds 0.05 --memory 1GiB --i {{i}}"
    parameters: {{i: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}}
    memory: 9GiB
    compute: 0.1
"""


def test_a_run_out_of_memory_on_the_bench_is_retried_on_a_larger_instance_it_cuts(bench: Bench):
    """Guards: an OOM on the bench looked for a larger instance among fixed queues the bench does
    not have; the run must be retried once, with the memory it needed, where the bench cuts room."""
    f = bench.tmp / "oomy.yaml"
    f.write_text(OOMY.format(ledger=bench.ledger, toy=TOY_CMD))
    res = bench.cli("submit", str(f))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to finish")
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"}, bench.rows()
    liar = next(rid for rid in bench.rows() if ".liar-" in rid)
    atts = sorted((a for a in bench.query("SELECT * FROM attempts") if a["run_id"] == liar), key=lambda a: a["attempt"])
    assert [a["outcome"] for a in atts] == ["oom", "succeeded"], atts
    row = bench.rows()[liar]
    assert row["need_mib"] > 9 * 1024 and row["instance_mib"] >= row["need_mib"], row  # retried where it had the room it needed


KILLED_RECUT = """
import os, sys
from migbench.apply import reconcile
from migbench.backend.select import open_backend
from migbench.plan import Plan
from migbench.state import StateDir
real, n = reconcile._Executor.run_step, []
def step(self, s, created):
    real(self, s, created)
    n.append(s)
    if len(n) == 2:
        os._exit(137)  # kill -9 half-way: no handler, no rollback
reconcile._Executor.run_step = step
plan = Plan.load(sys.argv[1])
reconcile.apply_plan(plan, open_backend(), confirm=None, gpus=[int(sys.argv[2])], state_dir=StateDir.of(plan))
"""


def test_a_bench_killed_during_a_recut_is_rolled_back_by_the_next_submit(bench: Bench):
    """Guards: a bench launcher killed half-way through one of its re-cuts left apply's checkpoint,
    and every later submit failed with "an earlier apply ... did not finish" until someone ran
    `apply --rollback` by hand."""
    import subprocess
    import sys
    from dataclasses import replace

    from migbench.plan import Plan, PlanInstance

    bench.release.touch()  # the runs end at once
    assert bench.cli("submit", str(bench.sweep("a", [0, 1]))).returncode == 0
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "a to finish")
    bp = bench.dir / "bench.plan.yaml"
    before = bp.read_bytes()
    plan = Plan.load(bp)
    gpu = plan.instances[0].gpu  # a GPU the bench cut (its instances idle now): the launcher re-cuts it to one 7g.80gb
    recut = replace(plan, instances=[i for i in plan.instances if i.gpu != gpu] + [PlanInstance(gpu, "7g.80gb", 0, 80896, 1.0, ())])
    recut.save(bp)
    env = dict(os.environ, **bench.env)
    p = subprocess.run([sys.executable, "-c", KILLED_RECUT, str(bp), str(gpu)], env=env, capture_output=True, text=True)
    assert p.returncode == 137, p.stderr
    bp.write_bytes(before)  # the launcher writes its plan only once the re-cut is made
    res = bench.cli("submit", str(bench.sweep("b", [0, 1, 2])))
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "rolled back" in out and "sweep b submitted: 3 new run(s)" in out, out
    bench.wait_for(lambda: bench.launcher().get("state") == "exited" and len(bench.rows()) == 5, "b to finish")
    assert {r["state"] for r in bench.rows().values()} == {"succeeded"}
    starts = bench.starts()
    assert len(starts) == 5 and set(starts.values()) == {1}, starts
    res = bench.cli("check", str(bp))
    assert res.returncode == 0, res.stdout + res.stderr


STOPPABLE = """
version: 1
name: a
launch: {{retries: 0, backoff: 0, stop_grace: 120, flapping_max: 50}}
groups:
  - name: w
    shell: true
    command: "trap 'T=1' TERM; echo $MIGBENCH_RUN_ID start {{i}} >> {ledger}; while [ ! -e {release} ]; do sleep 0.05; done; exit ${{T:-0}}"
    parameters: {{i: {values}}}
    memory: 9GiB
    compute: 0.1
    duration: 60s
"""


@pytest.mark.parametrize("db", ["kept", "lost"])
def test_a_run_interrupted_then_removed_from_its_sweep_is_not_run_again(bench: Bench, db: str):
    """Guards: a run the bench had started, then removed from its sweep (submitted again without
    it) while a stop was interrupting it, counted as "started, kept": the next bench ran it again.
    `lost`: launch.db is lost before the next start too (rebuilt from the run directories), which
    lost the record that the run had left its sweep, and the next bench ran it again."""
    sweep = bench.tmp / "a.yaml"
    sweep.write_text(STOPPABLE.format(ledger=bench.ledger, release=bench.release, values=[0, 1, 2]))
    res = bench.cli("submit", str(sweep))
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.ledger.exists() and len(bench.ledger.read_text().splitlines()) == 3, "a's 3 runs started")
    first = set(bench.rows())
    res = bench.cli("stop", str(bench.dir / "bench.plan.yaml"))  # its runs ignore SIGTERM: the bench waits for them
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("state") == "stopping", "the bench to stop")
    sweep.write_text(STOPPABLE.format(ledger=bench.ledger, release=bench.release, values=[0, 1]))  # without its third run
    (gone,) = first - {f"a.{r.id}" for r in load_sweep(sweep).runs}
    res = bench.cli("submit", str(sweep))
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "1 no longer in the sweep and running, left to end (not run again)" in out, out
    bench.release.touch()
    bench.wait_for(lambda: bench.launcher().get("state") == "exited", "the bench to end")
    assert {r["state"] for r in bench.rows().values()} == {"interrupted"}, bench.rows()
    if db == "lost":
        bench.db.unlink()
    res = bench.cli("submit", str(bench.sweep("b", [0])))  # the next bench start
    assert res.returncode == 0, res.stdout + res.stderr
    bench.wait_for(lambda: bench.launcher().get("state") == "exited" and any(rid.startswith("b.") for rid in bench.rows()), "the bench to finish")
    rows = bench.rows()
    starts = bench.starts()
    assert starts[gone] == 1, (starts, rows)  # started once, never again
    assert rows[gone]["state"] == "abandoned" and "no longer in its sweep" in rows[gone]["last_error"], rows[gone]
    assert {rows[r]["state"] for r in first - {gone}} == {"succeeded"} and all(starts[r] == 2 for r in first - {gone}), (starts, rows)
    res = bench.cli("status", str(bench.dir / "bench.plan.yaml"))
    assert gone in res.stdout and "cancelled" in res.stdout, res.stdout + res.stderr
