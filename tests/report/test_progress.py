"""The live view's numbers: progress of running runs, the correction factor, the ETA played by the
one event player; the plan is read once."""

from __future__ import annotations

import pytest

from migbench.report.progress import SweepProgress
from tests.support.reportkit import plan_sweep

ONE = """\
version: 1
name: one
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
groups:
  - name: a
    command: python3 t.py {seed}
    parameters: {seed: [0, 1]}
    memory: 70GiB
    duration: 100s
    compute: 1.0
"""


@pytest.fixture(scope="module")
def one_plan(tmp_path_factory):
    """Two 70 GiB runs: one 7g instance, one after the other (each 100 s)."""
    return plan_sweep(tmp_path_factory.mktemp("one"), ONE, time_limit_s=0.3)


def doc(runs, alive=True):
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {"sweep": "one", "total": len(runs), "counts": counts, "runs": runs, "launcher": {"alive": alive, "pid": 1}}


def test_eta_is_the_remaining_work_corrected_by_what_finished(one_plan):
    p = SweepProgress(one_plan)
    inst = one_plan.instances[0].key
    first, second = (one_plan.instances[0].runs[0], one_plan.instances[0].runs[1])
    # the first took 200 s where the plan expected 100 s: factor 2; the second has run 50 s of its 200
    snap = p.snapshot(
        doc(
            [
                {"id": first, "state": "succeeded", "elapsed_s": 200.0, "instance": inst, "queue": inst, "attempt": 1},
                {"id": second, "state": "running", "elapsed_s": 50.0, "instance": inst, "queue": inst, "attempt": 1},
            ]
        ),
        now=1000.0,
    )
    assert snap.factor == pytest.approx(2.0) and snap.finished_sample == 1
    assert snap.eta_s == pytest.approx(150.0, rel=1e-3)
    running = [r for g in snap.gpus for i in g.instances for r in i.runs if r.state == "running"]
    assert running[0].fraction == pytest.approx(0.25)
    assert (snap.done, snap.running, snap.queued) == (1, 1, 0)


def test_eta_keeps_its_time_of_day_until_a_run_changes_state(one_plan, monkeypatch):
    p = SweepProgress(one_plan)
    inst = one_plan.instances[0].key
    rows = [{"id": rid, "state": "queued", "elapsed_s": None, "instance": inst, "queue": inst, "attempt": 0} for rid in one_plan.instances[0].runs]
    a = p.snapshot(doc(rows), now=0.0)
    assert a.eta_s == pytest.approx(200.0) and a.factor is None
    import migbench.report.progress as progress

    monkeypatch.setattr(progress, "replay", lambda *x, **k: pytest.fail("replayed although nothing changed"))
    b = p.snapshot(doc(rows), now=30.0)
    assert b.eta_s == pytest.approx(170.0)


def test_a_plan_without_durations_has_no_eta(tmp_path):
    plan = plan_sweep(tmp_path, ONE.replace("    duration: 100s\n", ""), time_limit_s=0.3)
    snap = SweepProgress(plan).snapshot(doc([]))
    assert snap.eta_s is None and any("no ETA" in n for n in snap.notes)
