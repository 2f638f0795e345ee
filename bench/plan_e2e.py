"""`migbench plan` end to end, as a user times it, beside the solver's own time.

For each generated mixed sweep (bench/sweepgen.py: groups of 50 runs, 4 GPU models) it runs
`migbench plan SWEEP -o PLAN --json` in a new process, takes the solver's seconds from the plan's JSON,
and the peak RSS of the process (resource.getrusage of the child). Prints one row per case: runs x GPUs,
objective, time limit, solver s, whole command s, command/solver, peak RSS MiB, and the scaling table.

`python bench/plan_e2e.py [--quick] [--cases 10000x624:tp,...] [--burners N]`

`--burners N` runs N busy loops beside it (a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.sweepgen import mixed_sweep  # noqa: E402

DEFAULT = ["10x4:ms", "100x8:ms", "1000x64:ms", "1000x64:tp", "3000x188:tp", "10000x624:tp", "30000x1876:tp",
           "10000x624:ms:60"]
QUICK = ["10x4:ms", "100x8:ms", "1000x64:tp", "10000x624:tp"]


def _burn() -> None:  # pragma: no cover - a busy loop
    while True:
        pass


def run_case(spec: str, tmp: Path) -> dict:
    parts = spec.split(":")
    runs, gpus = (int(x) for x in parts[0].split("x"))
    objective = {"ms": "makespan", "tp": "throughput"}[parts[1]]
    limit = float(parts[2]) if len(parts) > 2 else 10.0
    sweep = tmp / f"{runs}x{gpus}-{parts[1]}.yaml"
    sweep.write_text(mixed_sweep(runs, max(1, gpus // 4), durations=objective == "makespan", name=f"e2e-{runs}"))
    out = tmp / (sweep.stem + ".plan.yaml")
    env = dict(os.environ, MIGBENCH_WIDTH="120")
    env.pop("MIGBENCH_SIM", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "migbench", "plan", str(sweep), "-o", str(out), "--json",
                        "--objective", objective, "--time-limit", str(limit)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{spec}: plan failed: {p.stderr[-2000:]}")
    rss = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    doc = json.loads(p.stdout)
    solver = float(doc["solver"].get("seconds") or 0.0)
    return {"case": f"{len(doc['runs'])} x {len(doc['fleet'])}", "objective": objective, "limit": limit, "solver": solver,
            "wall": wall, "rss": rss, "status": doc["solver"]["status"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", help="comma-separated RUNSxGPUS:ms|tp[:LIMIT]")
    ap.add_argument("--burners", type=int, default=0)
    args = ap.parse_args()
    cases = args.cases.split(",") if args.cases else (QUICK if args.quick else DEFAULT)
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    try:
        print(f"{'runs x GPUs':>14}  {'objective':>10}  {'limit s':>7}  {'solver s':>8}  {'command s':>9}  "
              f"{'command/solver':>14}  {'peak RSS MiB':>12}  status", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for spec in cases:
                r = run_case(spec, Path(tmp))
                ratio = r["wall"] / r["solver"] if r["solver"] else float("inf")
                print(f"{r['case']:>14}  {r['objective']:>10}  {r['limit']:>7.0f}  {r['solver']:>8.2f}  {r['wall']:>9.2f}  "
                      f"{ratio:>14.2f}  {r['rss']:>12.0f}  {r['status']}", flush=True)
    finally:
        for b in burners:
            b.terminate()


if __name__ == "__main__":
    main()
