"""The launcher benchmark: `python bench/launch_bench.py` (about 1-2 minutes on 2 cores).

In a temporary directory: a simulated host of 4 x A100-SXM4-80GB, a 90-run sweep of the toy
trainer (mixed memory, 1 to 30 GiB), planned and applied; then the same plan is run twice:

1. `migbench launch` (`python -m migbench.launch PLAN`, default poll settings): a shim per run, the
   sqlite state, NVML peak-memory sampling every 2 s, lending;
2. a naive launcher written here (`--naive`): the same per-instance FIFO queues in wave order (no
   lending, no shim, no state file), each run started directly with subprocess.Popen pinned to its
   instance, and every child polled every `--naive-poll` seconds (default 0.5).

It prints, side by side: seconds from starting the launcher process until every planned instance
has a run (from the launcher's own timestamps: sqlite `attempts.start_at` for migbench, the naive
launcher's start log), total wall time, and the launcher process's own CPU seconds
(`getrusage(RUSAGE_SELF)`, its children excluded) and CPU % over its wall time.

Options: --runs N (default 90), --gpus N (4), --naive-poll S, --keep (keep the temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOY = REPO / "examples" / "toy_trainer.py"


def sweep_yaml(runs: int) -> str:
    """A toy sweep of `runs` runs: five sizes, 1 to 30 GiB, 2-4 s of work each."""
    groups = [  # name, share of the runs, plan memory, declared footprint, steps, compute
        ("tiny", 0.30, "1GiB", "0.8GiB", 8, 0.05),
        ("small", 0.30, "4GiB", "3.5GiB", 10, 0.1),
        ("medium", 0.20, "9GiB", "8GiB", 10, 0.15),
        ("large", 0.12, "18GiB", "16GiB", 12, 0.25),
        ("xl", 0.08, "30GiB", "28GiB", 14, 0.4),
    ]
    counts = [max(1, round(runs * g[1])) for g in groups]
    counts[0] += runs - sum(counts)
    out = ["version: 1", "name: launch-bench", "launch: {retries: 0, backoff: 0, stop_grace: 5s, flapping_max: 1000}", "groups:"]
    for (name, _, mem, decl, steps, compute), n in zip(groups, counts):
        out += [
            f"  - name: {name}",
            f"    command: {sys.executable} {TOY} --steps {steps} --step-seconds 0.25 --memory {decl} --seed {{seed}}",
            f"    parameters: {{seed: {list(range(n))}}}",
            f"    memory: {mem}",
            f"    duration: {steps * 0.25 + 0.5}s",
            f"    compute: {compute}",
        ]
    return "\n".join(out) + "\n"


def busy_after(starts: list[tuple[float, float, str]], keys: set[str], t0: float) -> float | None:
    """First time (s after t0) at which every instance in `keys` has at least one run, from
    (start, end, instance) intervals."""
    events = sorted([(s, 1, k) for s, _, k in starts] + [(e, -1, k) for _, e, k in starts if e is not None])
    live = {k: 0 for k in keys}
    for t, d, k in events:
        if k in live:
            live[k] += d
        if all(v > 0 for v in live.values()):
            return t - t0
    return None


# ---------------------------------------------------------------------------------------------
# The naive baseline
# ---------------------------------------------------------------------------------------------


def naive(plan_file: str, out_file: str, poll_s: float) -> int:
    """Start each run with subprocess.Popen, pinned to its planned instance, per-instance FIFO in
    wave order; poll every child every `poll_s`. Writes its timings and own CPU to `out_file`."""
    from migbench.launch.prepare import start_order
    from migbench.plan import Plan
    from migbench.state import load_bindings, state_dir_for

    t_start = time.time()
    plan = Plan.load(plan_file)
    uuid = {k: v["uuid"] for k, v in (load_bindings(plan) or {})["instances"].items()}
    logs = state_dir_for(plan) / "naive"
    logs.mkdir(parents=True, exist_ok=True)
    queues: dict[str, list] = {}
    for r in start_order(plan):
        queues.setdefault(r.instance_key or "", []).append(r)
    running: dict[str, tuple] = {}  # instance -> (Popen, run, start)
    intervals: list[tuple[float, float | None, str]] = []
    failed = 0
    while queues or running:
        for key in list(queues):
            if key not in running and queues[key]:
                r = queues[key].pop(0)
                if not queues[key]:
                    del queues[key]
                rdir = logs / r.id
                rdir.mkdir(exist_ok=True)
                env = dict(
                    os.environ,
                    **r.env,
                    CUDA_VISIBLE_DEVICES=uuid[key],
                    CUDA_DEVICE_ORDER="PCI_BUS_ID",
                    MIGBENCH_RUN_ID=r.id,
                    MIGBENCH_RUN_DIR=str(rdir),
                    MIGBENCH_ATTEMPT="1",
                )
                with open(rdir / "stdout.log", "wb") as o, open(rdir / "stderr.log", "wb") as e:
                    p = subprocess.Popen(list(r.argv), cwd=r.workdir, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True)
                running[key] = (p, r, time.time())
        time.sleep(poll_s)
        for key, (p, _r, t) in list(running.items()):
            rc = p.poll()
            if rc is not None:
                failed += rc != 0
                intervals.append((t, time.time(), key))
                del running[key]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    Path(out_file).write_text(
        json.dumps(
            {
                "t_start": t_start,
                "intervals": intervals,
                "cpu_s": ru.ru_utime + ru.ru_stime,
                "failed": failed,
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=90)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--naive-poll", type=float, default=0.5)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--naive", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive:
        return naive(args.naive[0], args.naive[1], args.naive_poll)

    from migbench.apply import apply_plan
    from migbench.backend.select import open_backend
    from migbench.backend.sim.host import init_host
    from migbench.plan import Plan
    from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
    from migbench.state import StateDir, state_dir_for
    from migbench.sweep import load_sweep

    t_bench = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="migbench-launch-bench-"))
    try:
        sim = tmp / "sim"
        init_host(sim, "A100-SXM4-80GB", args.gpus, mig=True)
        os.environ["MIGBENCH_SIM"] = str(sim)
        for k in ("MIGBENCH_POLL_S", "MIGBENCH_MEM_POLL_S", "TOY_LEDGER"):
            os.environ.pop(k, None)
        (tmp / "bench.yaml").write_text(sweep_yaml(args.runs))
        sweep = load_sweep(tmp / "bench.yaml")
        plan = make_plan(sweep, build_fleet([FleetSpec("A100-SXM4-80GB", args.gpus)]), SolveOptions(time_limit_s=10.0))
        plan_file = tmp / "launch-bench.plan.yaml"
        plan.save(plan_file)
        plan = Plan.load(plan_file)
        apply_plan(plan, open_backend(), confirm=None, state_dir=StateDir.of(plan))
        keys = {r.instance_key for r in plan.placed_runs() if r.instance_key}
        sd = state_dir_for(plan)
        print(
            f"{len(plan.placed_runs())} runs on {len(keys)} MIG instances of {args.gpus} x A100-SXM4-80GB (simulated); "
            f"{os.cpu_count()} CPU(s), Python {platform.python_version()}",
            flush=True,
        )

        # 1. migbench launch
        t0 = time.time()
        m0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "migbench.launch", str(plan_file)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        mig_wall = time.monotonic() - m0
        if p.returncode != 0:
            print(p.stdout[-3000:])
            raise SystemExit(f"migbench launch exited {p.returncode}")
        con = sqlite3.connect(sd / "launch.db")
        starts = [(s, e, k) for s, e, k in con.execute("SELECT start_at, end_at, instance FROM attempts")]
        mig_cpu = con.execute("SELECT cpu_s FROM launcher").fetchone()[0]
        ok = con.execute("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'").fetchone()[0]
        con.close()
        mig_busy = busy_after(starts, keys, t0)

        # 2. the naive launcher (same plan, same host, same runs)
        out = tmp / "naive.json"
        t_naive0 = time.time()
        m0 = time.monotonic()
        q = subprocess.run(
            [sys.executable, __file__, "--naive", str(plan_file), str(out), "--naive-poll", str(args.naive_poll)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        naive_wall = time.monotonic() - m0
        if q.returncode != 0:
            print(q.stdout[-3000:])
            raise SystemExit(f"the naive launcher exited {q.returncode}")
        nd = json.loads(out.read_text())
        naive_busy = busy_after([tuple(x) for x in nd["intervals"]], keys, t_naive0)

        def f(v: float | None, unit: str = "s") -> str:
            return "never" if v is None else f"{v:.2f} {unit}"

        rows = [
            ("runs succeeded", f"{ok}/{len(plan.placed_runs())}", f"{len(nd['intervals']) - nd['failed']}/{len(plan.placed_runs())}"),
            ("launch -> every instance busy", f(mig_busy), f(naive_busy)),
            ("total wall time", f(mig_wall), f(naive_wall)),
            ("launcher CPU time (own)", f(mig_cpu), f(nd["cpu_s"])),
            ("launcher CPU % of wall", f"{100 * mig_cpu / mig_wall:.1f} %", f"{100 * nd['cpu_s'] / naive_wall:.1f} %"),
        ]
        w = max(len(r[0]) for r in rows)
        print(f"\n{'':{w}}  {'migbench launch':>18}  {'naive Popen poller':>18}")
        for name, a, b in rows:
            print(f"{name:{w}}  {a:>18}  {b:>18}")
        print(
            f"\nmigbench: shim per run, sqlite state, NVML sampling, lending; wakes on SIGCHLD, else polls every 1 s.\n"
            f"naive: Popen per run, no state, no lending, polls every {args.naive_poll:g} s.\n"
            "Each migbench run starts through a shim, a second Python process; under the simulator the shim also\n"
            "imports the simulated driver to attach its run before it starts. Where runs start faster than the\n"
            "CPUs can start Python processes, that shows in the total wall time.\n"
            f"bench time {time.monotonic() - t_bench:.0f} s; temp dir {tmp}{'' if args.keep else ' (removed)'}"
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
