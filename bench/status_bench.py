"""`migbench status` at scale: time the command as a user runs it on a finished sweep of N runs.

Builds, for N in (1,000, 30,000): a generated sweep (bench/sweepgen.py), its plan, and a launch state
whose runs all succeeded (written through the launcher's store, with each run's `params.json`, as a
finished launch leaves them), then
times `migbench status PLAN` (the default view) and `migbench status PLAN --json` in a new process.
`python bench/status_bench.py [--runs 1000,30000]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sweepgen import mixed_sweep  # noqa: E402
from migbench.launch.store import RunRow, Store, db_path  # noqa: E402
from migbench.plan import Plan  # noqa: E402
from migbench.planner import SolveOptions, make_plan  # noqa: E402
from migbench.state import state_dir_for  # noqa: E402
from migbench.sweep import load_sweep  # noqa: E402
from migbench.workflows import fleet_for  # noqa: E402


def finished_launch(work: Path, n: int) -> Path:
    sweep_file = work / f"s{n}.yaml"
    sweep_file.write_text(mixed_sweep(n, max(1, n // 64), durations=False, name=f"status-{n}"))
    sweep = load_sweep(sweep_file)
    plan = make_plan(sweep, fleet_for(sweep, None)[0], SolveOptions(time_limit_s=5.0))
    plan_file = work / f"s{n}.plan.yaml"
    plan.save(plan_file)
    plan = Plan.load(plan_file)
    sd = state_dir_for(plan)
    sd.mkdir(parents=True, exist_ok=True)
    st = Store.create(db_path(sd))
    now = time.time()
    rows = []
    for k, r in enumerate(plan.runs):
        key = r.ref
        # what the launcher leaves in each run's directory when it first starts it
        (sd / r.id).mkdir()
        (sd / r.id / "params.json").write_text(json.dumps({"run_id": r.id, "params": dict(r.params)}))
        rows.append(
            RunRow(
                id=r.id,
                ord=k,
                grp=r.group,
                state="succeeded",
                attempt=1,
                home=key,
                queue=key,
                instance=key,
                mig_uuid=f"MIG-{k:08d}",
                memory_mib=r.memory_mib,
                need_mib=r.memory_mib,
                start_at=now - 7200,
                end_at=now - 3600,
                exit_code=0,
                peak_mib=r.memory_mib // 2,
            )
        )
    st.save_runs(rows)
    st.set_meta("sweep", plan.name)
    st.close(checkpoint=True)
    return plan_file


def time_cmd(args: list[str], cwd: Path) -> float:
    env = dict(os.environ, MIGBENCH_WIDTH="120")
    env.pop("MIGBENCH_SIM", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "migbench", *args], cwd=cwd, env=env, capture_output=True, text=True)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {p.stderr}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1000,30000")
    args = ap.parse_args()
    print(f"{'runs':>7}  {'status (s)':>10}  {'status --all (s)':>16}  {'status --json (s)':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.runs.split(",")):
            plan_file = finished_launch(Path(tmp), n)
            a = time_cmd(["status", str(plan_file)], Path(tmp))
            b = time_cmd(["status", str(plan_file), "--all"], Path(tmp))
            c = time_cmd(["status", str(plan_file), "--json"], Path(tmp))
            print(f"{n:>7}  {a:>10.2f}  {b:>16.2f}  {c:>17.2f}", flush=True)


if __name__ == "__main__":
    main()
