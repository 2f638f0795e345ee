"""bench/living.py's workloads and comparisons (issue 21's measurement)."""

from __future__ import annotations

import pytest

from bench.living import GIB, HOUR, across_seeds, one_batch, replan_when_empty, static_plan, two_pipelines
from migbench.forecast.living import fixed_policy, play, recut_bound, volume_bound
from migbench.types import Placement
from tests.forecast.test_living import audit


def test_two_pipelines_is_the_seed_workload():
    """40 small runs at 0 h, 4 whole-GPU runs at 2 h, 40 small runs at 8 h, in the issue's ranges."""
    case = two_pipelines(21, 4)
    assert [(s.at_s, len(s.runs)) for s in case.subs] == [(0.0, 40), (2 * HOUR, 4), (8 * HOUR, 40)]
    small = [d for s in (case.subs[0], case.subs[2]) for d in s.runs]
    assert all(5 * GIB <= d.memory_mib <= 20 * GIB and 6 * HOUR <= d.work_s <= 18 * HOUR for d in small)
    assert all(0.08 <= d.compute <= 0.16 for d in small)
    assert all(d.compute == 1.0 and d.memory_mib >= 60 * GIB for d in case.subs[1].runs)
    assert case == two_pipelines(21, 4)  # seeded
    batch = one_batch(21)
    assert len(batch.subs) == 1 and len(batch.subs[0].runs) == 84


@pytest.mark.slow
def test_the_comparisons_play_every_run_and_stay_above_the_bound():
    """(a) plays every run legally; (c), fixed for the first sweep, cannot run the whole-GPU runs;
    (c') re-plans when the host is empty and runs them all; (d) is under all of them."""
    case = two_pipelines(21, 4)
    living = play(case.fleet, case.subs)
    audit(living, case.subs, 4)
    first, _ = static_plan(case.subs[0].runs, case.fleet, 2.0)
    fixed = play(case.fleet, case.subs, fixed_policy(), initial=first)
    if (Placement("7g.80gb", 0),) not in first.values():
        assert fixed.unrunnable == tuple(sorted(d.id for d in case.subs[1].runs))
    workaround = play(case.fleet, case.subs, replan_when_empty(case.fleet, 2.0), initial=first)
    audit(workaround, case.subs, 4)
    bound = recut_bound(case.fleet, case.subs)
    assert bound <= living.makespan_s and bound <= workaround.makespan_s


@pytest.mark.slow
def test_the_summary_over_seeds_has_each_case_above_the_bound():
    """The (a)-against-(d) summary: one row per case, every excess over the bound >= 0."""
    rows = [line for line in across_seeds(2).splitlines() if line.startswith("| two") or line.startswith("| one")]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c.rstrip(" %")) >= 0 for c in cells[1:]), row


@pytest.mark.slow
def test_the_bound_is_above_the_volume_bound_and_under_the_bench_on_every_case():
    """On every case of the bench's own draw (seed 21; seeds 1-2 in the summary above, generated
    cases in test_recut_lp): the volume bound <= (d) <= what (a) plays."""
    for case in (two_pipelines(21, 4), two_pipelines(21, 8), one_batch(21)):
        bound = recut_bound(case.fleet, case.subs)
        assert volume_bound(case.fleet, case.subs) <= bound <= play(case.fleet, case.subs).makespan_s, case.name
