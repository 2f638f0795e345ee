"""migbench's makespan planner against the exact optima of bench/exact_optima.json.

`python bench/exact_compare.py` plans every case with migbench's own planner
(`solve(..., SolveOptions(objective="makespan", time_limit_s=10, workers=1))`), replays its plan the
way bench/run.py's `simulate_solution` does (queues in wave order, then start time) but without
lending, the semantics the exact solver optimises, and prints one row per case: the optimum,
migbench's makespan and its ratio to the optimum, migbench's reported lower bound and its ratio to
the optimum (a ratio above 1 would be a bound that is not one), then the worst and mean ratios.
It writes the same table to bench/exact_results.md (--out).

Two extra columns split migbench's gap: "best on its layouts" is the exact optimum with every GPU
held to the layout migbench chose (bench/exact.py with fixed_layouts), so migbench/that is what its
assignment and queue order lose and that/optimum what its layout choice loses; and "with lending"
replays migbench's plan with the launcher's lending (as bench/run.py does), for reference only:
lending is outside the problem the optimum is exact for.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.exact import solve_exact  # noqa: E402
from bench.exact_cases import OUT, case_from_dict, load_optima  # noqa: E402

# --- everything used from migbench (re-point here when its modules move) ---------------------
from migbench import __version__  # noqa: E402
from migbench.duration import Demand as Job  # noqa: E402
from migbench.duration import Slot, instance_capacity  # noqa: E402
from migbench.duration.replay import replay  # noqa: E402
from migbench.planner import SolveOptions, solve  # noqa: E402

HERE = Path(__file__).resolve().parent
HOUR = 3600.0


def replay_plan(case, sol, lend: bool) -> float:  # type: ignore[no-untyped-def]
    """bench/run.py's simulate_solution, with or without lending; returns the makespan."""
    models = {g.index: g.model for g in case.fleet_gpus()}
    slots, queues = [], {}
    for gpu, lay in sorted(sol.layouts.items()):
        for pl in lay:
            p = models[gpu].profile(pl.profile)
            key = f"{gpu}:{pl}"
            slots.append(Slot(key, int(p.memory_mib or 0), instance_capacity(models[gpu], p), key))
            queues[key] = []
    for rid, a in sorted(sol.assigned.items(), key=lambda kv: (kv[1].wave, kv[1].start_s or 0, kv[0])):
        queues[f"{a.gpu}:{a.placement}"].append(rid)
    jobs = [Job(r.id, r.memory_mib, r.duration_s or 1.0, r.compute, r.max_runs_per_instance) for r in case.runs if r.id in sol.assigned]
    planned = {rid: a.start_s for rid, a in sol.assigned.items() if a.start_s is not None}
    if lend:
        res = replay(jobs, slots, queues, lend=lambda j, s: True, planned_start=planned or None)
    else:
        res = replay(jobs, slots, queues, lend=None)
    return res.makespan_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optima", default=str(OUT))
    ap.add_argument("--only", help="cases whose name contains this")
    ap.add_argument("--out", default=str(HERE / "exact_results.md"))
    args = ap.parse_args()
    rows = []
    t_all = time.perf_counter()
    for d in load_optima(Path(args.optima)):
        if args.only and args.only not in d["name"]:
            continue
        case = case_from_dict(d)
        sol = solve(case.runs, case.fleet_gpus(), SolveOptions(objective="makespan", time_limit_s=10, workers=1))
        ms = replay_plan(case, sol, lend=False)
        lent = replay_plan(case, sol, lend=True)
        on_its = solve_exact(case.runs, case.fleet_gpus(), fixed_layouts=sol.layouts, time_limit_s=60, workers=2)
        opt = d["makespan_s"]
        rows.append(
            {
                "case": d["name"],
                "runs": len(case.runs),
                "fleet": " + ".join(case.fleet),
                "opt": opt,
                "opt_status": d["status"],
                "ms": ms,
                "ratio": ms / opt,
                "lb": sol.bound,
                "lb_ratio": sol.bound / opt,
                "plan_est": sol.makespan_s,
                "lent": lent,
                "secs": sol.seconds,
                "status": sol.status,
                "on_its": on_its.makespan_s,
                "on_its_status": on_its.status,
                "layouts": "; ".join(f"{g}: {' '.join(map(str, lay))}" for g, lay in sorted(sol.layouts.items())),
            }
        )
        r = rows[-1]
        print(
            f"{r['case']:9s} opt {opt / HOUR:7.3f} h  migbench {ms / HOUR:7.3f} h  ratio {r['ratio']:.3f}  "
            f"LB {sol.bound / HOUR:7.3f} h  LB/opt {r['lb_ratio']:.3f}  best on its layouts "
            f"{r['on_its'] / HOUR:7.3f} h ({on_its.status})  ({sol.seconds:.1f} s)",
            flush=True,
        )
    text = render(rows, time.perf_counter() - t_all)
    print()
    print(text)
    if not args.only:
        Path(args.out).write_text(text + "\n")
        print(f"\nwrote {args.out}")


def render(rows: list[dict], total_s: float) -> str:
    ratios = [r["ratio"] for r in rows]
    worst = max(rows, key=lambda r: r["ratio"])
    at_opt = sum(1 for r in rows if r["ratio"] <= 1 + 1e-9)
    bad_lb = [r for r in rows if r["lb_ratio"] > 1 + 1e-9]
    head = [
        "case",
        "runs",
        "fleet",
        "optimum",
        "migbench",
        "migbench/optimum",
        "migbench LB",
        "LB/optimum",
        "best on its layouts",
        "layout loss",
        "queue loss",
        "migbench with lending",
        "planner s",
    ]
    lines = [
        "# migbench against the exact optimum (small sweeps)",
        "",
        "Generated by `python bench/exact_compare.py` from `bench/exact_optima.json` (written by",
        "`python bench/exact_cases.py --solve`, the exact solver in `bench/exact.py`); "
        f"{platform.python_implementation()} {platform.python_version()}, migbench {__version__}; "
        f"whole run {total_s:.0f} s.",
        "",
        'migbench = `solve(runs, fleet, SolveOptions(objective="makespan", time_limit_s=10, workers=1))`, its plan',
        "replayed like bench/run.py's `simulate_solution` but without lending (the semantics the optimum is exact",
        "for: one fixed layout per GPU, one queue per instance, `engine.replay(..., lend=None)`). migbench LB = the",
        "planner's reported lower bound (`Solution.bound`). Best on its layouts = the exact optimum with each GPU",
        "held to migbench's layout (bench/exact.py, fixed_layouts): layout loss = that / optimum, queue loss =",
        "migbench / that (run assignment and queue order). The lending column replays migbench's plan with the",
        "launcher's lending, for reference only (lending is outside the exact model).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["case"],
                    str(r["runs"]),
                    r["fleet"],
                    h(r["opt"]) + ("" if r["opt_status"] == "OPTIMAL" else f" ({r['opt_status']})"),
                    h(r["ms"]),
                    f"{r['ratio']:.3f}",
                    h(r["lb"]),
                    f"{r['lb_ratio']:.3f}",
                    h(r["on_its"]) + ("" if r["on_its_status"] == "OPTIMAL" else f" ({r['on_its_status']})"),
                    f"{r['on_its'] / r['opt']:.3f}",
                    f"{r['ms'] / r['on_its']:.3f}",
                    h(r["lent"]),
                    f"{r['secs']:.1f}",
                ]
            )
            + " |"
        )
    lines += [
        "",
        f"- cases: {len(rows)}; migbench at the optimum: {at_opt}/{len(rows)}",
        f"- migbench/optimum: worst {worst['ratio']:.3f} ({worst['case']}), mean {sum(ratios) / len(ratios):.3f}",
        f"- LB/optimum: min {min(r['lb_ratio'] for r in rows):.3f}, mean {sum(r['lb_ratio'] for r in rows) / len(rows):.3f}; "
        + (f"above 1 (not a valid bound) in {len(bad_lb)} case(s): {', '.join(r['case'] for r in bad_lb)}" if bad_lb else "never above 1"),
        f"- optima proven: {sum(1 for r in rows if r['opt_status'] == 'OPTIMAL')}/{len(rows)}",
        f"- of the {len(rows) - at_opt} cases migbench misses: its own layouts admit the optimum in "
        f"{sum(1 for r in rows if r['ratio'] > 1 + 1e-9 and r['on_its'] <= r['opt'] * (1 + 1e-9))} (the loss is in run "
        "assignment and queue order only); layout loss = best on its layouts / optimum, queue loss = migbench / best on "
        "its layouts",
        f"- lending changed migbench's replayed makespan in {sum(1 for r in rows if abs(r['lent'] - r['ms']) > 1e-6)} case(s)",
        "",
        "migbench's layouts per case:",
        "",
        *[f"- {r['case']}: {r['layouts']}" for r in rows],
    ]
    return "\n".join(lines)


def h(s: float | None) -> str:
    return "-" if s is None else f"{s / HOUR:.3f} h"


if __name__ == "__main__":
    main()
