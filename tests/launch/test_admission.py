"""Admission: the plan's runs in queues over the journal's rows, and what starts now (no process)."""

from __future__ import annotations

import time
from contextlib import ExitStack

from migbench.launch.admission import Admission
from migbench.launch.options import OOM_RANK_SHIFT
from migbench.launch.prepare import start_order
from migbench.launch.store import RunRow
from migbench.plan import PlanInstance, Unplaced
from tests.support.launchparts import LARGE, SMALL, journal, plan, run

OTHER = PlanInstance(0, "1g.10gb", 1, 9728, 1 / 7, ("d",))


def test_admit_queues_new_runs_and_brings_stored_rows_to_the_plan(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        j.rows = {
            "b": RunRow(id="b", ord=5, state="succeeded", home=SMALL.ref, queue=SMALL.ref),
            "c": RunRow(id="c", ord=2, state="queued", home=SMALL.ref, queue=LARGE.ref, rank=-7, need_mib=20000),  # moved by an OOM
            "gone": RunRow(id="gone", ord=9, state="queued", queue=SMALL.ref),
            "late": RunRow(id="late", ord=9, state="abandoned", home=SMALL.ref, queue=SMALL.ref, last_error="x"),
        }
        p = plan(tmp_path, runs=[run("a"), run("b"), run("c", SMALL), run("late", LARGE)], unplaced=[Unplaced("u", 99999, "too big")])
        adm = Admission(j)
        changed = adm.admit(p, 100.0)
        rows = j.rows
        assert rows["a"].state == "queued" and rows["a"].queue == SMALL.ref and rows["a"].rank == 0 and rows["a"].queued_at == 100.0
        assert rows["b"].state == "succeeded" and rows["b"].rank == 1  # finished: kept, in the plan's place
        assert (rows["c"].queue, rows["c"].rank, rows["c"].need_mib) == (LARGE.ref, -7, 20000)  # its escalation kept
        assert rows["late"].state == "queued" and rows["late"].queue == LARGE.ref  # an abandoned run the plan places again
        assert rows["gone"].state == "abandoned" and rows["gone"].last_error == "no longer in the plan"
        assert rows["u"].state == "abandoned" and "too big" in (rows["u"].last_error or "")
        assert [r.id for r in changed][:4] == [r.id for r in start_order(p)] and {r.id for r in changed} == {"a", "b", "c", "late", "u", "gone"}
        assert adm.retries("a") == 1 and adm.retries("nope") == 0 and adm.in_plan(rows["a"]) and not adm.in_plan(rows["gone"])


def test_a_second_admit_adds_runs_and_instances_to_the_queues(tmp_path):
    """The seam a live launcher takes a grown plan through: new runs and instances join the queues,
    a queued run the plan no longer has is abandoned, a running one is left alone."""
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        adm = Admission(j)
        adm.admit(plan(tmp_path, runs=[run("a"), run("b")], instances=[SMALL]), time.time())
        j.rows["a"].state = "running"
        assert adm.pick(time.time(), [("a", SMALL.key)]) == []  # b waits for a's instance
        grown = plan(tmp_path, runs=[run("a"), run("d", OTHER)], instances=[SMALL, OTHER])
        adm.admit(grown, time.time())
        assert j.rows["b"].state == "abandoned" and j.rows["a"].state == "running"
        assert adm.pick(time.time(), [("a", SMALL.key)]) == [("d", OTHER.key)]


def test_pick_skips_unbound_instances_and_decides_again_only_when_touched(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        unbound: set[str] = set()
        adm = Admission(j, unbound=unbound)
        adm.admit(plan(tmp_path), time.time())
        unbound.add(SMALL.key)  # the device check's set, changed in place
        assert adm.pick(time.time(), []) == [("c", LARGE.key)]
        assert adm.idle()
        adm.touch(SMALL.key)
        assert not adm.idle() and adm.touched == [SMALL.key]
        unbound.clear()
        j.rows["c"].state = "running"
        assert adm.pick(time.time(), [("c", LARGE.key)]) == [("a", SMALL.key)]  # one at a time: 1024 MiB each, max 1 per instance


def test_end_backoffs_readies_runs_whose_backoff_is_over(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        adm = Admission(j)
        adm.admit(plan(tmp_path), 100.0)
        j.dirty.clear()
        adm.pick(100.0, [])  # the first decision: from now on only touched instances
        j.rows["a"].not_before, j.rows["c"].not_before = 90.0, 130.0
        assert adm.end_backoffs(100.0) == 130.0
        assert j.rows["a"].not_before is None and j.dirty == {"a"} and adm.touched == [SMALL.key]
        assert [w.id for w in adm.waiting(100.0) if not w.ready] == ["c"]


def test_escalate_and_move_put_an_oom_run_ahead_on_a_larger_instance(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        adm = Admission(j)
        adm.admit(plan(tmp_path), time.time())
        row = j.rows["a"]
        assert adm.escalate(row, SMALL.memory_mib + 1, SMALL.key, []) == LARGE.ref
        assert adm.escalate(row, LARGE.memory_mib + 1, SMALL.key, []) is None  # nothing larger allows it
        adm.pick(time.time(), [])
        adm.move(row, LARGE.ref, SMALL.memory_mib + 1)
        assert (row.state, row.queue, row.need_mib, row.rank) == ("queued", LARGE.ref, SMALL.memory_mib + 1, row.ord - OOM_RANK_SHIFT)
        assert adm.touched == [LARGE.key]


def test_running_jobs_use_what_is_now_known_of_each_runs_memory(tmp_path):
    with ExitStack() as stack:
        j = journal(tmp_path, stack)
        adm = Admission(j)
        adm.admit(plan(tmp_path), time.time())
        j.rows["a"].need_mib = 5000
        jobs = adm.running_jobs([("a", SMALL.key), ("c", LARGE.key)])
        assert [d.memory_mib for d in jobs[SMALL.key]] == [5000] and [d.memory_mib for d in jobs[LARGE.key]] == [1024]
