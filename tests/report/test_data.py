"""The report's numbers: planned bars from the plan's replay, actual bars from launch.db (retries,
OOM moves), utilisation by the same definition as `migbench simulate`, series, memory, scale."""

from __future__ import annotations

import os
import re

import pytest

from migbench.forecast.simulate import simulate_plan
from migbench.report import ReportBuilder, build_report
from migbench.report.data import busy_intervals, peak_of, step_series
from tests.support.reportkit import plan_sweep, seed_like_yaml, write_state
from tests.support.statedir import sd_of

SMALL = """\
version: 1
name: small
fleet: [{gpu: A100-SXM4-80GB, count: 2}]
groups:
  - name: a
    command: python3 t.py {seed}
    parameters: {seed: [0, 1, 2, 3, 4, 5, 6, 7]}
    memory: 4GiB
    duration: 10s
    compute: 0.2
  - name: b
    command: python3 t.py {seed}
    parameters: {seed: [0, 1, 2]}
    memory: 30GiB
    duration: 20s
    compute: 0.5
"""


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    return plan_sweep(tmp_path_factory.mktemp("small"), SMALL, time_limit_s=0.5)


def test_step_series_sums_weights_and_merges_equal_steps():
    s = step_series([(0, 10, 1), (5, 15, 2), (10, 20, 1)])
    assert s == [(0.0, 1.0), (5, 3.0), (15, 1.0), (20, 0.0)]
    assert peak_of([(0, 10, 1), (5, 15, 2)]) == 3


def test_plan_only_report_has_a_planned_bar_per_run_and_the_plans_utilisation(small_plan):
    rep = build_report(small_plan, state_dir=sd_of(small_plan))
    planned = [b for b in rep.bars if b.kind == "planned"]
    assert sorted(b.run for b in planned) == sorted(r.id for r in small_plan.placed_runs())
    assert rep.launch is None and any("not launched yet" in n for n in rep.notes)
    sim = simulate_plan(small_plan)
    assert rep.planned is not None and rep.planned.utilisation == pytest.approx(sim.utilisation)
    assert rep.planned.makespan_s == pytest.approx(sim.makespan_s)
    # per GPU, weighted by slices, adds back to the sweep's figure
    total = sum(u.planned * u.slices for u in rep.utilisation) / sum(u.slices for u in rep.utilisation)
    assert total == pytest.approx(sim.utilisation)
    assert [g.gpu for g in rep.gpus] == small_plan.gpus()
    assert all(i.state in ("planned", "idle") for g in rep.gpus for i in g.instances)


def test_actual_bars_show_every_attempt_a_retry_and_an_oom_move(small_plan):
    w = write_state(small_plan)
    rep = build_report(small_plan, state_dir=sd_of(small_plan))
    actual = [b for b in rep.bars if b.kind == "actual"]
    assert {b.run for b in actual} == {r.id for r in small_plan.placed_runs()}
    assert len(actual) == len(small_plan.placed_runs()) + 2  # one retry, one OOM move
    retried = sorted((b for b in actual if b.run == w.retried), key=lambda b: b.attempt)
    assert [b.outcome for b in retried] == ["failed", "succeeded"] and retried[1].note.startswith("retry 1")
    moved = sorted((b for b in actual if b.run == w.moved), key=lambda b: b.attempt)
    assert [b.outcome for b in moved] == ["oom", "succeeded"]
    assert moved[1].instance == w.moved_to and "after an OOM" in moved[1].note and "retry" not in moved[1].note
    assert min(b.start_s for b in actual) == 0.0
    assert rep.launch is not None and rep.launch.counts["succeeded"] == len(small_plan.placed_runs())
    assert rep.actual is not None and 0 < rep.actual.utilisation <= 1
    assert all(i.state in ("done", "idle") for g in rep.gpus for i in g.instances)


def test_actual_occupancy_is_busy_slice_time_over_available(small_plan):
    """Hand check on the bars: busy slice-seconds (union per instance) / (fleet slices x span)."""
    write_state(small_plan, retry=False, oom=False)
    rep = build_report(small_plan, state_dir=sd_of(small_plan))
    actual = [b for b in rep.bars if b.kind == "actual"]
    slices = {i.key: i.compute_slices for g in rep.gpus for i in g.instances}
    busy = sum(slices[k] * sum(e - s for s, e in ivs) for k, ivs in busy_intervals(actual).items())
    span = max(b.end_s for b in actual)
    assert rep.actual is not None
    assert rep.actual.occupancy == pytest.approx(busy / (14 * span))


def test_a_running_sweep_shows_running_and_queued_instances_and_measured_peaks(small_plan):
    w = write_state(small_plan, done_fraction=0.5, alive_pid=os.getpid())
    rep = build_report(small_plan, state_dir=sd_of(small_plan), now=w.t0 + 10_000)
    states = {i.state for g in rep.gpus for i in g.instances}
    assert "running" in states
    assert rep.launch is not None and rep.launch.running
    running = [b for b in rep.bars if b.kind == "actual" and b.outcome == "running"]
    assert running and all(b.end_s == pytest.approx(10_000) for b in running)
    measured = [m for m in rep.memory_runs if m.peak_mib is not None]
    assert measured and all(m.source == "launch.db" for m in measured)
    assert any(i.measured_peak_mib is not None for i in rep.memory_instances)
    assert all(i.planned_headroom_mib >= 0 for i in rep.memory_instances)


def test_a_dead_launchers_running_attempts_end_at_its_last_heartbeat(small_plan):
    """Guards: attempts a crashed launcher left `running` stretched to the wall clock (days wide)."""
    w = write_state(small_plan, done_fraction=0.5)
    rep = build_report(small_plan, state_dir=sd_of(small_plan), now=w.t0 + 10**7)
    assert rep.launch is not None and not rep.launch.running
    assert rep.launch.span_s < 10**4


def test_footprints_seam_adds_peaks_and_launch_db_wins(small_plan):
    write_state(small_plan)
    rid = small_plan.placed_runs()[0].id
    other = small_plan.placed_runs()[-1].id
    rep = build_report(small_plan, state_dir=sd_of(small_plan), peaks={rid: (1, "footprints.yaml"), other: (2, "footprints.yaml")})
    by = {m.id: m for m in rep.memory_runs}
    assert by[rid].source == "launch.db" and by[rid].peak_mib and by[rid].peak_mib > 1


def test_the_plan_side_is_computed_once_per_builder(small_plan, monkeypatch):
    b = ReportBuilder(small_plan, state_dir=sd_of(small_plan), grain=False)
    import migbench.report.data as data

    monkeypatch.setattr(data, "play_plan", lambda *a, **k: pytest.fail("replayed the plan again"))
    write_state(small_plan)
    assert b.build().report.actual is not None
    assert b.build().html


@pytest.mark.slow
def test_seed_like_report_is_detailed_and_large_plans_summarise(tmp_path):
    plan = plan_sweep(tmp_path, seed_like_yaml(), time_limit_s=1.0)
    write_state(plan)
    rep = build_report(plan, state_dir=sd_of(plan))
    assert rep.detail and not rep.summarised
    assert rep.runs == 90 and len(rep.gpus) == 4
    small = build_report(plan, state_dir=sd_of(plan), detail=False)
    assert not small.detail and any("heat map" in s for s in small.summarised)


def test_a_lent_run_gets_its_own_mark_not_the_oom_edge(small_plan):
    """Bug: runs moved by lending were drawn with the dashed red "moved after an OOM" edge."""
    from migbench.report.charts import gantt
    from migbench.report.html import render

    w = write_state(small_plan, lend=True)
    rep = build_report(small_plan, state_dir=sd_of(small_plan))
    lent = [b for b in rep.bars if b.kind == "actual" and b.run == w.lent]
    assert w.lent and len(lent) == 1 and lent[0].instance == w.lent_to
    assert "lent instance" in lent[0].note and "OOM" not in lent[0].note
    svg = gantt(rep, rep.gpus)
    classes = re.findall(r'class="(bar actual[^"]*)"', svg)
    assert sum("lent" in c.split() for c in classes) == 1 and sum("moved" in c.split() for c in classes) == 1
    page = render(rep)
    assert "lent instance</span>" in page and "moved after an OOM</span>" in page


def test_utilisation_is_busy_compute_and_occupancy_is_named_apart(tmp_path):
    """Bug: utilisation was slice occupancy, so one light run on a whole GPU scored 100 %."""
    one = SMALL.replace("count: 2", "count: 1").split("  - name: a")[0] + (
        "  - name: a\n    command: python3 t.py\n    memory: 60GiB\n    duration: 1h\n    compute: 0.2\n"
    )
    plan = plan_sweep(tmp_path, one, time_limit_s=0.5)
    sim = simulate_plan(plan)
    assert [i.profile for i in plan.instances] == ["7g.80gb"]
    assert sim.utilisation == pytest.approx(0.2) and sim.occupancy == pytest.approx(1.0)
    rep = build_report(plan, state_dir=sd_of(plan))
    assert rep.planned is not None and rep.planned.utilisation == pytest.approx(0.2)
    assert [u.planned for u in rep.utilisation] == [pytest.approx(0.2)]
