"""`migbench plan` end to end, as a user times it, beside the solver's own time.

For each generated mixed sweep (bench/sweepgen.py: groups of 50 runs, 4 GPU models) it runs
`migbench plan SWEEP -o PLAN --json` in a new process, takes the solver's seconds from the plan's JSON,
and the peak RSS of the process (its own: it starts from a small interpreter that forks and execs it). One row per case: runs x GPUs,
objective, time limit, solver s, whole command s, command/solver, peak RSS MiB, and the scaling table.

`python bench/plan_e2e.py [--quick] [--cases 10000x624:tp,...] [--burners N] [--identical]`

`--burners N` runs N busy loops beside it (a loaded machine). `--identical` plans each case as the
machine is, then beside the N busy loops, and compares the two plan files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.sweepgen import mixed_sweep  # noqa: E402

DEFAULT = ["10x4:ms", "100x8:ms", "1000x64:ms", "1000x64:tp", "3000x188:tp", "10000x624:tp", "30000x1876:tp", "10000x624:ms:60"]
QUICK = ["10x4:ms", "100x8:ms", "1000x64:tp", "10000x624:tp"]


def _burn() -> None:  # pragma: no cover - a busy loop
    while True:
        pass


# argv: OUT CMD...; runs CMD as a child, writes the child's peak RSS (KiB) to OUT, exits with its code.
_PEAK_RSS = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def plan_command(sweep: Path, out: Path, objective: str, limit: float, extra: tuple[str, ...] = ()) -> dict:
    """`migbench plan SWEEP -o OUT --json --objective O --time-limit L` in a new process, as a user
    runs it: wall seconds, the solver's own seconds (from the JSON), peak RSS of the process (MiB)
    and the plan's solver block."""
    env = dict(os.environ, MIGBENCH_WIDTH="120")
    env.pop("MIGBENCH_SIM", None)
    cmd = [sys.executable, "-m", "migbench", "plan", str(sweep), "-o", str(out), "--json", "--objective", objective, "--time-limit", str(limit), *extra]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe, tempfile.NamedTemporaryFile("r") as fr:
        # The command starts from a small interpreter that forks and execs it: Linux counts the
        # address space a process had before exec in its peak RSS, and this bench's own is large.
        p = subprocess.Popen([sys.executable, "-S", "-c", _PEAK_RSS, fr.name, *cmd], stdout=fo, stderr=fe, text=True, env=env)
        p.wait()
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
        rss_kib = int(fr.read() or 0)
    if p.returncode != 0:
        raise SystemExit(f"{sweep.name}: plan failed: {stderr[-2000:]}")
    doc = json.loads(stdout)
    rss = rss_kib / 1024
    return {"wall": wall, "solver": float(doc["solver"].get("seconds") or 0.0), "rss": rss, "doc": doc, "warnings": doc.get("warnings") or []}


def run_case(spec: str, tmp: Path) -> dict:
    parts = spec.split(":")
    runs, gpus = (int(x) for x in parts[0].split("x"))
    objective = {"ms": "makespan", "tp": "throughput"}[parts[1]]
    limit = float(parts[2]) if len(parts) > 2 else 10.0
    sweep = tmp / f"{runs}x{gpus}-{parts[1]}.yaml"
    sweep.write_text(mixed_sweep(runs, max(1, gpus // 4), durations=objective == "makespan", name=f"e2e-{runs}"))
    r = plan_command(sweep, tmp / (sweep.stem + ".plan.yaml"), objective, limit)
    doc = r["doc"]
    stopped = any("wall-clock" in w for w in r["warnings"])
    return {
        "case": f"{len(doc['runs'])} x {len(doc['fleet'])}",
        "objective": objective,
        "limit": limit,
        "solver": r["solver"],
        "wall": r["wall"],
        "rss": r["rss"],
        "status": doc["solver"]["status"] + (" (hard stop)" if stopped else ""),
        "plan": str(tmp / (sweep.stem + ".plan.yaml")),
    }


def identical(cases: list[str], n_burners: int) -> None:
    """The determinism promise: each case planned on the machine as it is, then beside `n_burners`
    busy loops; the two plan files compared byte for byte."""
    print(f"{'runs x GPUs':>14}  {'objective':>10}  {'limit s':>7}  {'quiet s':>7}  {'busy s':>7}  plan files", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in cases:
            quiet = run_case(spec, Path(tmp))
            quiet_bytes = (Path(tmp) / Path(quiet["plan"]).name).read_bytes()
            burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(n_burners)]
            for b in burners:
                b.start()
            try:
                busy = run_case(spec, Path(tmp))
            finally:
                for b in burners:
                    b.terminate()
            same = Path(busy["plan"]).read_bytes() == quiet_bytes
            verdict = "identical" if same else "DIFFER" + (" (the busy plan says the hard stop fired)" if "hard stop" in busy["status"] else "")
            print(f"{quiet['case']:>14}  {quiet['objective']:>10}  {quiet['limit']:>7.0f}  {quiet['wall']:>7.2f}  {busy['wall']:>7.2f}  {verdict}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", help="comma-separated RUNSxGPUS:ms|tp[:LIMIT]")
    ap.add_argument("--burners", type=int, default=0)
    ap.add_argument("--identical", action="store_true", help="plan each case idle, then beside --burners busy loops, and compare the plan files")
    args = ap.parse_args()
    cases = args.cases.split(",") if args.cases else (QUICK if args.quick else DEFAULT)
    if args.identical:
        identical(cases, args.burners)
        return
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    try:
        print(
            f"{'runs x GPUs':>14}  {'objective':>10}  {'limit s':>7}  {'solver s':>8}  {'command s':>9}  {'command/solver':>14}  {'peak RSS MiB':>12}  status",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            for spec in cases:
                r = run_case(spec, Path(tmp))
                ratio = r["wall"] / r["solver"] if r["solver"] else float("inf")
                print(
                    f"{r['case']:>14}  {r['objective']:>10}  {r['limit']:>7.0f}  {r['solver']:>8.2f}  {r['wall']:>9.2f}  "
                    f"{ratio:>14.2f}  {r['rss']:>12.0f}  {r['status']}",
                    flush=True,
                )
    finally:
        for b in burners:
            b.terminate()


if __name__ == "__main__":
    main()
