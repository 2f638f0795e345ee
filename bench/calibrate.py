"""How the planner's deterministic budget compares with the CPU time it takes.

`--time-limit S` gives the planner S/2 reference seconds of deterministic work (planner/budget.py);
its cost constants are meant to make that about S/2 seconds of CPU on an idle 2-core machine. This
plans a range of problems in-process with the hard stop out of the way and prints, per problem, the
budget, the CPU seconds the planner took (`time.process_time`) and their ratio. A ratio near 1 for
the problems that use their whole budget is the calibration; above 1 the plan would come later than
half the limit (on a loaded machine CPU time itself runs slower, so measure when the machine is quiet).

`python bench/calibrate.py [--limit S] [--only NAME]`
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scenarios import all_scenarios  # noqa: E402
from migbench.planner import SolveOptions, solve  # noqa: E402
from migbench.planner.budget import WORK_SHARE  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=10.0)
    ap.add_argument("--only")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; budget {WORK_SHARE * args.limit:.1f} reference s")
    print(f"{'scenario':16s} {'objective':10s} {'CPU s':>7s} {'CPU/budget':>10s}  status")
    for sc in all_scenarios():
        if args.only and args.only not in sc.name:
            continue
        for objective in ("makespan", "throughput"):
            runs = sc.runs if objective == "makespan" else [r.__class__(r.id, r.memory_mib, None, r.compute, r.cap) for r in sc.runs]
            t0 = time.process_time()
            sol = solve(runs, sc.fleet, SolveOptions(time_limit_s=args.limit, objective=objective, started=time.monotonic() + 1e9))
            cpu = time.process_time() - t0
            print(f"{sc.name:16s} {objective:10s} {cpu:7.2f} {cpu / (WORK_SHARE * args.limit):10.2f}  {sol.status}", flush=True)


if __name__ == "__main__":
    main()
