"""The planner benchmark: `python bench/run.py` prints one table and writes bench/results.md.

For every seeded scenario (bench/scenarios.py) it runs, side by side:
- migbench's planner with durations (makespan objective) and without (runs-at-once objective);
- baseline 1, one run per whole GPU; baseline 2, mig-parted's all-1g and all-balanced layouts with
  first-fit list scheduling; baseline 3, greedy first-fit-decreasing placement
  (all three from migbench/baselines.py, which the planner never uses);
- baseline 4, the direct CP-SAT model written here: one boolean per GPU x profile x start and one per
  run x instance, a memory knapsack per instance, maximising runs started at once.

Every layout is played through the same duration model and queue engine. The lower bound (LB) is the
planner's proven bound: no plan with one fixed layout per GPU can finish sooner under the model (an
aggregated relaxation with time-point cuts proven infeasible below it by GLOP or CP-SAT, or the
longest run's best solo time).

Beside the solver's row, each scenario gets an end-to-end row: the same runs written as a sweep file
(bench/sweepgen.py) and planned by `migbench plan` in a new process, as a user runs it (wall seconds
of the whole command, peak RSS). A scaling table follows: generated mixed sweeps of 10 to 30,000 runs,
both objectives, time and peak memory of the command (bench/plan_e2e.py).

Options: --only NAME (substring), --skip-direct, --quick (drops the 10,000-run scenario),
--no-scaling.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ortools.sat.python import cp_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import best_known  # noqa: E402
from bench.plan_e2e import plan_command, run_case  # noqa: E402
from bench.scenarios import Scenario, all_scenarios  # noqa: E402
from bench.sweepgen import demands_sweep  # noqa: E402
from migbench import __version__  # noqa: E402
from migbench.duration import DurationModel, Slot, instance_capacity  # noqa: E402
from migbench.duration.replay import list_schedule  # noqa: E402
from migbench.forecast.baselines import fixed_layout, greedy_ffd, one_per_gpu  # noqa: E402
from migbench.forecast.simulate import SimReport, figures, simulate_solution  # noqa: E402
from migbench.planner import SolveOptions, solve  # noqa: E402
from migbench.planner.budget import Solver, default_work  # noqa: E402
from migbench.planner.makespan import LAST_STATS  # noqa: E402
from migbench.types import InstanceRef, Placement  # noqa: E402
from migbench.units import format_duration  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    scenario: str
    method: str
    seconds: float | None
    status: str
    gap: str
    at_once: int | None
    makespan_s: float | None
    utilisation: float | None
    lb_ratio: float | None
    note: str = ""
    bk_ratio: float | None = None  # makespan / the best known plan's (bench/best_known/)


def direct_cpsat(sc: Scenario, time_limit: float) -> tuple[Row, SimReport | None]:
    """Baseline 4: the textbook model, booleans per GPU x profile x start and per run x instance."""
    cands = []  # (gpu, Placement, Profile)
    for g in sc.fleet:
        for p in g.model.plain_profiles():
            if p.memory_mib:
                for s in p.starts:
                    cands.append((g, Placement(p.name, s), p))
    size = len(sc.runs) * len(cands)
    if size > 200_000:
        return Row(
            sc.name,
            "4 direct CP-SAT",
            None,
            "not run",
            "-",
            None,
            None,
            None,
            None,
            f"not built: {size:,} run x instance booleans, over this bench's limit of 200,000",
        ), None
    t0 = time.perf_counter()
    m = cp_model.CpModel()
    x = [m.new_bool_var(f"x{i}") for i in range(len(cands))]
    by_gpu: dict[int, list[int]] = {}
    for i, (g, _pl, _p) in enumerate(cands):
        by_gpu.setdefault(g.index, []).append(i)
    for g in sc.fleet:
        idx = by_gpu[g.index]
        for k in range(g.model.memory_slices):
            cover = [i for i in idx if cands[i][1].start <= k < cands[i][1].start + cands[i][2].memory_slices]
            if cover:
                m.add(sum(x[i] for i in cover) <= 1)
        m.add(sum(cands[i][2].compute_slices * x[i] for i in idx) <= g.model.compute_slices)
        for p in g.model.plain_profiles():
            same = [i for i in idx if cands[i][2].name == p.name]
            if same:
                m.add(sum(x[i] for i in same) <= p.max_count)
    a: dict[tuple[int, int], cp_model.IntVar] = {}
    for j, r in enumerate(sc.runs):
        mine = []
        for i, (_g, _pl, p) in enumerate(cands):
            if r.memory_mib <= (p.memory_mib or 0):
                v = m.new_bool_var("")
                a[(j, i)] = v
                mine.append(v)
                m.add_implication(v, x[i])
        if mine:
            m.add(sum(mine) <= 1)
    per_inst: dict[int, list[tuple[int, cp_model.IntVar]]] = {}
    for (j, i), v in a.items():
        per_inst.setdefault(i, []).append((j, v))
    for i, lst in per_inst.items():
        m.add(sum(sc.runs[j].memory_mib * v for j, v in lst) <= int(cands[i][2].memory_mib or 0))
        for j, v in lst:
            m.add(sum(w for _, w in lst) <= sc.runs[j].max_runs_per_instance).only_enforce_if(v)
    m.maximize(sum(a.values()))
    s = Solver()  # migbench's: gives SIGINT back to Python after the search
    s.parameters.max_time_in_seconds = time_limit
    s.parameters.num_workers = 2
    st = s.solve(m)
    secs = time.perf_counter() - t0
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Row(sc.name, "4 direct CP-SAT", secs, s.status_name(st), "-", None, None, None, None, f"no solution in {time_limit:.0f} s"), None
    obj, bound = s.objective_value, s.best_objective_bound
    # Play its layout: its first wave pinned, the rest list-scheduled on the same instances.
    slots, slices, pinned = [], {}, {}
    for i, (g, pl, p) in enumerate(cands):
        if s.value(x[i]):
            key = str(InstanceRef(g.index, pl))
            slots.append(Slot(key, int(p.memory_mib or 0), instance_capacity(g.model, p), key))
            slices[key] = p.compute_slices
    for (j, i), v in a.items():
        if s.value(v):
            g, pl, p = cands[i]
            pinned[sc.runs[j].id] = str(InstanceRef(g.index, pl))
    jobs = list(sc.runs)
    fits = [j for j in jobs if any(j.memory_mib <= sl.memory_mib for sl in slots)]
    res = list_schedule(sorted(fits, key=lambda j: -j.work_s), slots, lambda j, sl: j.memory_mib <= sl.memory_mib, pinned=pinned)
    total = sum(g.model.compute_slices for g in sc.fleet)
    rep = figures("direct", res, slots, slices, fits, total, len(sc.fleet))
    complete = len(fits) == len(jobs)
    note = "" if complete else f"{len(jobs) - len(fits)} runs fit none of its instances and never run"
    gap = (bound - obj) / bound if bound else 0.0
    return Row(
        sc.name,
        "4 direct CP-SAT",
        secs,
        s.status_name(st),
        f"{gap * 100:.1f}% ({int(obj)}/{int(bound)})",
        int(obj),
        rep.makespan_s if complete else None,
        rep.utilisation,
        None,
        note,
    ), (rep if complete else None)


def bench(sc: Scenario, skip_direct: bool, limit: float | None = None, baselines: bool = True, idle: bool = False) -> list[Row]:
    rows: list[Row] = []
    known = best_known.load(sc)
    best = known["makespan_s"] if known else None
    limit = limit or sc.time_limit_s
    work = default_work(limit, len(sc.runs)) if idle else None  # the budget of the limit, the clock out of the way
    ms = solve(sc.runs, sc.fleet, SolveOptions(time_limit_s=limit * 20 if idle else limit, work_s=work, objective="makespan", workers=1))
    rep = simulate_solution(ms, sc.fleet, sc.runs, DurationModel())
    lb = ms.bound
    stats = LAST_STATS.describe() if LAST_STATS.tried else "none tried"
    rows.append(
        Row(
            sc.name,
            "migbench (makespan)",
            ms.seconds,
            ms.status,
            f"{ms.gap * 100:.2f}%",
            ms.runs_at_once,
            rep.makespan_s,
            rep.utilisation,
            rep.makespan_s / lb if lb else None,
            f"plan estimate {format_duration(ms.objective)}; large neighbourhoods: {stats}",
            rep.makespan_s / best if best else None,
        )
    )
    cmd = command_row(sc, limit, work)
    cmd.bk_ratio = cmd.makespan_s / best if best and cmd.makespan_s else None
    rows.append(cmd)
    if not baselines:
        return rows
    tp = solve([replace(r, duration_s=None) for r in sc.runs], sc.fleet, SolveOptions(time_limit_s=sc.time_limit_s, objective="throughput", workers=1))
    rows.append(
        Row(
            sc.name,
            "migbench (runs at once)",
            tp.seconds,
            tp.status,
            f"{tp.gap * 100:.2f}% ({int(tp.objective)}/{int(tp.bound)})",
            int(tp.objective),
            None,
            None,
            None,
        )
    )
    for label, fn in [
        ("1 one run per GPU", lambda: one_per_gpu(sc.runs, sc.fleet)),
        ("2 mig-parted all-1g", lambda: fixed_layout(sc.runs, sc.fleet, "all-1g")),
        ("2 mig-parted all-balanced", lambda: fixed_layout(sc.runs, sc.fleet, "all-balanced")),
        ("3 greedy FFD", lambda: greedy_ffd(sc.runs, sc.fleet)),
    ]:
        b = fn()
        r = b.report
        note = "; ".join(r.notes)
        rows.append(
            Row(
                sc.name,
                label,
                b.seconds,
                "-",
                "-",
                r.started_at_once,
                r.makespan_s if not r.unrunnable else None,
                r.utilisation,
                (r.makespan_s / lb) if lb and not r.unrunnable else None,
                note,
            )
        )
    if not skip_direct:
        row, drep = direct_cpsat(sc, 20.0)
        if drep is not None and lb:
            row.lb_ratio = drep.makespan_s / lb
        rows.append(row)
    return rows


def command_row(sc: Scenario, limit: float, work: float | None = None) -> Row:
    """The scenario planned by `migbench plan` in a new process, as a user runs it (with `work`: that
    budget and a wall limit far above it, as on an idle machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep.yaml"
        sweep.write_text(demands_sweep(sc.name.replace(" ", "-"), sc.runs, sc.fleet))
        r = plan_command(sweep, Path(tmp) / "plan.yaml", "makespan", limit * 20 if work else limit, ("--work", f"{work:.4f}") if work else ())
    s = r["doc"]["solver"]
    stopped = any("wall-clock" in w for w in r["warnings"])
    lb = s.get("bound") or 0.0
    ms = s.get("makespan_s")
    note = f"whole command; solver {r['solver']:.2f} s, peak RSS {r['rss']:.0f} MiB" + ("; hard stop fired" if stopped else "")
    return Row(
        sc.name,
        "migbench plan (command)",
        r["wall"],
        s["status"],
        f"{s['gap'] * 100:.2f}%",
        s.get("runs_at_once"),
        ms,
        None,
        (ms / lb) if ms and lb else None,
        note,
    )


SCALING = [
    "10x4:ms",
    "100x8:ms",
    "1000x64:ms",
    "3000x188:ms",
    "10000x624:ms",
    "30000x1876:ms",
    "10x4:tp",
    "100x8:tp",
    "1000x64:tp",
    "3000x188:tp",
    "10000x624:tp",
    "30000x1876:tp",
]


def scaling() -> list[str]:
    """`migbench plan` on generated mixed sweeps of 10 to 30,000 runs, default time limit."""
    head = ["runs x GPUs", "objective", "limit s", "solver s", "command s", "peak RSS MiB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in SCALING:
            r = run_case(spec, Path(tmp))
            cells = [r["case"], r["objective"], f"{r['limit']:.0f}", f"{r['solver']:.2f}", f"{r['wall']:.2f}", f"{r['rss']:.0f}", r["status"]]
            print("  ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def fmt(rows: list[Row], md: bool) -> str:
    head = ["scenario", "method", "solve s", "status", "gap", "at once", "makespan", "util.", "makespan/LB", "makespan/best known", "note"]
    lines = []
    for r in rows:
        lines.append(
            [
                r.scenario,
                r.method,
                "-" if r.seconds is None else f"{r.seconds:.2f}",
                r.status,
                r.gap,
                "-" if r.at_once is None else str(r.at_once),
                "-" if r.makespan_s is None else format_duration(r.makespan_s),
                "-" if r.utilisation is None else f"{r.utilisation * 100:.1f}%",
                "-" if r.lb_ratio is None else f"{r.lb_ratio:.3f}",
                "-" if r.bk_ratio is None else f"{r.bk_ratio:.3f}",
                r.note,
            ]
        )
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(c.replace("|", "/") for c in ln) + " |" for ln in lines]
        return "\n".join(out)
    w = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head))]
    out += ["  ".join(c.ljust(w[i]) for i, c in enumerate(ln)) for ln in lines]
    return "\n".join(out)


def summary(scenarios: list[Scenario], rows: list[Row], md: bool) -> list[str]:
    """The targets' ratios per scenario: migbench's makespan against one run per GPU and against
    all-balanced + first-fit, and the most any plan could gain over one run per GPU under the
    model: its makespan over the work bound sum(compute x duration) / GPUs, which holds for every
    schedule, re-partitioned or not."""
    head = ["scenario", "speed-up vs 1 run/GPU", "ceiling for any plan", "shorter than all-balanced", "makespan/LB"]
    lines = []
    for sc in scenarios:
        by = {r.method: r for r in rows if r.scenario == sc.name}
        ours, one, bal = by.get("migbench (makespan)"), by.get("1 one run per GPU"), by.get("2 mig-parted all-balanced")
        if not ours or not ours.makespan_s or not one or not one.makespan_s:
            continue
        work = sum(r.compute * (r.duration_s or 0.0) for r in sc.runs) / len(sc.fleet)
        vs_bal = f"{(1 - ours.makespan_s / bal.makespan_s) * 100:.0f}%" if bal and bal.makespan_s else "- (it cannot run them all)"
        lines.append([sc.name, f"{one.makespan_s / ours.makespan_s:.2f}x", f"{one.makespan_s / work:.2f}x", vs_bal, f"{ours.lb_ratio:.3f}"])
    out = ["Against the targets (from the table above):", ""]
    if md:
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(x) + " |" for x in lines]
    else:
        w = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)] if lines else [len(h) for h in head]
        out += ["  ".join(h.ljust(w[i]) for i, h in enumerate(head))] + ["  ".join(c.ljust(w[i]) for i, c in enumerate(x)) for x in lines]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run scenarios whose name contains this")
    ap.add_argument("--skip-direct", action="store_true", help="skip baseline 4 (direct CP-SAT)")
    ap.add_argument("--quick", action="store_true", help="skip the 10,000-run scenario")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    ap.add_argument("--time-limit", type=float, help="every scenario's time limit (default: its own, 10 s or 60 s)")
    ap.add_argument("--no-baselines", action="store_true", help="only migbench's rows (no baselines, no runs-at-once row)")
    ap.add_argument(
        "--idle",
        action="store_true",
        help="plan with the limit's deterministic budget and the wall clock out of the way (`--work`): the plans an idle machine makes, whatever the load here",
    )
    ap.add_argument("--out", default=str(HERE / "results.md"), help="markdown output (default bench/results.md)")
    args = ap.parse_args()
    rows: list[Row] = []
    scenarios = all_scenarios()
    if args.only:
        scenarios = [s for s in scenarios if args.only in s.name]
    if args.quick:
        scenarios = [s for s in scenarios if len(s.runs) < 10000]
    t0 = time.perf_counter()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    descr = []
    for sc in scenarios:
        print(f"== {sc.name}: {len(sc.runs)} runs on {sc.fleet_text} (time limit {sc.time_limit_s:.0f} s)", flush=True)
        descr.append(f"- **{sc.name}**: {sc.description}; {len(sc.runs)} runs on {sc.fleet_text}; planner budget {sc.time_limit_s:.0f} s")
        part = bench(sc, args.skip_direct, args.time_limit, baselines=not args.no_baselines, idle=args.idle)
        print(fmt(part, md=False), flush=True)
        rows.extend(part)
    print("\n" + "\n".join(summary(scenarios, rows, md=False)), flush=True)
    scale: list[str] = []
    if not args.no_scaling:
        print("\n== scaling: migbench plan on generated mixed sweeps", flush=True)
        scale = scaling()
    total = time.perf_counter() - t0
    env = (
        f"{platform.python_implementation()} {platform.python_version()}, OR-Tools {cp_model.__dict__.get('__version__', '') or _ortools_version()}, "
        f"{os.cpu_count()} CPUs, migbench {__version__}"
    )
    md = [
        "# Planner benchmark",
        "",
        f"Generated by `python bench/run.py {' '.join(sys.argv[1:])}` ({env}); whole run {total:.0f} s; load average at the start {load}.",
        "",
        "Scenarios (seeded, bench/scenarios.py):",
        *descr,
        "",
        "Columns: solve s = planning time (`migbench plan (command)`: the whole command's wall time, the runs written",
        "as a sweep file and planned in a new process; its makespan is the plan's own estimate); status/gap = the",
        "solver's own (for the makespan objective the gap is (makespan - LB) / makespan); at once = runs started at",
        "time 0; makespan = the sweep played through the duration model with the launcher's queue policy; util. =",
        "busy compute / available compute (the runs' compute served under the duration model); makespan/LB against the planner's proven lower bound for plans",
        "with one fixed layout per GPU; makespan/best known against the shortest plan the bench's own long search",
        "found (`python bench/best_known.py`, kept in bench/best_known/, checked and replayed here the same way).",
        "A baseline whose layout cannot host some runs shows no makespan (those runs never run).",
        "",
        fmt(rows, md=True),
        "",
        *summary(scenarios, rows, md=True),
        "",
        *(
            [
                "Scaling: `migbench plan SWEEP --json --objective O` on generated mixed sweeps (bench/sweepgen.py, groups of",
                "50 runs, 4 GPU models), default time limit (10 s of wall time for the whole command), each in a new",
                f"process; command s = its wall time, peak RSS = the process's (load average at the start: {load}).",
                "",
                *scale,
                "",
            ]
            if scale
            else []
        ),
    ]
    Path(args.out).write_text("\n".join(md))
    print(f"\nwrote {args.out} ({total:.0f} s)")


def _ortools_version() -> str:
    try:
        import ortools

        return ortools.__version__
    except Exception:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    main()
