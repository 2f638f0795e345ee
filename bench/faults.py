"""The fault campaign of issue 9: `python bench/faults.py` (several minutes on 2 cores).

On simulated hosts in a temporary directory, with real launchers, shims and runs (the toy trainer):

1. **Shim kills.** A 24-run sweep is launched; while it runs, `kill -9` hits 20 shims at random
   moments (a quarter at once, before their run may have passed the shim's gate; the rest while the
   run works). Each run's command logs a
   line when it begins: a *double run* is a run whose command began more than once, or finished
   more than once.
2. **State loss and corruption.** A finished launch, then its state damaged in each of several ways
   (launch.db deleted, emptied, garbage in its middle or its header; deleted while the launcher
   runs; the whole state directory deleted mid-run; the launcher killed and launch.db deleted with
   runs in flight; a full disk mid-run, then freed): `status` is asked, then `launch` run again. A
   *re-run of finished work* is a run whose command began again after it had finished.
3. **Interrupted applies.** A 2-GPU apply (14 driver changes; an instance in use is kept) is stopped
   at a random moment, 20 times by a signal (SIGINT, SIGTERM alternately) and 20 times by
   `kill -9`. After a signal the GPUs must be rolled back (or the apply have finished); after a
   kill, `migbench check` must report the interrupted apply (or the GPUs be untouched or finished),
   and `apply --rollback` / `--finish` (alternately) must bring them to the state before / the plan.
   The in-use instance must never be destroyed.
4. **Loader fuzz.** Hypothesis drives the sweep and plan loaders with YAML shapes built from the
   schema's keys and mutations of real files (`tests/support/fuzz.py`); anything but a loaded file
   or an InputError/MigbenchError is a traceback.

Every figure is printed next to what issue 9 observed before the fixes. Any traceback printed by
migbench in any of these steps is counted. Options: --quick (fewer trials), --only A,B (parts 1-4),
--seed N, --fuzz N (inputs per loader, default 3000), --keep; --host runs the host-level classes of
issue 19 instead (`bench/faults_host.py`: two state dirs, a second sweep on the same instances, apply
of another plan during a launch, full disk during apply; its own --trials N); --once runs the
exactly-once campaign of issue 19 instead (`bench/faults_once.py`); --bench the host bench's
(two sweeps submitted to one bench, kills of the bench and of submits: `bench/faults_bench.py`);
--security its security cases as a hostile user, and a loader fuzz pass (`bench/faults_security.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pytest  # noqa: E402  (its MonkeyPatch sets up the launch rigs, as in the tests)

from tests.support.launchkit import PY, Rig, make_rig  # noqa: E402

TRACEBACK = "Traceback (most recent call last)"
STARTS = """
version: 1
name: faults
launch: {retries: 1, backoff: 0, stop_grace: 5, flapping_max: 1000}
groups:
  - name: f
    shell: true
    command: echo "$MIGBENCH_RUN_ID $$" >> "$TOY_LEDGER.starts"; exec {toy} --steps STEPS --step-seconds 0.25 --memory 1GiB --i {i}
    parameters: {i: RANGE}
    memory: 9GiB
    compute: 0.1
"""


def sweep(runs: int, steps: int) -> str:
    return STARTS.replace("RANGE", str(list(range(runs)))).replace("STEPS", str(steps))


class Tally:
    def __init__(self) -> None:
        self.tracebacks = 0
        self.notes: list[str] = []

    def look(self, *texts: str) -> None:
        for t in texts:
            n = t.count(TRACEBACK)
            self.tracebacks += n
            if n and len(self.notes) < 5:
                self.notes.append(t[t.index(TRACEBACK) :][-1500:])


def starts(r: Rig) -> Counter:
    p = Path(str(r.ledger) + ".starts")
    return Counter(line.split()[0] for line in p.read_text().splitlines()) if p.exists() else Counter()


def done(r: Rig) -> Counter:
    return Counter(line.split()[0] for line in r.ledger_lines())


def new_rig(base: Path, name: str, text: str, mp: pytest.MonkeyPatch, gpus: int = 1) -> Rig:
    d = base / name
    d.mkdir()
    return make_rig(d, mp, text, gpus=gpus)


# ---------------------------------------------------------------------------------------------
# 1. shim kills
# ---------------------------------------------------------------------------------------------


def shim_kills(base: Path, kills: int, rng: random.Random, tally: Tally) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        r = new_rig(base, "shims", sweep(max(24, kills + 4), 8), mp)
        try:
            p = r.start()
            hit: dict[str, bool] = {}  # run id -> its run was at work when its shim was killed
            deadline = time.monotonic() + 120
            while len(hit) < kills and p.poll() is None and time.monotonic() < deadline:
                rows = [row for row in r.rows().values() if row["state"] == "running" and row["shim_pid"] and row["id"] not in hit]
                if not rows:
                    time.sleep(0.02)
                    continue
                row = rng.choice(rows)
                if rng.random() < 0.75:  # mostly while the run works (the case of the issue), else at once
                    marker = r.state_dir / row["id"] / f"attempt-{row['attempt']}" / "started"
                    while not marker.exists() and time.monotonic() < deadline and p.poll() is None:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0.0, 1.0))
                else:
                    time.sleep(rng.uniform(0.0, 0.3))
                row = r.rows()[row["id"]]
                if row["state"] != "running" or not row["shim_pid"]:
                    continue
                try:
                    os.kill(int(row["shim_pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    continue
                hit[row["id"]] = (r.state_dir / row["id"] / f"attempt-{row['attempt']}" / "started").exists()
            rc = p.wait(timeout=300)
            out = r.output(p)
            tally.look(out)
            rows = r.rows()
            began, finished = starts(r), done(r)
            return {
                "runs": len(rows),
                "kills": len(hit),
                "kills while the run worked": sum(hit.values()),
                "double runs": sum(1 for k in rows if began[k] > 1 or finished[k] > 1),
                "runs not finished once": sum(1 for k in rows if finished[k] != 1),
                "launcher exit code": rc,
                "dead shims whose process the launcher waited for": out.count("its run goes on under the launcher"),
                "runs re-queued (their shim died before the run started)": out.count("before the run started; re-queued"),
            }
        finally:
            r.cleanup()


# ---------------------------------------------------------------------------------------------
# 2. state loss and corruption
# ---------------------------------------------------------------------------------------------


def _rm_db(r: Rig) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(r.db) + suffix).unlink(missing_ok=True)


def _garbage(r: Rig, where: str) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(r.db) + suffix).unlink(missing_ok=True)
    data = bytearray(r.db.read_bytes())
    at = 0 if where == "header" else len(data) // 2
    data[at : at + 512] = os.urandom(512)
    r.db.write_bytes(bytes(data))


def state_faults(base: Path, tally: Tally) -> dict:
    results: dict[str, dict] = {}

    def after_finish(name: str, damage) -> None:  # type: ignore[no-untyped-def]
        with pytest.MonkeyPatch.context() as mp:
            r = new_rig(base, name, sweep(6, 2), mp)
            try:
                rc, out = r.launch(timeout=300)
                finished = set(done(r))
                before = starts(r)
                damage(r)
                st = r.cli("status", str(r.plan_path))
                rc2, out2 = r.launch(timeout=300)
                tally.look(out, out2, st.stdout, st.stderr)
                reruns = sum(1 for k in finished if starts(r)[k] > before[k])
                results[name] = {"reruns": reruns, "status rc": st.returncode, "relaunch rc": rc2, "all done": set(done(r)) == set(r.rows())}
            finally:
                r.cleanup()

    after_finish("launch.db deleted", _rm_db)
    after_finish("launch.db emptied", lambda r: (_rm_db(r), r.db.write_bytes(b"")))
    after_finish("garbage mid-file", lambda r: _garbage(r, "middle"))
    after_finish("garbage header", lambda r: _garbage(r, "header"))

    def mid_run(name: str, damage, kill_launcher: bool = False) -> None:  # type: ignore[no-untyped-def]
        with pytest.MonkeyPatch.context() as mp:
            r = new_rig(base, name, sweep(14, 6), mp)
            try:
                p = r.start()
                r.wait_for(lambda: sum(v == "succeeded" for v in r.states().values()) >= 2, timeout=120, what="2 finished runs")
                finished = {k for k, v in r.states().items() if v == "succeeded"}
                before = starts(r)
                if kill_launcher:
                    os.killpg(p.pid, signal.SIGKILL)
                damage(r)
                rc = p.wait(timeout=300)
                out = r.output(p)
                if not (r.state_dir / "bindings.json").exists():  # gone with the state dir: apply writes it again
                    ap = r.cli("apply", str(r.plan_path), "--yes")
                    tally.look(ap.stdout, ap.stderr)
                rc2, out2 = r.launch(timeout=300)
                st = r.cli("status", str(r.plan_path))
                tally.look(out, out2, st.stdout, st.stderr)
                reruns = sum(1 for k in finished if starts(r)[k] > before[k])
                results[name] = {
                    "reruns": reruns,
                    "first launcher rc": rc,
                    "relaunch rc": rc2,
                    "status rc": st.returncode,
                    "all done": set(done(r)) == set(r.rows()),
                }
            finally:
                r.cleanup()

    mid_run("launch.db deleted mid-run", _rm_db)
    mid_run("state dir deleted mid-run", lambda r: shutil.rmtree(r.state_dir, ignore_errors=True))
    mid_run("launcher killed + launch.db deleted", _rm_db, kill_launcher=True)
    results.update(full_disk(base, tally))
    return results


def full_disk(base: Path, tally: Tally) -> dict:
    where = base / "tmpfs"
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True, text=True)
    if p.returncode != 0:
        return {"full disk mid-run": {"skipped": f"cannot mount a tmpfs ({p.stderr.strip()})"}}
    try:
        with pytest.MonkeyPatch.context() as mp:
            text = sweep(14, 6).replace(
                "exec {toy} --steps 6 --step-seconds 0.25 --memory 1GiB --i {i}", 'sleep 1.5; echo "$MIGBENCH_RUN_ID 1 done" >> "$TOY_LEDGER"  # {i}'
            )
            r = new_rig(base, "full-disk", text, mp)  # runs that write nothing in the state dir: their own success
            try:
                sd = where / "state"
                sd.mkdir()
                shutil.copy(r.state_dir / "bindings.json", sd / "bindings.json")
                proc = r.start("--state-dir", str(sd))
                r.state_dir = sd
                r.wait_for(lambda: sum((sd / k / "attempt-1" / "started").exists() for k in r.rows()) >= 3, timeout=120, what="runs at work")
                try:
                    with open(where / "filler", "wb") as f:
                        while True:
                            f.write(b"\0" * 4096)
                            f.flush()
                except OSError:
                    pass
                rc = proc.wait(timeout=300)
                out = r.output(proc)
                started = [k for k in r.rows() if (sd / k / "attempt-1" / "started").exists()]
                kept = sum((sd / k / "attempt-1" / "exit.json").exists() for k in started)
                finished = set(done(r))
                before = starts(r)
                (where / "filler").unlink(missing_ok=True)
                rc2, out2 = r.launch("--state-dir", str(sd), timeout=300)
                tally.look(out, out2)
                return {
                    "full disk mid-run": {
                        "reruns": sum(1 for k in finished if starts(r)[k] > before[k]),
                        "first launcher rc": rc,
                        "said no space": "no space left" in out,
                        "outcomes kept": f"{kept}/{len(started)}",
                        "relaunch rc": rc2,
                        "all done": set(done(r)) == set(r.rows()),
                        "double runs": sum(1 for v in starts(r).values() if v > 1),
                    }
                }
            finally:
                r.cleanup()
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# 3. interrupted applies
# ---------------------------------------------------------------------------------------------


def interrupted_applies(base: Path, trials: int, rng: random.Random, tally: Tally) -> dict:
    from migbench.backend.sim.host import SimHost, init_host
    from migbench.catalog import Placement
    from migbench.plan import Plan
    from tests.apply.test_reconcile import make_plan
    from tests.support.simhelp import sim_backend

    model = "A100-SXM4-40GB"
    state = base / "apply-host"
    init_host(state, model, 2, mig=True)
    env = dict(os.environ, MIGBENCH_SIM=str(state))
    start = {0: (Placement("3g.20gb", 0), Placement("3g.20gb", 4)), 1: (Placement("4g.20gb", 0), Placement("3g.20gb", 4))}
    target = {
        0: (Placement("2g.10gb", 0), Placement("1g.5gb", 2), Placement("1g.5gb", 3), Placement("3g.20gb", 4)),
        1: (Placement("2g.10gb", 0), Placement("2g.10gb", 2), Placement("3g.20gb", 4)),
    }
    d = base / "apply"
    d.mkdir()
    s_plan, t_plan = make_plan(model, start, d), make_plan(model, target, d)
    s_plan.name, t_plan.name = "start", "target"
    s_path, t_path = s_plan.save(d / "start.yaml"), t_plan.save(d / "target.yaml")
    backend = sim_backend(state)

    def cli(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([PY, "-m", "migbench", *args], env=env, cwd=d, capture_output=True, text=True, timeout=300)
        tally.look(p.stdout, p.stderr)
        return p

    def layout() -> tuple:
        h = backend.reader.read()
        return tuple((g.mig_current, tuple(str(gi.placement) for gi in g.instances), tuple(len(gi.compute_instances) for gi in g.instances)) for g in h.gpus)

    assert cli("apply", str(s_path), "--yes").returncode == 0
    busy = subprocess.Popen(["sleep", "100000"])  # a process on GPU 0's 3g.20gb@4, which both plans keep
    g0 = backend.reader.read().gpu(0)
    in_use_uuid = g0.devices_of(g0.instance_at(Placement("3g.20gb", 4)).id)[0].uuid
    SimHost(state).attach(in_use_uuid, busy.pid, 1024)
    shapes = {"start": layout()}
    t0 = time.monotonic()
    assert cli("apply", str(t_path), "--yes").returncode == 0
    full_s = time.monotonic() - t0
    shapes["target"] = layout()
    plans = {"start": (s_path, Plan.load(s_path)), "target": (t_path, Plan.load(t_path))}
    at = "target"  # each trial applies the other plan: no reset between trials
    out: dict[str, Counter] = {"signal": Counter(), "kill": Counter()}
    destroyed = 0
    try:
        for kind in ("signal", "kill"):
            for n in range(trials):
                sig = signal.SIGKILL if kind == "kill" else (signal.SIGINT if n % 2 == 0 else signal.SIGTERM)
                dst = "start" if at == "target" else "target"
                path, plan = plans[dst]
                p = subprocess.Popen(
                    [PY, "-m", "migbench", "apply", str(path), "--yes"],
                    env=env,
                    cwd=d,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                time.sleep(rng.uniform(0.2, full_s))
                os.kill(p.pid, sig)
                so, se = p.communicate(timeout=300)
                tally.look(so, se)
                now = layout()
                c = out[kind]
                if kind == "signal":
                    if now == shapes[at] and "Every GPU was restored" in se:
                        c["rolled back"] += 1
                    elif now == shapes[at]:
                        c["stopped before any change"] += 1
                    elif now == shapes[dst]:
                        c["finished before the signal"] += 1
                    else:
                        c["LEFT HALF-CONFIGURED"] += 1
                else:
                    chk = cli("check", str(path))
                    if chk.returncode == 1 and "did not finish" in chk.stdout:
                        c["reported by check"] += 1
                        how = "--rollback" if n % 2 == 0 else "--finish"
                        fix = cli("apply", str(path), how)
                        ok = fix.returncode == 0 and layout() == shapes[at if how == "--rollback" else dst]
                        c[f"recovered with {how}"] += int(ok)
                        c["NOT RECOVERED"] += int(not ok)
                    elif now == shapes[at]:
                        c["killed before any change"] += 1
                    elif now == shapes[dst]:
                        c["finished before the kill"] += 1
                    else:
                        c["HALF-CONFIGURED AND NOT REPORTED"] += 1
                g0 = backend.reader.read().gpu(0)
                if in_use_uuid not in {dev.uuid for dev in g0.devices}:
                    destroyed += 1
                now = layout()
                if now not in shapes.values():  # never expected: bring the host back for the next trial
                    cli("apply", str(s_path), "--rollback")
                    cli("apply", str(s_path), "--yes")
                    now = layout()
                at = "start" if now == shapes["start"] else "target"
    finally:
        busy.kill()
        busy.wait()
    return {"signal": dict(out["signal"]), "kill": dict(out["kill"]), "in-use instances destroyed": destroyed, "apply takes (s)": round(full_s, 1)}


# ---------------------------------------------------------------------------------------------
# 4. loader fuzz
# ---------------------------------------------------------------------------------------------


def fuzz(n: int, seed: int, base: Path) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from tests.support.fuzz import base_plan_doc, check_plan_text, check_sweep_text, plan_texts, sweep_texts

    res: dict[str, Counter] = {"sweep": Counter(), "plan": Counter()}
    where = base / "fuzz"
    where.mkdir()
    examples: list[str] = []

    def record(kind: str, fn, text: str) -> None:  # type: ignore[no-untyped-def]
        try:
            res[kind][fn(text)] += 1
        except Exception as exc:  # noqa: BLE001 - a traceback is what we count
            res[kind]["traceback"] += 1
            if len(examples) < 5:
                examples.append(f"{kind}: {type(exc).__name__}: {exc} <- {text[:120]!r}")

    cfg = settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)

    @hseed(seed)
    @cfg
    @given(sweep_texts)
    def sweeps(text: str) -> None:
        record("sweep", check_sweep_text, text)

    @hseed(seed)
    @cfg
    @given(plan_texts(base_plan_doc()))
    def plans(text: str) -> None:
        record("plan", lambda t: check_plan_text(t, where), text)

    sweeps()
    plans()
    out = {k: {"inputs": sum(c.values()), **dict(c)} for k, c in res.items()}
    if examples:
        out["examples"] = examples  # type: ignore[assignment]
    return out


# ---------------------------------------------------------------------------------------------


BEFORE = {
    1: "3/3 kill -9 trials of a working run's shim ran the work twice",
    2: "an empty or deleted launch.db re-ran every finished run; status/launch tracebacks on damaged dbs",
    3: "16 of 18 kill -9 trials and every SIGINT/SIGTERM left GPUs half-configured, silently",
    4: "sweep loader: ReaderError traceback on a control character; plan loader: KeyError/TypeError/AttributeError",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 shim kills, 4+4 apply trials, 300 fuzz inputs per loader")
    ap.add_argument("--only", default="1,2,3,4")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--fuzz", type=int, default=3000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--host", action="store_true", help="the host-level classes of issue 19 instead (bench/faults_host.py)")
    ap.add_argument("--once", action="store_true", help="only the exactly-once campaign of issue 19 (bench/faults_once.py)")
    ap.add_argument("--bench", action="store_true", help="only the host bench's exactly-once campaign (bench/faults_bench.py)")
    ap.add_argument("--security", action="store_true", help="only the security cases of issue 19 (bench/faults_security.py)")
    args, rest = ap.parse_known_args()
    if args.host:
        from bench.faults_host import main as host_faults

        host_faults([*rest, "--seed", str(args.seed), "--only", args.only] + (["--keep"] if args.keep else []))
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.once:
        from bench.faults_once import main as once

        once(trials=5 if args.quick else 20, seed=args.seed, keep=args.keep)
        return
    if args.bench:
        from bench.faults_bench import main as bench_faults

        res = bench_faults(trials=3 if args.quick else 8, seed=args.seed, keep=args.keep)
        bad = ("runs executed twice", "finished runs re-run", "removed, started after", "holes")
        sys.exit(1 if any(v[k] for v in res.values() for k in bad) else 0)
    if args.security:
        from bench.faults_security import run as security

        sys.exit(security(30 if args.quick else 200, args.seed, args.keep))
    parts = {int(x) for x in args.only.split(",")}
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="migbench-faults-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    tally = Tally()
    report: dict[str, object] = {}
    t0 = time.monotonic()
    try:
        if 1 in parts:
            report["1. shim kills"] = shim_kills(base, 5 if args.quick else 20, rng, tally)
        if 2 in parts:
            report["2. state loss / corruption"] = state_faults(base, tally)
        if 3 in parts:
            report["3. interrupted applies"] = interrupted_applies(base, 4 if args.quick else 20, rng, tally)
        if 4 in parts:
            report["4. loader fuzz"] = fuzz(300 if args.quick else args.fuzz, args.seed, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")
    report["tracebacks printed by migbench"] = tally.tracebacks
    for note in tally.notes:
        print("--- a traceback:\n" + note)
    report["seconds"] = round(time.monotonic() - t0)
    for k, v in report.items():
        n = int(k[0]) if k[0].isdigit() else None
        print(f"\n== {k}")
        if n in BEFORE:
            print(f"   before (issue 9): {BEFORE[n]}")
        print("   now: " + json.dumps(v, indent=2).replace("\n", "\n   "))


if __name__ == "__main__":
    threading.current_thread().name = "faults"
    main()
