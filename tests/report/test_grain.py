"""The grain lever: the fleet's grains, the models restricted per grain, the lever planned by the
planner at each grain and the chosen plan marked."""

from __future__ import annotations

import pytest

from migbench.catalog import default_catalog
from migbench.duration import Demand, DurationModel
from migbench.planner import FleetGpu
from migbench.report.grain import at_grain, grain_lever, grains, lever_of_plan
from tests.support.reportkit import plan_sweep

GIB = 1024


def fleet(model: str = "A100-SXM4-80GB", n: int = 2) -> list[FleetGpu]:
    m = default_catalog().model(model)
    return [FleetGpu(i, m) for i in range(n)]


def test_grains_of_an_a100_go_from_the_whole_gpu_to_one_slice():
    assert grains(fleet()) == [7, 4, 3, 2, 1]


def test_a_grain_keeps_every_larger_profile_and_drops_the_smaller():
    f = at_grain(fleet(), 3)
    names = {p.name for p in f[0].model.plain_profiles()}
    assert names == {"3g.40gb", "4g.40gb", "7g.80gb"}
    assert at_grain(fleet(), 7)[0].model.layouts() == [tuple(at_grain(fleet(), 7)[0].model.layouts()[0])]
    # a model whose largest profile is below the grain keeps its largest (A30: 4 slices)
    a30 = at_grain(fleet("A30", 1), 7)[0].model
    assert [p.compute_slices for p in a30.plain_profiles()] == [4]


@pytest.mark.slow
def test_the_lever_goes_from_one_instance_per_gpu_to_the_finest_and_marks_the_chosen():
    runs = [Demand(f"r{i}", 4 * GIB, 3600.0, 0.2, 2) for i in range(12)]
    lever = grain_lever(runs, fleet(), DurationModel(), time_limit_s=0.3)
    pts = lever.points
    assert [p.grain for p in pts] == [7, 4, 3, 2, 1]
    assert pts[0].instances == 2 and all(len(v) == 1 for v in pts[0].per_gpu.values())
    assert pts[-1].instances > pts[0].instances
    assert pts[-1].runs_at_once > pts[0].runs_at_once
    assert pts[-1].makespan_s is not None and pts[0].makespan_s is not None and pts[-1].makespan_s < pts[0].makespan_s
    assert [p.chosen for p in pts] == [False, False, False, False, True]
    assert all(p.unplaced == 0 for p in pts)
    doc = lever.to_dict()
    assert doc["timed"] and len(doc["grains"]) == 5


def test_without_durations_the_lever_shows_runs_at_once_only():
    runs = [Demand(f"r{i}", 4 * GIB) for i in range(6)]
    lever = grain_lever(runs, fleet(n=1), DurationModel(), time_limit_s=0.2)
    assert not lever.timed and all(p.utilisation is None and p.makespan_s is None for p in lever.points)
    assert lever.points[-1].runs_at_once == 6


@pytest.mark.slow
def test_a_plans_lever_uses_the_plan_itself_at_the_finest_grain(tmp_path):
    from tests.report.test_data import SMALL

    plan = plan_sweep(tmp_path, SMALL, time_limit_s=0.5)
    lever = lever_of_plan(plan, None, time_limit_s=0.3)
    last = lever.points[-1]
    assert last.from_plan and last.chosen and last.instances == len(plan.instances)
    assert not any(p.from_plan for p in lever.points[:-1])
