"""The planner: a MIG layout for every GPU and an assignment of runs to instances (OR-Tools CP-SAT).

Exact about placements: a GPU's layout is one of the legal layouts the catalogue enumerates from the
profiles' legal starts (`GpuModel.layouts()`), so every instance is a `profile@start`, never a bare
count. Fast at fleet scale because the model never looks at individual GPUs or runs:

- GPUs of one model are interchangeable, so the model chooses *how many* GPUs take each layout
  (`x[model, layout]`), over the layouts' distinct profile multisets (38 for an 8-slot GPU);
- runs with the same memory, duration, compute, sharing cap and allowed profiles form one class;
- an instance's contents are described by *patterns*: maximal multisets of run classes that fit
  its memory and its sharing cap.

Two objectives:

1. **runs at once** (no durations): maximise the runs that start immediately; CP-SAT proves the
   bound. Runs that do not fit wait in queues on the same layout, in waves.
2. **makespan** (every run has a duration): bisection on relaxations gives the bound and candidate
   layouts (the aggregated LP and CP-SAT model with time-point cuts, and a configuration LP by
   column generation); the layouts become concrete queues under the duration model
   (`migbench.duration`, played by `migbench.duration.replay`), improved by re-cutting one GPU at a
   time and by local search on the queues; small problems are solved exactly. The relaxations'
   infeasibility proofs give the lower bound, so the reported gap is honest: it compares the plan's
   estimated makespan with a bound no fixed-layout plan can beat.

Deterministic: the same input gives the same plan. Effort comes from a deterministic budget derived
from the time limit (`budget`); the clock only stops the search hard at the limit, and the plan then
says it may not be reproducible.

Modules: `fleet` (the GPUs), `problem` (instance types, layouts, run classes), `patterns` (what may
share an instance), `budget` (effort, hard stop, progress), `throughput` (objective 1), `bound` (the
makespan relaxation and its cuts), `configlp` (the configuration LP), `makespan` (objective 2),
`schedule` (aggregate -> concrete queues), `improve` (queues, local search), `layouts` (one GPU
re-cut), `exact` and `order` (small problems exactly), `solve` (the entry point) and `assemble`
(Solution -> Plan). Only this package imports OR-Tools.
"""

from migbench.planner import cpsat  # noqa: F401  (first: OR-Tools is imported without pandas)
from migbench.planner.assemble import check_plan_input, make_plan
from migbench.planner.fleet import FleetGpu, FleetSpec, build_fleet, parse_fleet_option
from migbench.planner.problem import Assigned, Solution, SolveOptions
from migbench.planner.solve import solve

__all__ = [
    "Assigned",
    "FleetGpu",
    "FleetSpec",
    "Solution",
    "SolveOptions",
    "build_fleet",
    "check_plan_input",
    "make_plan",
    "parse_fleet_option",
    "solve",
]
