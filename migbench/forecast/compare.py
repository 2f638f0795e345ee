"""`migbench simulate --compare`: the plan against the baselines, on the same runs and fleet."""

from __future__ import annotations

from migbench.catalog import default_catalog
from migbench.forecast.baselines import BASELINES
from migbench.forecast.simulate import SimReport, simulate_plan
from migbench.plan import Plan
from migbench.planner.fleet import FleetGpu


def compare_plan(plan: Plan, *, lend: bool = True) -> list[SimReport]:
    """The plan's replay first, then each baseline's, in `BASELINES` order."""
    reports = [simulate_plan(plan, lend=lend)]
    cat = default_catalog()
    fleet = [FleetGpu(g.gpu, cat.model(g.model, g.driver)) for g in plan.fleet]
    demands = [r.demand() for r in plan.placed_runs()]
    for fn in BASELINES.values():
        reports.append(fn(demands, fleet, plan.duration_model).report)
    return reports
