"""Outcomes: how an attempt's end moves its run on, recorded in the journal (no process: the
endings are made up as `Children` would report them)."""

from __future__ import annotations

import json
import signal
from contextlib import ExitStack

from migbench.launch.children import Ending
from migbench.launch.spec import attempt_dir
from tests.support.launchparts import LARGE, SMALL, outcome, parts, plan, run, started


def _ended(ps, rid):  # type: ignore[no-untyped-def]
    return [(e.outcome, e.error) for e in ps.journal.ended if e.run_id == rid]


def test_a_success_is_recorded_and_its_instance_reconsidered(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)
        a = started(ps, "a", SMALL.key)
        ps.admission.touched = []
        ps.outcomes.settle(Ending(a, "exit", outcome(0), 0))
        row = ps.journal.rows["a"]
        assert row.state == "succeeded" and row.exit_code == 0 and _ended(ps, "a") == [("succeeded", None)]
        assert ps.admission.touched == [SMALL.key] and "a" in ps.journal.dirty
        ps.journal.flush()
        assert ps.journal.store.runs()["a"].state == "succeeded"


def test_a_failure_is_retried_after_a_backoff_then_fails_for_good(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)  # retries 1, backoff 5 s
        a = started(ps, "a", SMALL.key)
        ps.outcomes.on_exit(a, outcome(3), 3)
        row = ps.journal.rows["a"]
        assert row.state == "queued" and row.not_before is not None and row.failures == 1
        assert "retry 1 of 1 in 5 s" in (row.last_error or "")
        a = started(ps, "a", SMALL.key)
        ps.outcomes.on_exit(a, outcome(-9, sig=signal.SIGKILL), -9)
        assert row.state == "failed" and row.last_error == "attempt 2: killed by SIGKILL (exit -9) (after 1 retries)"
        assert [o for o, _ in _ended(ps, "a")] == ["failed", "failed"]


def test_a_command_that_cannot_start_and_a_usage_error_are_not_retried(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)
        ps.outcomes.on_exit(started(ps, "a", SMALL.key), outcome(127), 127)
        ps.outcomes.on_exit(started(ps, "b", SMALL.key), outcome(2), 2)
        rows = ps.journal.rows
        assert rows["a"].state == "failed" and "not retried" in (rows["a"].last_error or "")
        assert rows["b"].state == "failed" and "a usage error" in (rows["b"].last_error or "")


def test_an_oom_alone_on_its_instance_moves_the_run_to_a_larger_one(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)
        a = started(ps, "a", SMALL.key)
        ps.outcomes.on_exit(a, outcome(1, oom=True), 1)
        row = ps.journal.rows["a"]
        assert (row.state, row.queue, row.need_mib) == ("queued", LARGE.ref, SMALL.memory_mib + 1)
        assert _ended(ps, "a")[0][0] == "oom" and "CUDA out of memory" in (_ended(ps, "a")[0][1] or "")
        c = started(ps, "c", LARGE.key)
        ps.outcomes.on_exit(c, outcome(1, oom=True), 1)
        assert ps.journal.rows["c"].state == "oom" and "no larger instance" in (ps.journal.rows["c"].last_error or "")


def test_the_flapping_guard_stops_new_starts_after_early_failures(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack, plan(tmp_path, flapping_max=2, retries=0))
        ps.outcomes.on_exit(started(ps, "a", SMALL.key), outcome(1), 1)
        assert ps.outcomes.flapping is None
        ps.outcomes.on_exit(started(ps, "c", LARGE.key), outcome(1), 1)
        assert ps.outcomes.flapping and "2 runs failed within 60 s" in ps.outcomes.flapping
        assert ps.journal.launcher_updates["state"] == "flapping"


def test_a_run_the_launcher_stopped_is_interrupted_with_the_stops_reason(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack, stop_reason="SIGINT: stopping")
        a = started(ps, "a", SMALL.key)
        a.stop_signaled = True
        ps.outcomes.on_exit(a, outcome(-15, sig=signal.SIGTERM), -15)
        row = ps.journal.rows["a"]
        assert row.state == "interrupted" and row.last_error == "interrupted by the launcher (SIGINT: stopping)" and row.failures == 0


def test_lost_unknown_and_halting_endings(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)
        ps.outcomes.settle(Ending(started(ps, "a", SMALL.key), "lost", why="its waiter died", halt="disk full: stopped starting runs"))
        ps.outcomes.settle(Ending(started(ps, "c", LARGE.key), "unknown", why="gone"))
        rows = ps.journal.rows
        assert rows["a"].state == "queued" and rows["a"].last_error == "attempt 1: its waiter died" and ps.journal.halted == "disk full: stopped starting runs"
        assert rows["c"].state == "unknown" and "--resume-unknown" in (rows["c"].last_error or "") and _ended(ps, "c") == [("unknown", "gone")]


def test_a_requeued_run_the_plan_no_longer_has_is_abandoned(tmp_path):
    with ExitStack() as stack:
        ps = parts(tmp_path, stack)
        ps.admission.admit(plan(tmp_path, runs=[run("b"), run("c", LARGE)]), 0.0)  # a dropped while it ran
        a = started(ps, "a", SMALL.key)
        ps.outcomes.settle(Ending(a, "lost", why="never ran"))
        assert ps.journal.rows["a"].state == "abandoned"


def test_recover_takes_results_requeues_and_resumes_on_request(tmp_path):
    """An earlier launcher's runs: one ended while nothing watched it (exit.json), one interrupted,
    one of unknown outcome resumed on request, one whose run never started."""
    with ExitStack() as stack:
        ps = parts(tmp_path, stack, plan(tmp_path, runs=[run("a"), run("b"), run("c", LARGE), run("d")]))
        sd, rows = ps.journal.keeper.sd, ps.journal.rows
        for rid, state in (("a", "running"), ("b", "interrupted"), ("c", "unknown"), ("d", "starting")):
            rows[rid].state, rows[rid].attempt, rows[rid].instance = state, 1, rows[rid].queue
            attempt_dir(sd, rid, 1).mkdir(parents=True)
        (attempt_dir(sd, "a", 1) / "exit.json").write_text(json.dumps({"returncode": 0, "exit_code": 0, "ended_at": 1.0}))
        (attempt_dir(sd, "d", 1) / "cmd.json").write_text("{}")
        resumed = ps.outcomes.recover(prev_stopping=False, resume_unknown=True)
        assert resumed == {"c"}
        assert {k: r.state for k, r in rows.items()} == {"a": "succeeded", "b": "queued", "c": "queued", "d": "queued"}
        assert not ps.journal.pending and ps.journal.store.runs()["d"].last_error == "attempt 1 never started its run"  # flushed
        assert not ps.children.active and "took 1 result(s), re-queued 3 run(s)" in ps.said[-1]
