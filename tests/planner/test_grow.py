"""A grown sweep joins the host's layout (issue 21): `planner.grow.grow_plan` keeps the earlier plan's
runs, places the runs to start on existing instances, re-cuts only idle GPUs and only for runs that
fit nothing, and gives the same plan for the same inputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migbench.errors import InputError
from migbench.plan import Plan
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.planner.grow import RunState, grow_plan
from migbench.sweep import load_sweep
from migbench.types import InstanceRef
from tests.support.statedir import sd_at

SMALL = """
version: 1
name: g
groups:
  - name: a
    command: python train.py --seed {seed}
    parameters: {seed: [0, 1, 2, 3]}
    memory: 8GiB
    duration: 2h
    compute: 0.1
"""

BIG = """
  - name: big
    command: python train.py --all --seed {seed}
    parameters: {seed: [0]}
    memory: 60GiB
    duration: 6h
"""


SWARM = SMALL.replace("[0, 1, 2, 3]", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]")
"""Enough small runs that the planner cuts both GPUs fine (no instance holds a whole-GPU run)."""


def _earlier(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "g.yaml"
    f.write_text(text)
    fleet = build_fleet([FleetSpec("A100-SXM4-80GB", 2)])
    plan = make_plan(load_sweep(f), fleet, SolveOptions(time_limit_s=5, work_s=0.5))
    plan.save(tmp_path / "g.plan.yaml")
    return Plan.load(tmp_path / "g.plan.yaml"), fleet


@pytest.fixture
def earlier(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4-run sweep planned for 2 GPUs, saved and read back; the fleet."""
    return _earlier(tmp_path, SMALL)


def _sweep(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "g.yaml"
    f.write_text(text)
    return load_sweep(f)


def _done(plan: Plan) -> dict[str, RunState]:
    return {r.id: RunState("succeeded", r.instance_key) for r in plan.placed_runs()}


def test_a_new_run_goes_on_an_idle_instance_and_every_run_is_kept(earlier, tmp_path):
    """Guards: a grown sweep's plan held only its new run (the report said "1 runs") and re-cut every GPU."""
    old, fleet = earlier
    sweep = _sweep(tmp_path, SMALL.replace("[0, 1, 2, 3]", "[0, 1, 2, 3, 4]"))
    grown = grow_plan(old, sweep, fleet, _done(old))
    assert grown is not None and grown.recut_gpus == ()
    plan = grown.plan
    assert [i.ref for i in plan.instances] == [i.ref for i in old.instances]  # no re-cut: the same instances
    assert len(plan.runs) == 5 and len(grown.starting) == 1
    new = plan.run(grown.starting[0])
    assert new.done is None and new.instance_key is not None and new.wave and new.wave >= 1
    assert new.est_start_s is not None and new.est_end_s is not None
    for r in old.runs:  # kept where they ran, marked done, first in their instance's queue
        kept = plan.run(r.id)
        assert kept.done == "succeeded" and kept.ran_on == r.instance_key and kept.instance_key == r.instance_key
    queue = next(i.runs for i in plan.instances if i.key == new.instance_key)
    assert queue[-1] == new.id
    assert grown.decided[0].startswith(f"1 new run to start on the idle {new.at.profile}@{new.at.start} of GPU {new.gpu}; no re-cut")
    # the file reads back as it was written, and the same inputs give the same bytes
    plan.save(tmp_path / "grown.plan.yaml")
    again = grow_plan(old, sweep, fleet, _done(old))
    assert again is not None and again.plan.to_yaml() == plan.to_yaml()
    assert Plan.load(tmp_path / "grown.plan.yaml").to_yaml() == plan.to_yaml()


def test_a_run_needing_a_bigger_instance_re_cuts_only_an_idle_gpu(tmp_path):
    """Guards: a grown sweep re-partitioned every GPU; a GPU with a live run must never be re-cut."""
    old, fleet = _earlier(tmp_path, SWARM)
    assert all(i.profile != "7g.80gb" for i in old.instances)
    sweep = _sweep(tmp_path, SWARM + BIG)
    states = _done(old)
    first = old.placed_runs()[0]
    states[first.id] = RunState("running", first.instance_key)  # a launcher's run still on GPU `busy`
    busy = first.gpu
    grown = grow_plan(old, sweep, fleet, states)
    assert grown is not None and grown.recut_gpus and busy not in grown.recut_gpus
    plan = grown.plan
    assert plan.layout(busy) == old.layout(busy)
    (big,) = [r for r in plan.runs if r.group == "big"]
    assert big.at.profile == "7g.80gb" and big.gpu in grown.recut_gpus
    # a finished run whose instance was re-cut keeps where it ran, and is no longer placed
    gone = [r for r in plan.runs if r.done and r.gpu is None]
    assert gone and all(r.ran_on and InstanceRef.parse(r.ran_on).gpu in grown.recut_gpus for r in gone)
    assert plan.run(first.id).instance_key == first.instance_key and plan.run(first.id).done is None
    assert any("re-cut from" in d for d in grown.decided)
    plan.save(tmp_path / "grown.plan.yaml")
    assert len(Plan.load(tmp_path / "grown.plan.yaml").runs) == 15


def test_a_removed_run_is_dropped_unless_it_finished(earlier, tmp_path):
    old, fleet = earlier
    sweep = _sweep(tmp_path, SMALL.replace("[0, 1, 2, 3]", "[0, 1]"))
    ids = [r.id for r in old.runs]
    gone = [r.id for r in old.runs if r.id not in {x.id for x in sweep.runs}]
    states = {ids[0]: RunState("succeeded", old.run(ids[0]).instance_key)}
    states |= {g: RunState("succeeded", old.run(g).instance_key) for g in gone[:1]}
    grown = grow_plan(old, sweep, fleet, states)
    assert grown is not None
    kept = {r.id for r in grown.plan.runs}
    assert gone[0] in kept and gone[1] not in kept  # the finished one is history; the other never started
    assert any("dropped" in d and gone[1] in d for d in grown.decided)


def test_a_changed_fleet_is_not_grown(earlier, tmp_path):
    old, _ = earlier
    assert grow_plan(old, _sweep(tmp_path, SMALL), build_fleet([FleetSpec("A100-SXM4-80GB", 3)]), {}) is None


def test_a_plan_file_with_a_bad_done_mark_is_refused(earlier, tmp_path):
    old, fleet = earlier
    path = tmp_path / "bad.plan.yaml"
    grown = grow_plan(old, _sweep(tmp_path, SMALL), fleet, _done(old))
    assert grown is not None
    grown.plan.save(path)
    path.write_text(path.read_text().replace("done: succeeded", "done: maybe", 1).replace("ran_on: 0:", "ran_on: x", 1))
    with pytest.raises(InputError) as exc:
        Plan.load(path)
    text = "\n".join(" ".join(line) for line in exc.value.lines())
    assert re.search(r"bad\.plan\.yaml:\d+: runs\[0\]\.done: the string 'maybe' is not a final state", text), text
    assert re.search(r"bad\.plan\.yaml:\d+: runs\[0\]\.ran_on: 'x.*' is not an instance", text), text


def test_simulate_and_report_of_a_grown_plan_show_the_whole_sweep(earlier, tmp_path):
    """Guards: the report of a grown sweep's plan said "1 runs" and lost the earlier runs' grid and timeline."""
    from migbench.forecast.simulate import simulate_plan
    from migbench.report import build_report

    old, fleet = earlier
    grown = grow_plan(old, _sweep(tmp_path, SMALL.replace("[0, 1, 2, 3]", "[0, 1, 2, 3, 4]")), fleet, _done(old))
    assert grown is not None
    grown.plan.save(tmp_path / "g.plan.yaml")
    plan = Plan.load(tmp_path / "g.plan.yaml")
    sim = simulate_plan(plan)
    assert sim.runs == 5 and sim.makespan_s >= (old.solver.makespan_s or 0)
    report = build_report(plan, state_dir=sd_at(tmp_path / "none"), now=0.0)
    assert report.runs == 5 and {b.run for b in report.bars if b.kind == "planned"} == {r.id for r in plan.runs}
    new = plan.run(grown.starting[0])
    bar = next(b for b in report.bars if b.run == new.id)
    assert (bar.start_s, bar.end_s) == (new.est_start_s, new.est_end_s)  # the plan's estimate is its played start


def test_a_plan_file_of_the_new_runs_only_is_made_whole_again_from_the_launch_state(earlier, tmp_path):
    """Guards: a plan file written by `run` before the fix held only the new run; the runs that
    finished before are only in the launch state, and the grown plan lists them again, marked done."""
    old, fleet = earlier
    last = old.runs[-1]
    only = Plan.from_dict(
        dict(
            old.to_dict(),
            runs=[r for r in old.to_dict()["runs"] if r["id"] == last.id],
            instances=[dict(i, runs=[x for x in i["runs"] if x == last.id]) for i in old.to_dict()["instances"]],
        )
    )
    states = _done(old)
    states[last.id] = RunState("queued", None)
    sweep = _sweep(tmp_path, SMALL)
    grown = grow_plan(only, sweep, fleet, states)
    assert grown is not None and grown.starting == (last.id,)
    plan = grown.plan
    assert [r.id for r in plan.runs] == [r.id for r in sweep.runs]
    for r in old.runs[:-1]:
        assert plan.run(r.id).done == "succeeded" and plan.run(r.id).ran_on == r.instance_key and plan.run(r.id).gpu is None


def test_a_live_run_the_earlier_plan_does_not_list_still_keeps_its_gpu_from_a_re_cut(tmp_path):
    """Guards: only the earlier plan's runs made instances busy; a run still live in the launch state
    but missing from the plan file (a plan of the new runs only) left its GPU open to a re-cut."""
    old, fleet = _earlier(tmp_path, SWARM)
    runs = old.placed_runs()
    on0 = next(r for r in runs if r.gpu == 0)
    doc = old.to_dict()
    only = Plan.from_dict(
        dict(doc, runs=[r for r in doc["runs"] if r["id"] != on0.id], instances=[dict(i, runs=[x for x in i["runs"] if x != on0.id]) for i in doc["instances"]])
    )
    states = _done(old)
    states[on0.id] = RunState("running", on0.instance_key)
    grown = grow_plan(only, _sweep(tmp_path, SWARM + BIG), fleet, states)
    assert grown is not None and 0 not in grown.recut_gpus and grown.recut_gpus == (1,)
    kept = grown.plan.run(on0.id)
    assert kept.done is None and kept.instance_key == on0.instance_key
    assert next(i for i in grown.plan.instances if i.key == on0.instance_key).runs[0] == on0.id
    grown.plan.save(tmp_path / "x.plan.yaml")
    Plan.load(tmp_path / "x.plan.yaml")  # reads back: the live run is listed on its instance
    # and one that neither the plan nor the sweep knows fills its instance all the same
    states["gone-0123456789"] = RunState("running", on0.instance_key)
    del states[on0.id]
    grown = grow_plan(only, _sweep(tmp_path, SWARM + BIG), fleet, states)
    assert grown is not None and 0 not in grown.recut_gpus


def test_a_new_run_queues_behind_live_runs_when_every_instance_is_busy(earlier, tmp_path):
    """Guards: with every instance busy the first wave placed nothing and the new run was left unplaced."""
    old, fleet = earlier
    states = {r.id: RunState("running", r.instance_key) for r in old.placed_runs()}
    states |= {f"other-{n}": RunState("running", i.key) for n, i in enumerate(old.instances) if not i.runs}
    grown = grow_plan(old, _sweep(tmp_path, SMALL.replace("[0, 1, 2, 3]", "[0, 1, 2, 3, 4]")), fleet, states)
    assert grown is not None and not grown.plan.unplaced and len(grown.starting) == 1
    new = grown.plan.run(grown.starting[0])
    assert new.wave and new.wave >= 1 and [i.ref for i in grown.plan.instances] == [i.ref for i in old.instances]
    assert grown.decided[0].startswith("1 new run to start on the busy ") and grown.recut_gpus == ()


def test_runs_that_would_wait_start_on_instances_added_in_an_idle_gpus_unused_slices(tmp_path):
    """More runs than the instances take at once: an idle GPU gets instances in its unused slices
    (none destroyed, the old ones keep their queues); a GPU with a live run gets none."""
    old, fleet = _earlier(tmp_path, SMALL.replace("[0, 1, 2, 3]", "[0, 1]"))
    doc = old.to_dict()
    thin = Plan.from_dict(dict(doc, instances=[i for i in doc["instances"] if i["runs"]]))  # unused slices
    assert sum(len(thin.layout(g)) for g in (0, 1)) == 2
    grown = grow_plan(thin, _sweep(tmp_path, SWARM), fleet, _done(thin))
    assert grown is not None
    plan = grown.plan
    assert {i.ref for i in thin.instances} < {i.ref for i in plan.instances}  # only added
    assert all(plan.run(r.id).instance_key == r.instance_key for r in thin.runs)
    assert any("added in its unused slices, none destroyed" in d for d in grown.decided)
    assert grown.decided[0].startswith("12 new runs to start on the idle ") and "; instances added on idle GPU(s) " in grown.decided[0]
    waves = [plan.run(rid).wave for rid in grown.starting]
    assert len(grown.starting) == 12 and sum(1 for w in waves if w == min(waves)) > 2
    # the same with its runs live: their GPUs get nothing added
    live = {r.id: RunState("running", r.instance_key) for r in thin.runs}
    still = grow_plan(thin, _sweep(tmp_path, SWARM), fleet, live)
    busy = {r.gpu for r in thin.runs}
    assert still is not None and not busy & set(still.recut_gpus)
    assert all(still.plan.layout(g) == thin.layout(g) for g in busy)
