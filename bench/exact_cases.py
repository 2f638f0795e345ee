"""Small seeded sweeps with known optimal makespans: `python bench/exact_cases.py --solve` solves
them all with bench/exact.py and writes bench/exact_optima.json; without --solve it lists them.

34 cases of 10-14 runs on 1-2 GPUs:
- seed-00..15: the seed team's shape (bench/scenarios.seed_workload at small scale): a few 2-4 GiB
  ablations of 6-18 h, compute 0.08-0.16, sharing up to 3 or 4 per instance, plus 0-2 whole-GPU
  runs of 60-70 GiB for 18 h, on 1-2 x A100-SXM4-80GB;
- mixed-00..15: bench/scenarios.mixed at small scale: 2-5 groups of memory 1-69 GiB (only sizes that
  fit the fleet's largest instance), compute and sharing cap from the memory as there, on 1-2 GPUs
  drawn from A100-SXM4-80GB, H100-SXM5-80GB, A100-SXM4-40GB;
- named-a: 2 x A100-SXM4-80GB, one 60 GiB 18 h whole-GPU run and nine 2-3 GiB ablations of 8-18 h
  sharing up to 4 (compute about 0.1); the optimum is known to be 18 h;
- named-b: 10 mixed runs on 2 x A100-SXM4-80GB built to have an optimum of about 12 h (see
  `named_b`; the exact solver finds 12 h).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.exact import solve_exact  # noqa: E402
from bench.scenarios import _MEMS, CAT, GIB, HOUR  # noqa: E402

# --- everything used from migbench (re-point here when its modules move) ---------------------
from migbench.duration import Demand as Run  # noqa: E402
from migbench.planner import FleetGpu  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "exact_optima.json"


@dataclass
class Case:
    name: str
    description: str
    fleet: list[str]  # model key per GPU index
    runs: list[Run]

    def fleet_gpus(self) -> list[FleetGpu]:
        return [FleetGpu(i, CAT.model(k)) for i, k in enumerate(self.fleet)]


def seed_like(seed: int) -> Case:
    rng = random.Random(seed)
    gpus = rng.choice([1, 2])
    n = rng.randint(10, 14)
    whole = rng.choice([0, 1, 2])
    runs = []
    for i in range(n - whole):
        wells = rng.choice([2, 3, 4, 6])
        mem = {2: 2 * GIB, 3: int(2.5 * GIB), 4: 3 * GIB, 6: 4 * GIB}[wells]
        hours = rng.choice([6, 8, 10, 12, 14, 16, 18])
        runs.append(Run(f"abl-{i:02d}", mem, hours * HOUR, round(rng.uniform(0.08, 0.16), 2), rng.choice([3, 4])))
    for i in range(whole):
        runs.append(Run(f"full-{i:02d}", rng.choice([60, 64, 70]) * GIB, 18 * HOUR, 1.0, 1))
    return Case(f"seed-{seed % 100:02d}", f"seed-like: {n - whole} ablations + {whole} whole-GPU runs", ["A100-SXM4-80GB"] * gpus, runs)


MIXED_MODELS = ["A100-SXM4-80GB", "H100-SXM5-80GB", "A100-SXM4-40GB"]


def mixed_small(seed: int) -> Case:
    """bench/scenarios.mixed at small scale: groups share memory, compute and cap; durations cycle
    through 1-3 values per group."""
    rng = random.Random(seed)
    fleet = [rng.choice(MIXED_MODELS) for _ in range(rng.choice([1, 2]))]
    largest = max(CAT.model(k).max_memory_mib() for k in fleet)
    mems = [m for m in _MEMS if m * GIB <= largest]
    n_runs = rng.randint(10, 14)
    groups = rng.randint(2, 5)
    sizes = [n_runs // groups + (1 if g < n_runs % groups else 0) for g in range(groups)]
    runs = []
    for g, size in enumerate(sizes):
        mem_gib = rng.choice(mems)
        cap = 4 if mem_gib <= 8 else (2 if mem_gib <= 24 else 1)
        compute = round(min(1.0, 0.05 + mem_gib / 80 + rng.uniform(0, 0.1)), 2)
        hours = [rng.choice([2, 4, 6, 8, 12, 18]) for _ in range(rng.choice([1, 2, 3]))]
        for j in range(size):
            runs.append(Run(f"g{g}-{j:02d}", mem_gib * GIB, hours[j % len(hours)] * HOUR, compute, cap))
    return Case(f"mixed-{seed % 100:02d}", f"mixed: {groups} groups on {' + '.join(fleet)}", fleet, runs)


def named_a() -> Case:
    """The brief's case (a): one 60 GiB 18 h whole-GPU run and nine small ablations that fit in 18 h
    on the other GPU (e.g. 4g.40gb + 3g.40gb, or 7 instances of which some chain 8 h + 10 h)."""
    rng = random.Random(4242)
    hours = [18, 16, 14, 12, 10, 10, 8, 8, 8]
    runs = [Run("big-60g", 60 * GIB, 18 * HOUR, 1.0, 1)]
    for i, h in enumerate(hours):
        runs.append(Run(f"abl-{i:02d}", rng.choice([2 * GIB, int(2.5 * GIB), 3 * GIB]), h * HOUR, round(rng.uniform(0.09, 0.11), 2), 4))
    return Case("named-a", "one 60 GiB 18 h run + nine 2-3 GiB ablations of 8-18 h (cap 4); optimum 18 h", ["A100-SXM4-80GB"] * 2, runs)


def named_b() -> Case:
    """The brief's case (b), 10 mixed runs on 2 x A100-SXM4-80GB with an optimum of about 12 h:
    two 36 GiB runs (compute 0.4, 12 h, alone: each needs a 3g.40gb or larger), three 16 GiB runs
    (compute 0.25, 6 h, 2 per instance), two 8 GiB runs (compute 0.12, 12 h) and three 4 GiB runs
    (compute 0.1, 6 h), the small ones up to 4 per instance. The 12 h runs bound it from below; the
    work sum(compute x duration) is 18.8 GPU-hours (9.4 h on 2 GPUs). Built so that 12 h is reachable
    but tight: one GPU is 3g.40gb + 3g.40gb for the 36 GiB runs, and the other must fit 8 runs of
    6-12 h in 12 h (a 16 GiB run alone on a 1g.20gb takes 6 h x 0.25/(14/98) = 10.5 h)."""
    runs = [Run(f"b36-{i}", 36 * GIB, 12 * HOUR, 0.4, 1) for i in range(2)]
    runs += [Run(f"b16-{i}", 16 * GIB, 6 * HOUR, 0.25, 2) for i in range(3)]
    runs += [Run(f"b8-{i}", 8 * GIB, 12 * HOUR, 0.12, 4) for i in range(2)]
    runs += [Run(f"b4-{i}", 4 * GIB, 6 * HOUR, 0.1, 4) for i in range(3)]
    return Case("named-b", "10 mixed runs (36/16/8/4 GiB) built for an optimum of about 12 h", ["A100-SXM4-80GB"] * 2, runs)


def all_cases() -> list[Case]:
    return [seed_like(100 + i) for i in range(16)] + [mixed_small(200 + i) for i in range(16)] + [named_a(), named_b()]


def run_dict(r: Run) -> dict:
    d = asdict(r)
    d["profiles"] = list(r.profiles) if r.profiles else None
    return d


def case_from_dict(d: dict) -> Case:
    runs = [
        Run(r["id"], r["memory_mib"], r["duration_s"], r["compute"], r["max_runs_per_instance"], tuple(r["profiles"]) if r.get("profiles") else None)
        for r in d["runs"]
    ]
    return Case(d["name"], d["description"], list(d["fleet"]), runs)


def load_optima(path: Path = OUT) -> list[dict]:
    return json.loads(path.read_text())["cases"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solve", action="store_true", help=f"solve every case and write {OUT.name}")
    ap.add_argument("--only", help="cases whose name contains this")
    ap.add_argument("--time-limit", type=float, default=60.0, help="per case, seconds (default 60)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    cases = [c for c in all_cases() if not args.only or args.only in c.name]
    if not args.solve:
        for c in cases:
            print(f"{c.name:10s} {len(c.runs):2d} runs on {' + '.join(c.fleet)}: {c.description}")
        return
    out = []
    t_all = time.perf_counter()
    for c in cases:
        r = solve_exact(c.runs, c.fleet_gpus(), time_limit_s=args.time_limit, workers=args.workers)
        ok = r.replay_makespan_s is not None and r.makespan_s is not None and abs(r.replay_makespan_s - r.makespan_s) <= 1e-6 * r.makespan_s
        print(
            f"{c.name:10s} {len(c.runs):2d} runs  {r.status:8s} opt {fmt_h(r.makespan_s)}  bound {fmt_h(r.bound_s)}  "
            f"replay {'ok' if ok else 'MISMATCH'}  {r.seconds:6.2f} s (cpu {r.stats['cpu_s']:6.2f} s)  rounds {len(r.rounds)}  "
            f"configs {r.rounds[-1]['configs'] if r.rounds else 0}",
            flush=True,
        )
        out.append(
            {
                "name": c.name,
                "description": c.description,
                "fleet": c.fleet,
                "runs": [run_dict(x) for x in c.runs],
                "status": r.status,
                "makespan_s": r.makespan_s,
                "bound_s": r.bound_s,
                "replay_makespan_s": r.replay_makespan_s,
                "replay_matches": ok,
                "solve_s": round(r.seconds, 3),
                "solve_cpu_s": r.stats["cpu_s"],
                "layouts": {str(k): v for k, v in r.layouts.items()},
                "queues": r.queues,
                "empty_instances": [f"{g}:{pl}" for g, lay in r.layouts.items() for pl in lay if f"{g}:{pl}" not in r.queues],
                "rounds": r.rounds,
                "stats": r.stats,
            }
        )
    doc = {
        "generated_by": "python bench/exact_cases.py --solve",
        "environment": f"{platform.python_implementation()} {platform.python_version()}, time limit {args.time_limit:.0f} s, {args.workers} CP-SAT workers",
        "semantics": "makespan under migbench.duration.replay.replay without lending; one fixed legal layout per GPU",
        "total_s": round(time.perf_counter() - t_all, 1),
        "cases": out,
    }
    if args.only:
        print("(--only: not writing the file)")
        return
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


def fmt_h(s: float | None) -> str:
    return "-" if s is None else f"{s / HOUR:7.3f} h"


if __name__ == "__main__":
    main()
