"""Host-level fault classes of issue 19 (items 5-8): `python bench/faults.py --host` (or this file).

On simulated hosts in a temporary directory, with real launchers, shims and runs. Every run's
command appends `<run id> <MIG uuid> start|end <time>` to an events file, so a run that began twice,
or two launches on one instance at once, are seen from the runs themselves.

1. **Two state dirs.** One plan launched twice at a random distance (0-0.6 s), each launcher with
   its own `--state-dir` (both bound). Exactly one may run the sweep; each run executes once.
2. **Second sweep on the same instances.** Sweep A launched; at a random moment sweep B of the same
   shape (its own plan, applied: the same MIG uuids) is launched too. B's runs wait for the
   instances A holds and start as A lets each go: no instance may hold runs of both at once, and each
   launch runs each of its runs once.
3. **Apply of another plan during a launch.** Sweep A (2 GPUs, queued runs behind running ones)
   launched; at a random moment `apply B --gpus g` of a plan with another layout. It must be refused
   while A is bound to GPU g; A's runs each finish once, none starts on a device that is gone.
4. **Full disk during apply.** Two plans applied in turn on a simulated GPU; the disk fills at a
   random write of the apply (the checkpoint, the bindings, the checkpoint's end). When the GPUs
   changed and the record failed, `check` (with and without --state-dir) must report the unfinished
   apply and `apply --finish` complete it; a hole is `check` saying all is well meanwhile.

Prints per class: trials, runs executed twice (must be 0), holes (must be 0), and what happened.
Options: --trials N (default 20), --seed N, --keep.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pytest  # noqa: E402  (its MonkeyPatch sets up the launch rigs, as in the tests)

from tests.support.launchkit import Rig, make_rig  # noqa: E402

TRACEBACK = "Traceback (most recent call last)"
EVENTS = 'echo "$MIGBENCH_RUN_ID $CUDA_VISIBLE_DEVICES start $(date +%s.%N)" >> "$TOY_LEDGER.events"; '
END = '; rc=$?; echo "$MIGBENCH_RUN_ID $CUDA_VISIBLE_DEVICES end $(date +%s.%N)" >> "$TOY_LEDGER.events"; exit $rc'


def sweep(name: str, runs: int, memory: str, compute: float, steps: int = 3, retries: int = 0) -> str:
    return f"""
version: 1
name: {name}
launch: {{retries: {retries}, backoff: 0, stop_grace: 5, flapping_max: 1000}}
groups:
  - name: h
    shell: true
    command: {json.dumps(EVENTS + "{toy} --steps " + str(steps) + " --step-seconds 0.1 --memory 1GiB --i {i}" + END)}
    parameters: {{i: {list(range(runs))}}}
    memory: {memory}
    compute: {compute}
"""


def events(ledger: Path) -> list[tuple[str, str, str, float]]:
    p = Path(str(ledger) + ".events")
    out = []
    for line in p.read_text().splitlines() if p.exists() else []:
        rid, uuid, what, t = line.split()
        out.append((rid, uuid, what, float(t)))
    return out


def began(ledger: Path) -> Counter:
    return Counter(rid for rid, _, what, _ in events(ledger) if what == "start")


def finished(ledger: Path) -> Counter:
    return Counter(line.split()[0] for line in ledger.read_text().splitlines()) if ledger.exists() else Counter()


def intervals(ledger: Path) -> dict[str, list[tuple[float, float]]]:
    """MIG uuid -> (start, end) of each run on it."""
    opened: dict[str, tuple[str, float]] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    for rid, uuid, what, t in events(ledger):
        if what == "start":
            opened[rid] = (uuid, t)
        elif rid in opened:
            u, t0 = opened.pop(rid)
            out.setdefault(u, []).append((t0, t))
    for u, t0 in opened.values():
        out.setdefault(u, []).append((t0, float("inf")))
    return out


class Tally:
    def __init__(self) -> None:
        self.tracebacks = 0

    def look(self, *texts: str) -> None:
        self.tracebacks += sum(t.count(TRACEBACK) for t in texts)


def bound_copy(r: Rig, sd: Path, src: Path | None = None) -> Path:
    sd.mkdir(parents=True)
    shutil.copy((src or r.state_dir) / "bindings.json", sd / "bindings.json")
    return sd


def plan_beside(r: Rig, text: str, gpus: int) -> Path:
    from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
    from migbench.sweep import load_sweep

    f = r.plan_path.parent / "b.yaml"
    f.write_text(text.replace("{toy}", f"{sys.executable} {REPO / 'examples' / 'toy_trainer.py'}"))
    s = load_sweep(f)
    out = r.plan_path.parent / f"{s.name}.plan.yaml"
    make_plan(s, build_fleet([FleetSpec("A100-SXM4-80GB", gpus)]), SolveOptions(time_limit_s=5.0)).save(out)
    return out


# ---------------------------------------------------------------------------------------------
# 1. two state dirs
# ---------------------------------------------------------------------------------------------


def two_state_dirs(base: Path, trials: int, rng: random.Random, tally: Tally) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        (base / "two").mkdir()
        r = make_rig(base / "two", mp, sweep("twice", 4, "9GiB", 0.1))
        c: Counter = Counter()
        twice = holes = 0
        try:
            for n in range(trials):
                t = base / "two" / f"t{n}"
                ledger = t / "ledger"
                sds = [bound_copy(r, t / "a"), bound_copy(r, t / "b")]
                env = {"TOY_LEDGER": str(ledger)}
                pa = r.start("--state-dir", str(sds[0]), extra_env=env)
                time.sleep(rng.uniform(0.0, 0.6))
                pb = r.start("--state-dir", str(sds[1]), extra_env=env)
                rcs = (pa.wait(timeout=300), pb.wait(timeout=300))
                outs = (r.output(pa), r.output(pb))
                tally.look(*outs)
                refused = sum(rc == 1 and "already running" in o for rc, o in zip(rcs, outs))
                c[f"one launcher ran, {refused} refused" if sorted(rcs) == [0, 1] else f"exit codes {sorted(rcs)}"] += 1
                twice += sum(1 for v in began(ledger).values() if v > 1)
                holes += sum(1 for pr in r.plan.runs if finished(ledger)[pr.id] != 1)
        finally:
            r.cleanup()
    return {"trials": trials, "runs executed twice": twice, "holes": holes, "outcomes": dict(c)}


# ---------------------------------------------------------------------------------------------
# 2. a second sweep on the same instances
# ---------------------------------------------------------------------------------------------


def second_sweep(base: Path, trials: int, rng: random.Random, tally: Tally) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        (base / "second").mkdir()
        r = make_rig(base / "second", mp, sweep("first", 7, "9GiB", 0.1), gpus=2)
        bplan = plan_beside(r, sweep("second", 7, "9GiB", 0.1), gpus=2)
        b_sd = base / "second" / "b-bound"
        ap = r.cli("apply", str(bplan), "--state-dir", str(b_sd))
        tally.look(ap.stdout, ap.stderr)
        assert ap.returncode == 0 and "already matches" in ap.stdout, ap.stdout + ap.stderr  # the same shape: A's instances, bound again
        from migbench.plan import Plan

        b_runs = [pr.id for pr in Plan.load(bplan).runs]
        c: Counter = Counter()
        twice = holes = overlaps = 0
        try:
            for n in range(trials):
                t = base / "second" / f"t{n}"
                la, lb = t / "a.ledger", t / "b.ledger"
                sda, sdb = bound_copy(r, t / "a"), bound_copy(r, t / "b", b_sd)
                pa = r.start("--state-dir", str(sda), extra_env={"TOY_LEDGER": str(la)})
                time.sleep(rng.uniform(0.0, 1.5))
                pb = subprocess_launch(r, bplan, sdb, lb)
                rca, rcb = pa.wait(timeout=300), pb.wait(timeout=300)
                oa, ob = r.output(pa), r.output(pb)
                tally.look(oa, ob)
                b_refused = rcb == 1 and "bound to the launch of" in ob
                waited = "bound to the launch of" in ob and "lets them go" in ob
                c[
                    "B refused (A's instances)"
                    if b_refused
                    else "both ran, B waited for A's instances"
                    if (rca, rcb) == (0, 0) and waited
                    else "both ran"
                    if (rca, rcb) == (0, 0)
                    else f"exit codes A {rca}, B {rcb}"
                ] += 1
                ia, ib = intervals(la), intervals(lb)
                for u in set(ia) & set(ib):
                    overlaps += any(s1 < e2 and s2 < e1 for s1, e1 in ia[u] for s2, e2 in ib[u])
                # each launch's runs (the two sweeps' run ids may be the same: the same groups and parameters)
                twice += sum(1 for v in began(la).values() if v > 1) + sum(1 for v in began(lb).values() if v > 1)
                holes += sum(1 for pr in r.plan.runs if finished(la)[pr.id] != 1) if rca == 0 else len(r.plan.runs)
                if not b_refused:
                    holes += sum(1 for rid in b_runs if finished(lb)[rid] != 1) if rcb == 0 else len(b_runs)
        finally:
            r.cleanup()
    return {"trials": trials, "runs executed twice": twice, "holes": holes, "instances holding runs of both launches at once": overlaps, "outcomes": dict(c)}


def subprocess_launch(r: Rig, plan: Path, sd: Path, ledger: Path):  # type: ignore[no-untyped-def]
    """A launcher of another plan, logged like the rig's own."""
    saved = r.plan_path
    r.plan_path = plan
    try:
        return r.start("--state-dir", str(sd), extra_env={"TOY_LEDGER": str(ledger)})
    finally:
        r.plan_path = saved


# ---------------------------------------------------------------------------------------------
# 3. apply of another plan during a launch
# ---------------------------------------------------------------------------------------------


def apply_during_launch(base: Path, trials: int, rng: random.Random, tally: Tally) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        (base / "apply").mkdir()
        r = make_rig(base / "apply", mp, sweep("big", 4, "60GiB", 1.0, steps=4, retries=1), gpus=2)  # 2 runs queued per GPU
        bplan = plan_beside(r, sweep("small", 7, "9GiB", 0.1), gpus=2)
        c: Counter = Counter()
        twice = holes = burned = gone_starts = 0
        try:
            for n in range(trials):
                t = base / "apply" / f"t{n}"
                ledger = t / "ledger"
                sd = bound_copy(r, t / "a")
                pa = r.start("--state-dir", str(sd), extra_env={"TOY_LEDGER": str(ledger)})
                time.sleep(rng.uniform(0.0, 2.5))
                gpu = rng.choice([0, 1])
                old = {b["uuid"] for key, b in json.loads((sd / "bindings.json").read_text())["instances"].items() if key.startswith(f"{gpu}:")}
                ap = r.cli("apply", str(bplan), "--gpus", str(gpu), "--yes", "--state-dir", str(t / "b"))
                t_applied = time.time()
                tally.look(ap.stdout, ap.stderr)
                rca = pa.wait(timeout=300)
                out = r.output(pa)
                tally.look(out)
                refused = ap.returncode == 1 and "bound to the launch of" in ap.stderr
                in_use = ap.returncode == 1 and "in use by PID" in ap.stderr
                c[
                    "apply refused (A bound to the GPU)"
                    if refused
                    else "apply refused (A's run at work there)"
                    if in_use
                    else "apply done (A no longer on that GPU)"
                    if ap.returncode == 0
                    else f"apply exit {ap.returncode}"
                ] += 1
                if ap.returncode == 0:  # a run of A that began on GPU g's old devices after B re-cut it
                    gone_starts += sum(1 for _, u, what, t0 in events(ledger) if what == "start" and u in old and t0 >= t_applied)
                    back = r.cli("apply", str(r.plan_path), "--yes")  # put A's layout back (and its bindings)
                    tally.look(back.stdout, back.stderr)
                    assert back.returncode == 0, back.stdout + back.stderr
                if rca == 0:
                    c["A ran every run"] += 1
                else:  # refused at its start (an apply held the host), or runs held back (their device gone)
                    why = (
                        "held back runs (device gone)"
                        if "gone from the host" in out
                        else "refused at start (an apply ran)"
                        if "is changing this host's GPUs" in out or "no longer matches the applied plan" in out
                        else f"exit {rca}"
                    )
                    c[f"A {why}, then launched again"] += 1
                    shutil.copy(r.state_dir / "bindings.json", sd / "bindings.json")
                    again = r.start("--state-dir", str(sd), extra_env={"TOY_LEDGER": str(ledger)})
                    c[f"A's second launch exit {again.wait(timeout=300)}"] += 1
                    tally.look(r.output(again))
                twice += sum(1 for v in began(ledger).values() if v > 1)
                holes += sum(1 for pr in r.plan.runs if finished(ledger)[pr.id] != 1)
                burned += sum(max(0, int(row["attempt"]) - 1) for row in rows_of(sd))
        finally:
            r.cleanup()
    return {
        "trials": trials,
        "runs executed twice": twice,
        "holes": holes,
        "attempts used up on a gone device": burned,
        "runs started on a device B's apply had removed": gone_starts,
        "outcomes": dict(c),
    }


def rows_of(sd: Path) -> list[dict]:
    import sqlite3

    if not (sd / "launch.db").exists():
        return []
    con = sqlite3.connect(f"file:{sd / 'launch.db'}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(x) for x in con.execute("SELECT * FROM runs")]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# 4. full disk during apply
# ---------------------------------------------------------------------------------------------


def full_disk_apply(base: Path, trials: int, rng: random.Random, tally: Tally) -> dict:
    from migbench import fsutil
    from migbench.backend.sim.host import init_host
    from migbench.catalog import Placement
    from migbench.state import read_checkpoint
    from tests.apply.test_reconcile import make_plan
    from tests.support.cli import migbench
    from tests.support.simhelp import sim_backend

    model = "A100-SXM4-40GB"
    d = base / "disk"
    d.mkdir()
    state = d / "host"
    init_host(state, model, 1, mig=True)
    layouts = {
        "s": {0: (Placement("3g.20gb", 0), Placement("3g.20gb", 4))},
        "t": {0: (Placement("2g.10gb", 0), Placement("1g.5gb", 2), Placement("3g.20gb", 4))},
    }
    paths = {}
    for k, lay in layouts.items():
        (d / k).mkdir()
        p = make_plan(model, lay, d / k)
        p.name = f"plan{k}"
        paths[k] = p.save(d / k / "plan.yaml")
    env = {"MIGBENCH_SIM": str(state)}
    backend = sim_backend(state)

    def cli(*args: str):  # type: ignore[no-untyped-def]
        res = migbench(*args, env=env, keep_sim=True)
        tally.look(res.stdout, res.stderr)
        return res

    def shape() -> tuple:
        g = backend.reader.read().gpu(0)
        return tuple(sorted(str(gi.placement) for gi in g.instances))

    shapes = {}
    for k in ("t", "s"):  # each plan's shape, read back; the trials start from s
        assert cli("apply", str(paths[k]), "--yes", "--state-dir", str(d / f"clean-{k}")).returncode == 0
        shapes[k] = shape()
    real = fsutil._write_fd
    c: Counter = Counter()
    holes = 0
    at = "s"
    for n in range(trials):
        dst = "t" if at == "s" else "s"
        sd = d / f"sd{n}"
        k = rng.randint(1, 4)  # the k-th write of the apply finds the disk full (4: after its last one)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fsutil, "_write_fd", filling_after(k, real))
            ap = cli("apply", str(paths[dst]), "--yes", "--state-dir", str(sd))
            chk_sd = cli("check", str(paths[dst]), "--state-dir", str(sd))  # still full
            chk = cli("check", str(paths[dst]))
        now = shape()
        cp = read_checkpoint(sd / "checkpoint.json") or {}
        changed = now != shapes[at]
        if ap.returncode == 0:
            c["the disk filled after the apply's last write"] += 1
            holes += int(chk_sd.returncode != 0)
        elif not changed:
            c["refused before any GPU changed"] += 1
            holes += int(cp.get("status") == "applying")
        else:
            c["GPUs changed, record failed: said and reported"] += int("--finish" in ap.stderr and chk_sd.returncode == 1 and chk.returncode == 1)
            holes += int(chk_sd.returncode == 0 or chk.returncode == 0 or "configured as" not in ap.stderr)
            fin = cli("apply", str(paths[dst]), "--finish", "--state-dir", str(sd))
            ok = fin.returncode == 0 and cli("check", str(paths[dst]), "--state-dir", str(sd)).returncode == 0 and (sd / "bindings.json").exists()
            c["finished with --finish"] += int(ok)
            holes += int(not ok)
        now = shape()
        if now not in shapes.values():
            holes += 1  # neither plan's layout, whatever was said
        at = "s" if now == shapes["s"] else "t"
    return {"trials": trials, "runs executed twice": "n/a (no runs)", "holes": holes, "outcomes": dict(c)}


def filling_after(k: int, real):  # type: ignore[no-untyped-def]
    """fsutil's write boundary on a disk that is full from the k-th write on: a write that would grow
    a file fails with ENOSPC (as tests/support/faults.py's full disk)."""
    calls = [0]

    def write(fd: int, data: bytes) -> None:
        calls[0] += 1
        if calls[0] >= k and os.lseek(fd, 0, os.SEEK_CUR) + len(data) > os.fstat(fd).st_size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    return write


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--only", default="1,2,3,4")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    parts = {int(x) for x in args.only.split(",")}
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="migbench-faults-host-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    tally = Tally()
    report: dict[str, dict] = {}
    t0 = time.monotonic()
    os.environ["MIGBENCH_LAUNCHES_DIR"] = str(base / "launches")  # the host's register, as one host's
    try:
        for n, name, fn in (
            (1, "two state dirs", two_state_dirs),
            (2, "second sweep on the same instances", second_sweep),
            (3, "apply of another plan during a launch", apply_during_launch),
            (4, "full disk during apply", full_disk_apply),
        ):
            if n in parts:
                t1 = time.monotonic()
                report[f"{n}. {name}"] = dict(fn(base, args.trials, rng, tally), seconds=round(time.monotonic() - t1))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")
    print(f"{'class':<42} {'trials':>6} {'twice':>6} {'holes':>6}")
    for k, v in report.items():
        print(f"{k:<42} {v['trials']:>6} {v['runs executed twice']!s:>6} {v['holes']:>6}")
    for k, v in report.items():
        print(f"\n== {k}\n   " + json.dumps(v, indent=2).replace("\n", "\n   "))
    print(f"\ntracebacks printed by migbench: {tally.tracebacks}; {round(time.monotonic() - t0)} s")


if __name__ == "__main__":
    main()
