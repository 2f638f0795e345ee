"""The runs-at-once objective gives the runs the most compute, then the fewest instances (issue 20,
item 3), lexicographically under the runs at once, which stay proven optimal."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.scenarios import seed_workload
from migbench.planner import SolveOptions, solve
from migbench.types import Objective


def _idle_at_once(sc, sol) -> dict[int, int]:
    """Per GPU: compute slices not in an instance that holds a run at once."""
    holding = {(a.gpu, a.placement) for a in sol.assigned.values() if a.wave == 0}
    model = sc.fleet[0].model
    return {g: model.compute_slices - sum(model.profile(p.profile).compute_slices for p in lay if (g, p) in holding) for g, lay in sol.layouts.items()}


@pytest.mark.parametrize("n_runs", [32, 36, 48])
def test_seed_like_sweep_at_once_leaves_no_compute_slice_idle(n_runs: int) -> None:
    """Bug: 8 runs per GPU were planned on 4 x 1g.20gb per GPU, 3 of 7 compute slices idle, where
    3 x 2g.20gb + 1g.20gb (or 2 x 2g.20gb + 3g.40gb) hold the same runs at once."""
    sc = seed_workload(7, n_runs, 4, whole=0)
    sol = solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=4, objective=Objective.THROUGHPUT))
    assert sol.status == "OPTIMAL" and sol.objective == sol.bound == n_runs == sol.runs_at_once
    assert _idle_at_once(sc, sol) == {g: 0 for g in range(4)}
    # every instance holds a run at once: no instance is cut for nothing
    per_instance = Counter((a.gpu, a.placement) for a in sol.assigned.values() if a.wave == 0)
    assert sum(len(lay) for lay in sol.layouts.values()) == len(per_instance)
