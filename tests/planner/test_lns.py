"""The makespan planner's large neighbourhoods (issue 20, item 4): plans as short as a search finds,
deterministic, inside the budget."""

from __future__ import annotations

import pytest

from bench.scenarios import all_scenarios, seed_workload
from migbench.planner import SolveOptions, solve
from migbench.planner.budget import default_work


def _seed_plan():
    sc = seed_workload(7, 90, 4, whole=6)  # bench/run.py's "seed 90x4"
    return solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=600, work_s=default_work(10, len(sc.runs)), objective="makespan"))


@pytest.mark.slow
def test_seed_sweep_at_the_default_budget_is_within_half_a_percent_of_its_bound() -> None:
    """Bug: the default (10 s) plan of seed 90x4 took 60.0 h where 57.8 h plans exist (bound 57.7 h):
    three 6 h runs queued behind a 7g's whole-GPU runs, which no one-run move could take away."""
    sol = _seed_plan()
    assert sol.makespan_s is not None and sol.makespan_s <= 58.4 * 3600
    assert sol.gap <= 0.005
    again = _seed_plan()  # the same budget, the same plan: nothing depends on the clock
    assert again.layouts == sol.layouts and again.assigned == sol.assigned


@pytest.mark.slow
def test_large_mixed_sweep_at_sixty_seconds_is_within_one_percent_of_the_best_known() -> None:
    """Bug: mixed 1000x64 at `--time-limit 60` stayed at 52.0 h (best known 50.0 h): a dozen instances
    ended together at the top, the pair and gpu neighbourhoods could not bring them all down, and at
    1000 runs each repair's polish took so much of the budget that only 15 repairs were tried."""
    sc = next(s for s in all_scenarios() if s.name == "mixed 1000x64")
    sol = solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=1200, work_s=default_work(60, len(sc.runs)), objective="makespan"))
    assert sol.makespan_s is not None and sol.makespan_s <= 1.01 * 50.0 * 3600


def _mixed_plan(name: str):
    sc = next(s for s in all_scenarios() if s.name == name)
    return solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=600, work_s=default_work(10, len(sc.runs)), objective="makespan"))


@pytest.mark.slow
def test_small_mixed_sweep_at_the_default_budget_is_within_three_percent_of_the_best_known() -> None:
    """Bug: the default (10 s) plan of mixed 120x8 took 64 h (best known 62 h): the layout moves took
    most of the budget, and the large neighbourhoods were left 4 repairs, too few to bring down the
    four instances that ended together at 64 h."""
    sol = _mixed_plan("mixed 120x8")
    assert sol.makespan_s is not None and sol.makespan_s <= 1.03 * 62.0 * 3600


@pytest.mark.slow
def test_large_mixed_sweep_at_the_default_budget_is_within_three_percent_of_the_best_known() -> None:
    """Bug: the default (10 s) plan of mixed 1000x64 took 52 h (best known 50 h): the large
    neighbourhoods were left a seventh of the budget and each repair's polish took as much as at 100
    runs, so only 14 repairs were tried."""
    sol = _mixed_plan("mixed 1000x64")
    assert sol.makespan_s is not None and sol.makespan_s <= 1.03 * 50.0 * 3600
