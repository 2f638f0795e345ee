"""The living bench for real (issue 21): `python bench/living_real.py` plays the two-pipelines workload
of `bench/living.py` on a simulated host with the toy trainer at seconds scale, through `migbench
submit` and the host's bench, and prints what happened next to what the duration model expects.

The workload is bench/living.py's (seeded): 40 small runs submitted at t=0 (sweep `sup`), 4
whole-GPU runs at t=2 h (`whole`), 40 small runs at t=8 h (`unsup`), on 4 x A100-SXM4-80GB (a
simulated host, MIG on, no instance at the start). One hour is `--hour-s` seconds (default 1).
Each run is the toy trainer with its memory (0.5 GiB under what the sweep declares), its compute
share (`--compute`: alone on an instance of SM share s its steps take max(1, U/s) as long, as the
duration model says) and its duration (steps of 0.5 s); the sweep declares the same duration (in
real seconds) so that the bench decides on the real clock. Small runs may share an instance by 3.

Checked, from the bench's launch state (launch.db) and the runs' own start lines:
- every run ran exactly once and succeeded;
- no re-cut destroyed an instance while an attempt ran on it (each re-cut's time against every
  attempt's interval on the instances it destroyed);
- the re-cuts are in the launch state's layouts over time, and `migbench report` of the bench
  shows them (its "Layouts over time" section).

Printed: the makespan in model hours (real seconds / hour-s) next to the duration model's play of
the same workload under the same policy (`forecast.living.play`: row (a) of bench/living.py) and
next to that play with the arrivals as the bench took them (a `submit` returns once the bench's loop
took the sweep, which is late while the loop starts dozens of runs), the number of re-cuts after
t=0, and the checks. The real makespan differs from the model's where the
model and the toy differ: the toy does not slow down when runs share an instance (the model's
processor sharing does), and real starts carry process start-up and the launcher's poll.

Options: --hour-s S, --seed N, --keep (leave the temporary directory), --gpus N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from living import HOUR, two_pipelines  # noqa: E402

from migbench.forecast.living import play  # noqa: E402
from tests.support.launchkit import db_query as query  # noqa: E402

TOY = REPO / "examples" / "toy_trainer.py"
STEP_S = 0.5
GIB = 1024


def sweep_text(name: str, runs, hour_s: float, ledger: Path) -> str:  # type: ignore[no-untyped-def]
    lines = [
        "version: 1",
        f"name: {name}",
        "launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 1000}",
        "groups:",
    ]
    for d in runs:
        seconds = d.duration_s / HOUR * hour_s
        steps = max(1, round(seconds / STEP_S))
        mem = max(256, d.memory_mib - 512)
        cmd = f"echo $MIGBENCH_RUN_ID start >> {ledger}; exec {sys.executable} {TOY} --steps {steps} --step-seconds {STEP_S} --memory {mem}MiB --compute {d.compute}"
        lines += [
            f"  - name: {d.id}",
            "    shell: true",
            f"    command: {json.dumps(cmd)}",
            f"    memory: {d.memory_mib}MiB",
            f"    duration: {seconds:.3f}s",
            f"    compute: {d.compute}",
            f"    max_runs_per_instance: {d.max_runs_per_instance}",
        ]
    return "\n".join(lines) + "\n"


def busy_recuts(db: Path) -> tuple[int, int]:
    """(re-cut events after the first layout, re-cuts that destroyed an instance an attempt ran on then)."""
    t0 = float(query(db, "SELECT value FROM meta WHERE key = 'sweep_started_at'")[0]["value"])
    history = json.loads(query(db, "SELECT value FROM meta WHERE key = 'layouts'")[0]["value"])
    attempts = query(db, "SELECT * FROM attempts")
    last: dict[int, set[str]] = {}
    events = bad = 0
    for t, gpu, text in history:
        now = {p for p in text.split(" + ") if p}
        if gpu in last and now != last[gpu]:
            events += 1
        gone = last.get(gpu, set()) - now
        for a in attempts:
            g, pl = str(a["instance"]).split(":", 1)
            if int(g) == gpu and pl in gone and a["start_at"] < t0 + t < (a["end_at"] or float("inf")):
                bad += 1
        last[gpu] = now
    return events, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hour-s", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    case = two_pipelines(args.seed, args.gpus)
    tmp = Path(tempfile.mkdtemp(prefix="migbench-living-real-"))
    env = dict(os.environ)
    env.update(
        MIGBENCH_SIM=str(tmp / "sim"),
        MIGBENCH_BENCH_DIR=str(tmp / "bench"),
        MIGBENCH_POLL_S="0.05",
        MIGBENCH_MEM_POLL_S="0.5",
        HOME=str(tmp / "home"),
    )
    (tmp / "home").mkdir()
    ledger = tmp / "starts.txt"
    mb = [sys.executable, "-m", "migbench"]
    subprocess.run(
        [*mb, "sim", "init", str(tmp / "sim"), "--gpu", "A100-SXM4-80GB", "--count", str(args.gpus), "--mig", "on"], env=env, check=True, capture_output=True
    )
    files = []
    for sub in case.subs:
        f = tmp / f"{sub.name}.yaml"
        f.write_text(sweep_text(sub.name, sub.runs, args.hour_s, ledger))
        files.append((sub.at_s / HOUR * args.hour_s, f))
    wall0 = time.monotonic()
    db = tmp / "bench" / "runs" / "bench" / "launch.db"
    try:
        for at, f in files:
            if db.exists():  # arrivals on the bench's clock (from its start), not from this script's
                started = float(query(db, "SELECT value FROM meta WHERE key = 'sweep_started_at'")[0]["value"])
                time.sleep(max(0.0, started + at - time.time()))
            res = subprocess.run([*mb, "submit", str(f)], env=env, cwd=tmp, capture_output=True, text=True)
            said = [line for line in res.stdout.splitlines() if "submitted" in line]
            print(f"t={time.monotonic() - wall0:6.1f} s  {f.name}: {said[-1] if said else res.stdout.strip()}", flush=True)
            if res.returncode != 0:
                print(res.stdout + res.stderr)
                return 1
        while query(db, "SELECT state FROM launcher")[0]["state"] != "exited":
            time.sleep(0.5)
        rows = query(db, "SELECT * FROM runs")
        atts = query(db, "SELECT * FROM attempts")
        starts = Counter(line.split()[0] for line in ledger.read_text().splitlines())
        states = Counter(r["state"] for r in rows)
        real_h = (max(a["end_at"] for a in atts) - float(query(db, "SELECT value FROM meta WHERE key = 'sweep_started_at'")[0]["value"])) / args.hour_s
        events, bad = busy_recuts(db)
        model = play(case.fleet, case.subs)
        # the same play with the arrivals as they happened (a submit waits for the bench's loop to take it)
        t0b = float(query(db, "SELECT value FROM meta WHERE key = 'sweep_started_at'")[0]["value"])
        arrived = {sub.name: min(r["queued_at"] for r in rows if r["id"].startswith(f"{sub.name}.")) - t0b for sub in case.subs}
        late = [replace(sub, at_s=max(0.0, arrived[sub.name]) / args.hour_s * HOUR) for sub in case.subs]
        model_late = play(case.fleet, late)
        rep = subprocess.run([*mb, "report", str(tmp / "bench" / "bench.plan.yaml"), "-o", str(tmp / "report.html")], env=env, capture_output=True, text=True)
        html = (tmp / "report.html").read_text() if rep.returncode == 0 else ""
        n_runs = sum(len(s.runs) for s in case.subs)
        print()
        print(f"| {case.name} (hour = {args.hour_s:g} s) | makespan | re-cuts after t=0 |")
        print("|---|---|---|")
        print(f"| the duration model's play (bench/living.py (a)) | {model.makespan_s / HOUR:.1f} h | {sum(len(v) for v in model.recut_times.values())} |")
        when = ", ".join(f"{s.name} {s.at_s / HOUR:.1f} h" for s in late)
        print(
            f"| the same play, with the arrivals as the bench took them ({when}) | {model_late.makespan_s / HOUR:.1f} h | {sum(len(v) for v in model_late.recut_times.values())} |"
        )
        print(f"| the bench for real (toy trainer, simulated host) | {real_h:.1f} h | {events} |")
        print()
        print(f"runs: {len(rows)} of {n_runs}, states {dict(states)}; attempts {len(atts)}; runs started more than once: {sum(v > 1 for v in starts.values())}")
        print(f"re-cuts that destroyed an instance with a run on it: {bad}")
        print(f"report: 'Layouts over time' section {'present' if 'Layouts over time' in html else 'MISSING'}; {time.monotonic() - wall0:.0f} s wall")
        ok = len(rows) == n_runs and states == Counter({"succeeded": n_runs}) and len(atts) == n_runs and set(starts.values()) == {1} and bad == 0
        return 0 if ok and "Layouts over time" in html else 1
    finally:
        subprocess.run([*mb, "stop", str(tmp / "bench" / "bench.plan.yaml"), "--now"], env=env, capture_output=True)
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
