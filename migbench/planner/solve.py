"""`solve(demands, fleet, options)`: the planner's entry point (see `migbench.planner`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from migbench.duration import Demand
from migbench.errors import MigbenchError
from migbench.planner.budget import WALL_STOP_WARNING, Budget, short_limit_note, write_reserve
from migbench.planner.fleet import FleetGpu
from migbench.planner.makespan import plan_makespan
from migbench.planner.problem import Solution, SolveOptions, build_problem
from migbench.planner.throughput import plan_throughput
from migbench.types import Objective, Placement


def solve(runs: Sequence[Demand], fleet: Sequence[FleetGpu], opts: SolveOptions = SolveOptions()) -> Solution:
    """Plan `runs` on `fleet`. Raises MigbenchError when a run fits nowhere (unless allowed)."""
    t0 = time.perf_counter()
    if not fleet:
        raise MigbenchError("the fleet is empty", hint="give --fleet MODEL:COUNT or a `fleet:` in the sweep")
    with_dur = bool(runs) and all(r.duration_s for r in runs)
    mode = Objective(opts.objective)
    if mode is Objective.AUTO:
        mode = Objective.MAKESPAN if with_dur else Objective.THROUGHPUT
    if mode is Objective.MAKESPAN and not with_dur:
        raise MigbenchError(
            "the makespan objective needs a duration for every run",
            hint="give each group a `duration:` or use --objective throughput",
        )
    prob, unplaced, notes = build_problem(runs, fleet, opts, mode)
    if unplaced and not opts.allow_unplaced:
        lines = [f"{rid}: {why}" for rid, why in sorted(unplaced.items())]
        raise MigbenchError(
            f"{len(unplaced)} run(s) fit no instance of the fleet:\n  " + "\n  ".join(lines[:20]) + ("\n  ..." if len(lines) > 20 else ""),
            hint="lower the run's memory, add a larger GPU to the fleet, or pass --allow-unplaced to plan the rest",
        )
    if not prob.classes:
        empty_layouts: dict[int, tuple[Placement, ...]] = {g.index: () for g in fleet}
        return Solution(empty_layouts, {}, unplaced, "OPTIMAL", "runs_at_once", 0, 0, 0.0, time.perf_counter() - t0, 0, None, notes)
    # Effort comes from a deterministic budget; the clock only stops the search hard at the limit.
    budget = Budget(
        opts.time_limit_s,
        started=opts.started,
        reserve_s=write_reserve(len(runs)),
        workers=opts.workers,
        n_runs=len(runs) if mode is Objective.MAKESPAN else 0,  # runs at once stops when proven, well inside
        progress=opts.progress,
        objective_name="runs_at_once" if mode is Objective.THROUGHPUT else "makespan_s",
        work_s=opts.work_s,
    )
    short = short_limit_note(opts.time_limit_s, len(runs)) if mode is Objective.MAKESPAN and opts.work_s is None else None
    if mode is Objective.THROUGHPUT:
        sol = plan_throughput(prob, opts, budget, notes)
    else:
        sol = plan_makespan(prob, opts, budget, notes)
    if short:
        sol.notes.append(short)
    if budget.stopped:
        sol.notes.append(WALL_STOP_WARNING)
    budget.report("done", incumbent=sol.objective, bound=sol.bound)
    sol.unplaced = unplaced
    sol.seconds = time.perf_counter() - t0
    return sol
